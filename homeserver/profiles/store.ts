import type { Db } from '../storage/db.ts';
import type { Profile } from '../rooms/service.ts';

export class ProfileStore {
  constructor(private db: Db) {}

  async get(userId: string): Promise<Profile | undefined> {
    const r = await this.db.raw(
      'SELECT p.displayname, p.avatar_url FROM profiles p JOIN users u ON u.user_id = p.user_id WHERE p.user_id = ? AND NOT u.deactivated',
      [userId],
    );
    return r.rows[0];
  }

  /**
   * Changes a profile field and queues its propagation to the user's rooms, in one transaction:
   * once the PUT has answered, the change reaches every room even if the server dies right after.
   */
  async setAndQueue(userId: string, field: 'displayname' | 'avatar_url', value: string | null): Promise<void> {
    // One statement is one transaction, and one round trip on the request path.
    await this.db.raw(
      `WITH changed AS (UPDATE profiles SET ${field} = ? WHERE user_id = ? RETURNING user_id)
       INSERT INTO profile_propagations (user_id, generation, queued_ts, claimed_until) SELECT user_id, 1, ?, 0 FROM changed
       ON CONFLICT (user_id) DO UPDATE SET generation = profile_propagations.generation + 1, claimed_until = 0`,
      [value, userId, Date.now()],
    );
  }

  /** Takes the oldest queued propagation nobody is working on, for `leaseMs`. */
  async claimPropagation(leaseMs: number): Promise<{ user_id: string; generation: number } | undefined> {
    const now = Date.now();
    const r = await this.db.raw(
      `UPDATE profile_propagations SET claimed_until = ? WHERE user_id = (
         SELECT user_id FROM profile_propagations WHERE claimed_until < ? ORDER BY queued_ts LIMIT 1 FOR UPDATE SKIP LOCKED)
       RETURNING user_id, generation`,
      [now + leaseMs, now],
    );
    const row = r.rows[0] as { user_id: string; generation: number } | undefined;
    return row && { user_id: row.user_id, generation: Number(row.generation) };
  }

  /** Keeps a claim alive while a long propagation runs. */
  async extendPropagation(userId: string, leaseMs: number): Promise<void> {
    await this.db.raw('UPDATE profile_propagations SET claimed_until = ? WHERE user_id = ?', [Date.now() + leaseMs, userId]);
  }

  /**
   * Done with `generation`: the row goes, unless the profile changed again meanwhile; then it is
   * released for another round (which sends the newer profile). True when it went.
   */
  async finishPropagation(userId: string, generation: number): Promise<boolean> {
    const r = await this.db.raw('DELETE FROM profile_propagations WHERE user_id = ? AND generation = ?', [userId, generation]);
    if ((r.rowCount ?? 0) > 0) return true;
    await this.releasePropagation(userId, 0);
    return false;
  }

  /** Gives a claim back; it may be taken again from `retryAt` (ms since epoch). */
  async releasePropagation(userId: string, retryAt: number): Promise<void> {
    await this.db.raw('UPDATE profile_propagations SET claimed_until = ? WHERE user_id = ?', [retryAt, userId]);
  }

  /**
   * At start: claims of a worker that died are free again. Only one worker per database runs
   * background jobs, so every claim found at start is a dead one.
   */
  async releaseAllPropagations(): Promise<void> {
    await this.db.raw('UPDATE profile_propagations SET claimed_until = 0 WHERE claimed_until > 0');
  }

  /**
   * User directory candidates: active users whose ID or display name contains `term`, display
   * names starting with it first, then by user ID; `offset` pages through them.
   */
  async searchCandidates(term: string, offset: number, limit: number): Promise<Array<{ user_id: string; displayname: string | null; avatar_url: string | null }>> {
    const escaped = term.replace(/[\\%_]/g, (c) => '\\' + c);
    const like = `%${escaped}%`;
    const r = await this.db.raw(
      `SELECT p.user_id, p.displayname, p.avatar_url FROM profiles p JOIN users u ON u.user_id = p.user_id
       WHERE NOT u.deactivated AND (p.user_id ILIKE ? OR p.displayname ILIKE ?)
       ORDER BY (p.displayname ILIKE ?) DESC, p.user_id OFFSET ? LIMIT ?`,
      [like, like, `${escaped}%`, offset, limit],
    );
    return r.rows;
  }
}
