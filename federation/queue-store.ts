import type { Db } from '../homeserver/storage/db.ts';

export interface QueuedItem { id: number; kind: 'pdu' | 'edu'; body: Record<string, unknown> }
export interface DestinationState { destination: string; failures: number; retryAt: number }

/** The outbound queue (federation_outbound_queue) and each destination's retry schedule (federation_destinations). */
export class OutboundQueueStore {
  constructor(private db: Db) {}

  /** Queues items for destinations in one transaction (the caller's `trx`: with the change that caused them). */
  async enqueue(items: Array<{ destination: string; kind: 'pdu' | 'edu'; body: Record<string, unknown> }>, trx?: Db): Promise<void> {
    if (!items.length) return;
    const now = Date.now();
    await (trx ?? this.db).raw(
      `INSERT INTO federation_outbound_queue (destination, kind, body_json, created_ts)
       SELECT d, k, b, ? FROM unnest(?::text[], ?::text[], ?::text[]) AS x(d, k, b)`,
      [now, items.map((i) => i.destination), items.map((i) => i.kind), items.map((i) => JSON.stringify(i.body))],
    );
  }

  /** The oldest items for a destination: up to `pdus` PDUs and `edus` EDUs. */
  async next(destination: string, pdus: number, edus: number): Promise<QueuedItem[]> {
    const r = await this.db.raw(
      `(SELECT id, kind, body_json FROM federation_outbound_queue WHERE destination = ? AND kind = 'pdu' ORDER BY id LIMIT ?)
       UNION ALL
       (SELECT id, kind, body_json FROM federation_outbound_queue WHERE destination = ? AND kind = 'edu' ORDER BY id LIMIT ?)
       ORDER BY id`,
      [destination, pdus, destination, edus],
    );
    return r.rows.map((row: { id: number; kind: 'pdu' | 'edu'; body_json: string }) => ({ id: Number(row.id), kind: row.kind, body: JSON.parse(row.body_json) }));
  }

  /**
   * Ephemeral EDUs that went stale while the destination was away (typing after a minute, presence
   * and receipts after an hour) are dropped rather than delivered late; to-device messages, device
   * lists and PDUs are kept.
   */
  async dropStale(destination: string, now: number): Promise<number> {
    const r = await this.db.raw(
      `DELETE FROM federation_outbound_queue
       WHERE destination = ? AND kind = 'edu' AND (
         (body_json::jsonb->>'edu_type' = 'm.typing' AND created_ts < ?) OR
         (body_json::jsonb->>'edu_type' IN ('m.presence', 'm.receipt') AND created_ts < ?))
       RETURNING 1`,
      [destination, now - 60_000, now - 3600_000],
    );
    return r.rows.length;
  }

  /** Sent: the items go and the destination's back-off is reset, in one transaction. */
  async sent(destination: string, ids: number[]): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx.raw('DELETE FROM federation_outbound_queue WHERE id = ANY(?::bigint[])', [ids]);
      await trx.raw(
        `INSERT INTO federation_destinations (destination, failures, retry_at, last_error, last_success_ts) VALUES (?, 0, 0, NULL, ?)
         ON CONFLICT (destination) DO UPDATE SET failures = 0, retry_at = 0, last_error = NULL, last_success_ts = EXCLUDED.last_success_ts`,
        [destination, Date.now()],
      );
    });
  }

  /** A failed attempt: the next one waits until retryAt. */
  async failed(destination: string, failures: number, retryAt: number, error: string): Promise<void> {
    await this.db.raw(
      `INSERT INTO federation_destinations (destination, failures, retry_at, last_error) VALUES (?, ?, ?, ?)
       ON CONFLICT (destination) DO UPDATE SET failures = EXCLUDED.failures, retry_at = EXCLUDED.retry_at, last_error = EXCLUDED.last_error`,
      [destination, failures, retryAt, error.slice(0, 500)],
    );
  }

  /** The destination answered us: no more waiting for it. True when it was backed off. */
  async up(destination: string): Promise<boolean> {
    const r = await this.db.raw('UPDATE federation_destinations SET retry_at = 0, failures = 0 WHERE destination = ? AND retry_at > 0 RETURNING 1', [destination]);
    return r.rows.length > 0;
  }

  /** Destinations with something queued, and their retry schedule. */
  async pending(): Promise<DestinationState[]> {
    const r = await this.db.raw(
      `SELECT q.destination, COALESCE(d.failures, 0) AS failures, COALESCE(d.retry_at, 0) AS retry_at
       FROM (SELECT DISTINCT destination FROM federation_outbound_queue) q
       LEFT JOIN federation_destinations d ON d.destination = q.destination`,
    );
    return r.rows.map((row: { destination: string; failures: number; retry_at: number }) => ({ destination: row.destination, failures: Number(row.failures), retryAt: Number(row.retry_at) }));
  }

  async state(destination: string): Promise<DestinationState> {
    const r = await this.db.raw('SELECT failures, retry_at FROM federation_destinations WHERE destination = ?', [destination]);
    return { destination, failures: Number(r.rows[0]?.failures ?? 0), retryAt: Number(r.rows[0]?.retry_at ?? 0) };
  }

  /** Inbound transactions: the answer given to (origin, txnId), if it was received before. */
  async inboundAnswer(origin: string, txnId: string): Promise<Record<string, unknown> | undefined> {
    const r = await this.db.raw('SELECT response_json FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?', [origin, txnId]);
    return r.rows[0] ? JSON.parse(r.rows[0].response_json) : undefined;
  }

  async rememberInbound(origin: string, txnId: string, response: Record<string, unknown>): Promise<void> {
    await this.db.raw(
      'INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
      [origin, txnId, JSON.stringify(response), Date.now()],
    );
  }

  /** Inbound transaction ids older than `beforeTs` are forgotten (a sender retries within hours). */
  async pruneInbound(beforeTs: number): Promise<void> {
    await this.db.raw('DELETE FROM federation_inbound_txns WHERE received_ts < ?', [beforeTs]);
  }
}
