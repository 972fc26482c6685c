import type { Bindings, Db } from '../storage/db.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow } from './store.ts';

/** Events that relate to another (columns relates_to, rel_type of events) and thread roots. */
export class RelationStore {
  constructor(private db: Db) {}

  /**
   * Children of `eventId` in its room, newest first (dir b) or oldest first (dir f), within the
   * stream range. With depth > 1, children of children too, up to that many hops; the relation
   * and event type filters apply at every hop, as in Synapse. Redacted relations do not count.
   */
  async children(opts: {
    roomNid: number;
    eventId: string;
    relType?: string;
    eventType?: string;
    depth: number;
    dir: 'b' | 'f';
    from: number;
    to?: number;
    ceiling: number;
    limit: number;
  }): Promise<EventRow[]> {
    const conds: string[] = [];
    const params: Bindings = [opts.eventId, opts.roomNid, opts.depth, opts.roomNid];
    if (opts.dir === 'b') {
      conds.push('e.stream_pos <= ?');
      params.push(Math.min(opts.from, opts.ceiling));
      if (opts.to !== undefined) {
        conds.push('e.stream_pos > ?');
        params.push(opts.to);
      }
    } else {
      conds.push('e.stream_pos > ?', 'e.stream_pos <= ?');
      params.push(opts.from, Math.min(opts.to ?? opts.ceiling, opts.ceiling));
    }
    if (opts.relType !== undefined) {
      conds.push('e.rel_type = ?');
      params.push(opts.relType);
    }
    if (opts.eventType !== undefined) {
      conds.push('t.type = ?');
      params.push(opts.eventType);
    }
    params.push(opts.limit);
    const live = 'NOT x.rejected AND NOT x.soft_failed AND NOT x.outlier AND x.redacted_by IS NULL AND x.rel_type IS NOT NULL';
    const r = await this.db.raw(
      `WITH RECURSIVE rel(event_nid, event_id, hops) AS (
         SELECT x.event_nid, x.event_id, 1 FROM events x WHERE x.relates_to = ? AND x.room_nid = ? AND ${live}
         UNION
         SELECT x.event_nid, x.event_id, rel.hops + 1 FROM rel JOIN events x ON x.relates_to = rel.event_id
         WHERE rel.hops < ? AND x.room_nid = ? AND ${live}
       )
       SELECT ${EVENT_COLUMNS} FROM (SELECT DISTINCT event_nid FROM rel) d JOIN events e ON e.event_nid = d.event_nid ${EVENT_JOINS}
       WHERE ${conds.join(' AND ')}
       ORDER BY e.stream_pos ${opts.dir === 'b' ? 'DESC' : 'ASC'} LIMIT ?`,
      params,
    );
    return r.rows;
  }

  /**
   * Thread roots of a room (events that m.thread events point at), ordered by their latest thread
   * event, newest first; only threads whose latest event is before `before`. `participant`
   * keeps the threads that user started or replied in.
   */
  async threads(opts: { roomNid: number; before?: number; ceiling: number; participant?: string; limit: number }): Promise<Array<{ root: EventRow; latest: number }>> {
    const params: Bindings = [opts.roomNid, opts.ceiling];
    let having = '';
    if (opts.before !== undefined) {
      having = 'HAVING max(x.stream_pos) < ?';
      params.push(opts.before);
    }
    let participated = '';
    if (opts.participant !== undefined) {
      participated = 'WHERE th.root_sender = ? OR EXISTS (SELECT 1 FROM events p WHERE p.relates_to = th.root_id AND p.rel_type = \'m.thread\' AND p.sender = ? AND p.room_nid = ? AND NOT p.rejected AND NOT p.soft_failed AND p.redacted_by IS NULL)';
      params.push(opts.participant, opts.participant, opts.roomNid);
    }
    params.push(opts.limit);
    const r = await this.db.raw(
      `WITH th AS (
         SELECT root.event_nid AS root_nid, root.event_id AS root_id, root.sender AS root_sender, max(x.stream_pos) AS latest
         FROM events x JOIN events root ON root.event_id = x.relates_to AND root.room_nid = x.room_nid
         WHERE x.room_nid = ? AND x.rel_type = 'm.thread' AND x.stream_pos <= ?
           AND NOT x.rejected AND NOT x.soft_failed AND NOT x.outlier AND x.redacted_by IS NULL AND NOT root.rejected
         GROUP BY root.event_nid, root.event_id, root.sender
         ${having}
       )
       SELECT th.root_nid, th.latest FROM th ${participated}
       ORDER BY th.latest DESC LIMIT ?`,
      params,
    );
    const rows = r.rows as Array<{ root_nid: number; latest: number }>;
    if (!rows.length) return [];
    const events = await this.db.raw(`SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS} WHERE e.event_nid = ANY(?)`, [rows.map((x) => Number(x.root_nid))]);
    const byNid = new Map((events.rows as EventRow[]).map((e) => [Number(e.event_nid), e]));
    return rows.map((x) => ({ root: byNid.get(Number(x.root_nid))!, latest: Number(x.latest) }));
  }
}
