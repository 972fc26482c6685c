// issue 12 (userbans12): the restrictions server admins put on an account (table user_restrictions,
// migration 021), beside the flags of `users` they describe. Invariant: a row exists exactly while
// its flag is set, and both change in one transaction — AccountStore.setAccountState (Synapse's
// endpoints: no reason, no expiry) and the functions below (ours: reason, expiry).
import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';
import { isRestrictionKind, type RestrictionKind, type RestrictionRow } from './restriction-kinds.ts';

const COLUMNS = 'user_id, kind, reason, created_by, created_ts, expires_ts, logged_out';

/** The flag's column in `users` (a kind is always one of RESTRICTION_KINDS: never user input in SQL). */
function column(kind: RestrictionKind): string {
  if (!isRestrictionKind(kind)) throw new Error(`not a restriction kind: ${kind}`);
  return kind;
}

export class RestrictionStore {
  constructor(private db: Db) {}

  /**
   * Within the transaction of a flag change from Synapse's endpoints: a flag set gets a row
   * without reason or expiry — unless one is there and still in force (a tool re-sending
   * `locked: true` with the rest of a user keeps the reason and the expiry); a flag cleared loses its row.
   */
  async followFlag(trx: Knex, userId: string, kind: RestrictionKind, on: boolean, by: string | null, now: number): Promise<void> {
    if (!on) {
      await trx.raw('DELETE FROM user_restrictions WHERE user_id = ? AND kind = ?', [userId, kind]);
      return;
    }
    await trx.raw(
      `INSERT INTO user_restrictions (user_id, kind, reason, created_by, created_ts, expires_ts, logged_out) VALUES (?, ?, NULL, ?, ?, NULL, FALSE)
       ON CONFLICT (user_id, kind) DO UPDATE SET reason = NULL, created_by = EXCLUDED.created_by, created_ts = EXCLUDED.created_ts, expires_ts = NULL, logged_out = FALSE
       WHERE user_restrictions.expires_ts IS NOT NULL AND user_restrictions.expires_ts <= ?`,
      [userId, kind, by, now, now],
    );
  }

  /** Sets the flag and its row (replacing one there), in one transaction; undefined: no such user. */
  put(r: Omit<RestrictionRow, 'created_ts'> & { created_ts: number }): Promise<RestrictionRow | undefined> {
    return this.db.transaction(async (trx) => {
      const u = await trx.raw(`UPDATE users SET ${column(r.kind)} = TRUE WHERE user_id = ? RETURNING user_id`, [r.user_id]);
      if (!u.rows.length) return undefined;
      const row = await trx.raw(
        `INSERT INTO user_restrictions (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (user_id, kind) DO UPDATE SET reason = EXCLUDED.reason, created_by = EXCLUDED.created_by, created_ts = EXCLUDED.created_ts,
           expires_ts = EXCLUDED.expires_ts, logged_out = EXCLUDED.logged_out
         RETURNING ${COLUMNS}`,
        [r.user_id, r.kind, r.reason, r.created_by, r.created_ts, r.expires_ts, r.logged_out],
      );
      return row.rows[0] as RestrictionRow;
    });
  }

  /**
   * Clears the flag and its row in one transaction. The row as it was (undefined: the flag was not
   * set). `expiredBy`: only a restriction expired by then (the expiry sweep: one extended meanwhile stays).
   */
  remove(userId: string, kind: RestrictionKind, expiredBy?: number): Promise<RestrictionRow | undefined> {
    return this.db.transaction(async (trx) => {
      const gone = await trx.raw(
        `DELETE FROM user_restrictions WHERE user_id = ? AND kind = ? ${expiredBy === undefined ? '' : 'AND expires_ts <= ?'} RETURNING ${COLUMNS}`,
        expiredBy === undefined ? [userId, kind] : [userId, kind, expiredBy],
      );
      if (expiredBy !== undefined && !gone.rows.length) return undefined;
      const u = await trx.raw(`UPDATE users SET ${column(kind)} = FALSE WHERE user_id = ? AND ${column(kind)} RETURNING user_id`, [userId]);
      // A flag set without a row (written before migration 021 backfilled, or by hand): lifted all the same.
      return (gone.rows[0] as RestrictionRow | undefined) ?? (u.rows.length ? { user_id: userId, kind, reason: null, created_by: null, created_ts: null, expires_ts: null, logged_out: false } : undefined);
    });
  }

  /** A user's restrictions whose flag is set (expired ones included: the caller knows the time). */
  async ofUser(userId: string): Promise<RestrictionRow[]> {
    const r = await this.db.raw(
      `SELECT r.user_id, k.kind, r.reason, r.created_by, r.created_ts, r.expires_ts, COALESCE(r.logged_out, FALSE) AS logged_out
       FROM users u CROSS JOIN LATERAL (VALUES ('suspended', u.suspended), ('locked', u.locked), ('shadow_banned', u.shadow_banned)) k(kind, flag)
       LEFT JOIN user_restrictions r ON r.user_id = u.user_id AND r.kind = k.kind
       WHERE u.user_id = ? AND k.flag`,
      [userId],
    );
    return (r.rows as RestrictionRow[]).map((x) => ({ ...x, user_id: userId }));
  }

  /** When each of a user's restrictions ends (null: when lifted; absent: no row). */
  async expiries(userId: string): Promise<Partial<Record<RestrictionKind, number | null>>> {
    const r = await this.db.raw('SELECT kind, expires_ts FROM user_restrictions WHERE user_id = ?', [userId]);
    return Object.fromEntries((r.rows as Array<{ kind: RestrictionKind; expires_ts: number | null }>).map((x) => [x.kind, x.expires_ts]));
  }

  /**
   * The restrictions in force at `now` (flag set, not expired), newest first, a page of them and
   * how many there are in all (the admin dashboard's Bans page).
   */
  async list(f: { kind?: RestrictionKind; userId?: string; now: number; from: number; limit: number }): Promise<{ rows: RestrictionRow[]; total: number }> {
    const where = ['(r.expires_ts IS NULL OR r.expires_ts > ?)', "CASE r.kind WHEN 'suspended' THEN u.suspended WHEN 'locked' THEN u.locked ELSE u.shadow_banned END"];
    const params: Array<string | number> = [f.now];
    if (f.kind) { where.push('r.kind = ?'); params.push(f.kind); }
    if (f.userId) { where.push('r.user_id = ?'); params.push(f.userId); }
    const from = `FROM user_restrictions r JOIN users u ON u.user_id = r.user_id WHERE ${where.join(' AND ')}`;
    const [page, count] = await Promise.all([
      this.db.raw(`SELECT ${COLUMNS.split(', ').map((c) => `r.${c}`).join(', ')} ${from} ORDER BY r.created_ts DESC NULLS LAST, r.user_id, r.kind LIMIT ? OFFSET ?`, [...params, f.limit, f.from]),
      this.db.raw(`SELECT count(*)::int AS n ${from}`, params),
    ]);
    return { rows: page.rows, total: count.rows[0].n as number };
  }

  /** Restrictions expired by `now`, soonest first (the sweep lifts them). */
  async expired(now: number, limit: number): Promise<Array<{ user_id: string; kind: RestrictionKind; expires_ts: number }>> {
    const r = await this.db.raw('SELECT user_id, kind, expires_ts FROM user_restrictions WHERE expires_ts <= ? ORDER BY expires_ts LIMIT ?', [now, limit]);
    return r.rows;
  }
}
