// The admin dashboard's figures read from PostgreSQL (issue 12): accounts, devices seen, registrations.
// Read-only; the rooms' figures come through the room engine's reader (moderation's room list).
import type { Db } from '../storage/db.ts';

export class AdminStatsStore {
  /** `hidden`: the server's own account (rooms/bootstrap.ts), not a user the admins count. */
  constructor(private db: Db, private hidden: string) {}

  /** Accounts (not deactivated) and how many were made in each of the last `hours` hours (oldest first). */
  async accounts(now: number, hours: number): Promise<{ total: number; perHour: number[] }> {
    const since = now - hours * 3_600_000;
    const total = await this.db.raw('SELECT count(*)::int AS n FROM users WHERE NOT deactivated AND user_id <> ?', [this.hidden]);
    const made = await this.db.raw(
      'SELECT floor((created_ts - ?) / 3600000)::int AS h, count(*)::int AS n FROM users WHERE created_ts >= ? AND user_id <> ? GROUP BY 1',
      [since, since, this.hidden],
    );
    const perHour = new Array<number>(hours).fill(0);
    for (const row of made.rows as Array<{ h: number; n: number }>) if (row.h >= 0 && row.h < hours) perHour[row.h] = row.n;
    return { total: (total.rows[0] as { n: number }).n, perHour };
  }

  /** Users seen since `since` (users.last_seen_ts: their devices' newest, through its index). */
  async usersSeenSince(since: number): Promise<number> {
    const r = await this.db.raw('SELECT count(*)::int AS n FROM users WHERE last_seen_ts >= ? AND user_id <> ?', [since, this.hidden]);
    return (r.rows[0] as { n: number }).n;
  }

  /** A round trip to the database, in milliseconds. */
  async ping(): Promise<number> {
    const start = performance.now();
    await this.db.raw('SELECT 1');
    return Math.round((performance.now() - start) * 10) / 10;
  }
}
