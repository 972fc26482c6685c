import type { Db, Bindings } from '../storage/db.ts';
import { filterSql, type RoomEventFilter } from './filter.ts';

/** A room searched, and the last stream position persisted when the search began. */
export interface SearchedRoom {
  room_nid: number;
  ceiling: number;
}

export interface SearchHit {
  event_nid: number;
  stream_pos: number;
  rank: number;
}

export interface SearchQuery {
  rooms: SearchedRoom[];
  tsquery: string;
  keys: string[];
  filter: RoomEventFilter | undefined;
}

/**
 * Full-text matches over the event_search index (vectors built with to_tsvector('simple', …)).
 * The room engine writes that index in the same statement as the events (persist-store), so it
 * is the engine's table; the search capability parses, pages and judges visibility.
 */
export class EventSearchStore {
  constructor(private db: Db) {}

  private where(q: SearchQuery): { sql: string; params: Bindings } {
    const f = filterSql(q.filter);
    return {
      sql: `FROM event_search es
        JOIN unnest(?::int[], ?::bigint[]) AS sr(room_nid, ceiling) ON sr.room_nid = es.room_nid
        JOIN events e ON e.event_nid = es.event_nid
        JOIN event_types t ON t.type_nid = e.type_nid
        CROSS JOIN to_tsquery('simple', ?) AS q
        WHERE es.vector @@ q AND es.key = ANY(?) AND e.stream_pos <= sr.ceiling
          AND NOT e.rejected AND NOT e.soft_failed AND NOT e.outlier AND e.redacted_by IS NULL ${f.sql}`,
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
}

function hit(row: { event_nid: number; stream_pos: number; rank: number }): SearchHit {
  return { event_nid: Number(row.event_nid), stream_pos: Number(row.stream_pos), rank: Number(row.rank) };
}
