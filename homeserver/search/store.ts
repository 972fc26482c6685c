import type { Db, Bindings } from '../storage/db.ts';
import { filterSql, type RoomEventFilter } from '../rooms/filter.ts';

/** A room the searcher may search, and the last stream position persisted when the search began. */
export interface SearchRoom {
  room_nid: number;
  room_id: string;
  membership: string;
  stream_pos: number;
  ceiling: number;
}

export interface SearchHit {
  event_nid: number;
  stream_pos: number;
  rank: number;
}

export interface SearchQuery {
  rooms: SearchRoom[];
  tsquery: string;
  keys: string[];
  filter: RoomEventFilter | undefined;
}

/** Full-text search over the event_search index (vectors built with to_tsvector('simple', …)). */
export class SearchStore {
  constructor(private db: Db) {}

  /** Rooms the user is in, or was in (up to leaving), not forgotten. */
  async roomsOf(userId: string, current: number): Promise<SearchRoom[]> {
    const r = await this.db.raw(
      `SELECT m.room_nid, r.room_id, m.membership, m.stream_pos FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid
       WHERE m.user_id = ? AND m.membership IN ('join', 'leave', 'ban') AND NOT m.forgotten`,
      [userId],
    );
    return (r.rows as Array<Omit<SearchRoom, 'ceiling'>>).map((x) => ({
      ...x,
      room_nid: Number(x.room_nid),
      stream_pos: Number(x.stream_pos),
      // History visibility decides event by event (a user who left still sees world_readable events).
      ceiling: current,
    }));
  }

  private where(q: SearchQuery): { sql: string; params: Bindings } {
    const f = filterSql(q.filter);
    return {
      sql: `FROM event_search es
        JOIN unnest(?::int[], ?::bigint[]) AS sr(room_nid, ceiling) ON sr.room_nid = es.room_nid
        JOIN events e ON e.event_nid = es.event_nid
        JOIN event_types t ON t.type_nid = e.type_nid
        CROSS JOIN to_tsquery('simple', ?) AS q
        WHERE es.vector @@ q AND es.key = ANY(?) AND e.stream_pos <= sr.ceiling
          AND NOT e.rejected AND NOT e.outlier AND e.redacted_by IS NULL ${f.sql}`,
      params: [q.rooms.map((r) => r.room_nid), q.rooms.map((r) => r.ceiling), q.tsquery, q.keys, ...f.params],
    };
  }

  /** Matches best first (rank, then newest), strictly after `after` in that order when given. */
  async byRank(q: SearchQuery, after: { rank: number; pos: number } | undefined, limit: number): Promise<SearchHit[]> {
    const w = this.where(q);
    // ts_rank_cd is a real; the bound goes back as one, so the comparison is exact.
    const r = await this.db.raw(
      `SELECT es.event_nid, e.stream_pos, ts_rank_cd(es.vector, q) AS rank ${w.sql}
       ${after ? 'AND (ts_rank_cd(es.vector, q), e.stream_pos) < (?::real, ?)' : ''}
       ORDER BY rank DESC, e.stream_pos DESC LIMIT ?`,
      [...w.params, ...(after ? [after.rank, after.pos] : []), limit],
    );
    return r.rows.map(hit);
  }

  /** Matches newest first, strictly before stream position `before` when given. */
  async byRecent(q: SearchQuery, before: number | undefined, limit: number): Promise<SearchHit[]> {
    const w = this.where(q);
    const r = await this.db.raw(
      `SELECT es.event_nid, e.stream_pos, ts_rank_cd(es.vector, q) AS rank ${w.sql}
       ${before !== undefined ? 'AND e.stream_pos < ?' : ''}
       ORDER BY e.stream_pos DESC LIMIT ?`,
      [...w.params, ...(before !== undefined ? [before] : []), limit],
    );
    return r.rows.map(hit);
  }

  /** The room a room was upgraded from (m.room.create's predecessor), if any. */
  async predecessor(roomId: string): Promise<string | undefined> {
    const r = await this.db.raw(
      `SELECT e.json FROM rooms r
       JOIN event_types t ON t.type = 'm.room.create'
       JOIN state_keys sk ON sk.state_key = ''
       JOIN current_state cs ON cs.room_nid = r.room_nid AND cs.type_nid = t.type_nid AND cs.state_key_nid = sk.state_key_nid
       JOIN events e ON e.event_nid = cs.event_nid
       WHERE r.room_id = ?`,
      [roomId],
    );
    if (!r.rows[0]) return undefined;
    const p = JSON.parse(r.rows[0].json).content?.predecessor?.room_id;
    return typeof p === 'string' ? p : undefined;
  }
}

function hit(row: { event_nid: number; stream_pos: number; rank: number }): SearchHit {
  return { event_nid: Number(row.event_nid), stream_pos: Number(row.stream_pos), rank: Number(row.rank) };
}
