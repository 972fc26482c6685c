import type { Db } from '../storage/db.ts';

/** Synapse's `ratelimit_override`: 0/0 means not limited at all. */
export interface Override {
  messagesPerSecond: number;
  burstCount: number;
}

/** The per-user overrides (migration 010); only this file runs SQL on `ratelimit_overrides`. */
export class OverrideStore {
  constructor(private db: Db) {}

  async get(userId: string): Promise<Override | undefined> {
    const r = await this.db.raw('SELECT messages_per_second, burst_count FROM ratelimit_overrides WHERE user_id = ?', [userId]);
    const row = r.rows[0] as { messages_per_second: number; burst_count: number } | undefined;
    return row ? { messagesPerSecond: Number(row.messages_per_second), burstCount: Number(row.burst_count) } : undefined;
  }

  async set(userId: string, o: Override): Promise<void> {
    await this.db.raw(
      `INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count, updated_ts) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET messages_per_second = EXCLUDED.messages_per_second, burst_count = EXCLUDED.burst_count, updated_ts = EXCLUDED.updated_ts`,
      [userId, o.messagesPerSecond, o.burstCount, Date.now()],
    );
  }

  async delete(userId: string): Promise<void> {
    await this.db.raw('DELETE FROM ratelimit_overrides WHERE user_id = ?', [userId]);
  }
}
