import type { Bindings, Db } from '../storage/db.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow } from './store.ts';
import { filterSql, type RoomEventFilter } from './filter.ts';
import type { TopoPosition } from '../storage/stream-token.ts';

/** A room's timeline read by stream position or by origin_server_ts (/messages, /context, /timestamp_to_event). */
export class TimelineStore {
  constructor(private db: Db) {}

  /** Up to `limit` events from `from` going backwards (b) or forwards (f), stopping at `to`. */
  async between(roomNid: number, from: number, to: number | undefined, dir: 'b' | 'f', limit: number, filter: RoomEventFilter | undefined): Promise<EventRow[]> {
    const f = filterSql(filter);
    const range = dir === 'b' ? 'e.stream_pos <= ?' + (to !== undefined ? ' AND e.stream_pos > ?' : '') : 'e.stream_pos > ?' + (to !== undefined ? ' AND e.stream_pos <= ?' : '');
    const params: Bindings = [roomNid, from];
    if (to !== undefined) params.push(to);
    const r = await this.db.raw(
      `SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
       WHERE e.room_nid = ? AND ${range} AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed ${f.sql}
       ORDER BY e.stream_pos ${dir === 'b' ? 'DESC' : 'ASC'} LIMIT ?`,
      [...params, ...f.params, limit],
    );
    return r.rows;
  }

  /**
   * Up to `limit` events in topological order (depth, then stream position) from `from` going
   * backwards (b: at or before it, newest first) or forwards (f: after it, oldest first), stopping
   * at `to`; nothing past `ceiling` (the persisted-up-to stream position).
   */
  async topological(roomNid: number, from: TopoPosition, to: TopoPosition | undefined, dir: 'b' | 'f', limit: number, ceiling: number, filter: RoomEventFilter | undefined): Promise<EventRow[]> {
    const f = filterSql(filter);
    const params: Bindings = [roomNid, ceiling, from.depth, from.stream];
    let range = dir === 'b' ? '(e.depth, e.stream_pos) <= (?, ?)' : '(e.depth, e.stream_pos) > (?, ?)';
    if (to) {
      range += dir === 'b' ? ' AND (e.depth, e.stream_pos) > (?, ?)' : ' AND (e.depth, e.stream_pos) <= (?, ?)';
      params.push(to.depth, to.stream);
    }
    const order = dir === 'b' ? 'DESC' : 'ASC';
    const r = await this.db.raw(
      `SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
       WHERE e.room_nid = ? AND e.stream_pos <= ? AND ${range} AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed ${f.sql}
       ORDER BY e.depth ${order}, e.stream_pos ${order} LIMIT ?`,
      [...params, ...f.params, limit],
    );
    return r.rows;
  }

  /**
   * The topological place of a stream position: after every event of the room up to the deepest
   * one persisted at or before it, so that history that arrived later but sorts earlier (backfill,
   * a late branch) is found by paginating back from a /sync token.
   */
  async topoAt(roomNid: number, pos: number): Promise<TopoPosition> {
    const r = await this.db.raw(
      `SELECT max(depth) AS depth FROM events WHERE room_nid = ? AND stream_pos <= ?
         AND NOT outlier AND NOT rejected AND NOT soft_failed`,
      [roomNid, pos],
    );
    const depth = r.rows[0]?.depth;
    // No event at all before it.
    return depth === null || depth === undefined ? { depth: 0, stream: 0 } : { depth: Number(depth), stream: pos };
  }

  // issue 6 (receipts-push helper): push evaluation catches up from a position after a crash.
  /** Up to `limit` events of every room in (from, to], oldest first. */
  async allRoomsAfter(from: number, to: number, limit: number): Promise<EventRow[]> {
    const r = await this.db.raw(
      `SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
       WHERE e.stream_pos > ? AND e.stream_pos <= ? AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed
       ORDER BY e.stream_pos ASC LIMIT ?`,
      [from, to, limit],
    );
    return r.rows;
  }

  /**
   * Events at or after `ts` (dir f, oldest first) or at or before it (dir b, newest first),
   * continuing after `after` (the last event of the previous batch) when given.
   */
  async aroundTimestamp(roomNid: number, ts: number, dir: 'f' | 'b', limit: number, after?: { ts: number; pos: number }): Promise<EventRow[]> {
    const cmp = dir === 'f' ? '>' : '<';
    const order = dir === 'f' ? 'ASC' : 'DESC';
    const params: Array<number> = [roomNid, ts];
    let page = '';
    if (after) {
      page = `AND (e.origin_server_ts, e.stream_pos) ${cmp} (?, ?)`;
      params.push(after.ts, after.pos);
    }
    params.push(limit);
    const r = await this.db.raw(
      `SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
       WHERE e.room_nid = ? AND e.origin_server_ts ${cmp}= ? AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed ${page}
       ORDER BY e.origin_server_ts ${order}, e.stream_pos ${order} LIMIT ?`,
      params,
    );
    return r.rows;
  }

  /** The newest event of a room (a room upgrade's "last known event" of the predecessor). */
  async lastEventId(roomNid: number): Promise<string | undefined> {
    const r = await this.db.raw(
      'SELECT event_id FROM events WHERE room_nid = ? AND NOT outlier AND NOT rejected AND NOT soft_failed ORDER BY stream_pos DESC LIMIT 1',
      [roomNid],
    );
    return r.rows[0]?.event_id;
  }
}
