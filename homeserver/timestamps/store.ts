import type { Db } from '../storage/db.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow } from '../rooms/store.ts';

/** Events of a room by origin_server_ts, for /timestamp_to_event. */
export class TimestampStore {
  constructor(private db: Db) {}

  /**
   * Events at or after `ts` (dir f, oldest first) or at or before it (dir b, newest first),
   * continuing after `after` (the last event of the previous batch) when given.
   */
  async around(roomNid: number, ts: number, dir: 'f' | 'b', limit: number, after?: { ts: number; pos: number }): Promise<EventRow[]> {
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
       WHERE e.room_nid = ? AND e.origin_server_ts ${cmp}= ? AND NOT e.outlier AND NOT e.rejected ${page}
       ORDER BY e.origin_server_ts ${order}, e.stream_pos ${order} LIMIT ?`,
      params,
    );
    return r.rows;
  }
}
