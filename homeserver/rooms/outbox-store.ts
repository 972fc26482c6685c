import type { Db } from '../storage/db.ts';

export interface OutboxRow {
  kind: 'pdu' | 'edu';
  stream_pos: number;
  room_id: string | null;
  event_id: string | null;
  destination: string | null;
  edu_type: string | null;
  json: string;
}

/** The outbox's SQL: persisted events and queued EDUs by stream position, consumers' positions. */
export class OutboxStore {
  constructor(private db: Db) {}

  async insertEdus(positions: number[], edus: Array<{ destination: string | null; type: string; content: string }>): Promise<void> {
    await this.db.raw(
      'INSERT INTO outbox_edus (stream_pos, destination, edu_type, content, created_ts) SELECT *, ? FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[])',
      [Date.now(), positions, edus.map((e) => e.destination) as string[], edus.map((e) => e.type), edus.map((e) => e.content)],
    );
  }

  nextPositions(n: number): Promise<number[]> {
    return this.db.raw("SELECT nextval('stream_positions') AS v FROM generate_series(1, ?)", [n])
      .then((r) => r.rows.map((x: { v: string }) => Number(x.v)).sort((a: number, b: number) => a - b));
  }

  async position(consumer: string): Promise<number | undefined> {
    const r = await this.db.raw('SELECT stream_pos FROM outbox_positions WHERE consumer = ?', [consumer]);
    return r.rows[0] ? Number(r.rows[0].stream_pos) : undefined;
  }

  async savePosition(consumer: string, pos: number): Promise<void> {
    await this.db.raw(
      `INSERT INTO outbox_positions (consumer, stream_pos) VALUES (?, ?)
       ON CONFLICT (consumer) DO UPDATE SET stream_pos = GREATEST(outbox_positions.stream_pos, EXCLUDED.stream_pos)`,
      [consumer, pos],
    );
  }

  /** Events persisted with state and shown (not outliers, rejected or soft-failed) and EDUs in (after, upto], in order. */
  async between(after: number, upto: number, limit: number): Promise<OutboxRow[]> {
    const r = await this.db.raw(
      `(SELECT 'pdu' AS kind, e.stream_pos, r.room_id, e.event_id, NULL::text AS destination, NULL::text AS edu_type, e.json
        FROM events e JOIN rooms r ON r.room_nid = e.room_nid
        WHERE e.stream_pos > ? AND e.stream_pos <= ? AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed
        ORDER BY e.stream_pos LIMIT ?)
       UNION ALL
       (SELECT 'edu', o.stream_pos, NULL, NULL, o.destination, o.edu_type, o.content FROM outbox_edus o
        WHERE o.stream_pos > ? AND o.stream_pos <= ? ORDER BY o.stream_pos LIMIT ?)
       ORDER BY stream_pos LIMIT ?`,
      [after, upto, limit, after, upto, limit, limit],
    );
    return r.rows.map((x: OutboxRow) => ({ ...x, stream_pos: Number(x.stream_pos) }));
  }

  /** Drops EDUs every consumer has handed off. */
  async pruneEdus(): Promise<void> {
    await this.db.raw('DELETE FROM outbox_edus WHERE stream_pos <= (SELECT min(stream_pos) FROM outbox_positions)');
  }
}
