import type { Bindings } from '../storage/db.ts';
import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';
import { trimByAge } from './threepid-store.ts';
import { RestrictionStore } from './restrictions-store.ts'; // issue 12
import { isRestrictionKind } from './restriction-kinds.ts';

export interface UserRow {
  user_id: string;
  localpart: string;
  password_hash: string | null;
  is_admin: boolean;
  is_guest: boolean;
  deactivated: boolean;
  created_ts: number;
  // issue 9 (migration 014): states set by server admins
  suspended: boolean;
  locked: boolean;
  shadow_banned: boolean;
  approved: boolean;
}

export interface TokenRow {
  id: number;
  user_id: string;
  device_id: string;
  expires_ts: number | null;
  is_admin: boolean;
  is_guest: boolean;
  deactivated: boolean;
  suspended: boolean;
  locked: boolean;
  shadow_banned: boolean;
  approved: boolean;
}

export interface RegistrationTokenRow { token: string; uses_allowed: number | null; pending: number; completed: number; expiry_time: number | null }

export interface DeviceRow {
  device_id: string;
  display_name: string | null;
  last_seen_ts: number | null;
  last_seen_ip: string | null;
}

/** Advisory lock under which workers starting together create the system account once. */
const SYSTEM_ACCOUNT_LOCK = 7271003;

/** Matches the expression index users_lower_localpart (lower(localpart)): a probe, not a scan. */
export const LOGIN_LOOKUP_SQL = 'SELECT * FROM users WHERE lower(localpart) = lower(?) ORDER BY localpart = ? DESC LIMIT 1';

export class AccountStore {
  constructor(readonly db: Db) {
    this.restrictions = new RestrictionStore(db);
  }

  async user(userId: string, db: Knex = this.db): Promise<UserRow | undefined> {
    const r = await db.raw('SELECT * FROM users WHERE user_id = ?', [userId]);
    return r.rows[0];
  }

  /** Case-insensitive, as Synapse does for logins. */
  async userByLocalpartInsensitive(localpart: string): Promise<UserRow | undefined> {
    const r = await this.db.raw(LOGIN_LOOKUP_SQL, [localpart, localpart]);
    return r.rows[0];
  }

  async insertUser(trx: Knex, u: { userId: string; localpart: string; passwordHash: string | null; isAdmin: boolean; isGuest?: boolean; displayname: string; approved?: boolean }): Promise<boolean> {
    const r = await trx.raw(
      `INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, created_ts, approved) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT DO NOTHING RETURNING user_id`,
      [u.userId, u.localpart, u.passwordHash, u.isAdmin, u.isGuest ?? false, Date.now(), u.approved ?? true],
    );
    if (!r.rows.length) return false;
    await trx.raw('INSERT INTO profiles (user_id, displayname) VALUES (?, ?)', [u.userId, u.displayname]);
    return true;
  }

  /** Creates the account unless it exists, under a lock (workers starting together). */
  async ensureUser(u: { userId: string; localpart: string; passwordHash: string | null; isAdmin: boolean; displayname: string }): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx.raw('SELECT pg_advisory_xact_lock(?)', [SYSTEM_ACCOUNT_LOCK]);
      await this.insertUser(trx, u);
    });
  }

  /** Removes an account whose registration could not be completed, with its devices and tokens. */
  async deleteUser(trx: Knex, userId: string): Promise<void> {
    await this.deleteDevices(trx, userId, 'all');
    await trx.raw('DELETE FROM user_threepids WHERE user_id = ?', [userId]);
    await trx.raw('DELETE FROM profiles WHERE user_id = ?', [userId]);
    await trx.raw('DELETE FROM users WHERE user_id = ?', [userId]);
  }

  async setPasswordHash(trx: Knex, userId: string, hash: string | null): Promise<void> {
    await trx.raw('UPDATE users SET password_hash = ? WHERE user_id = ?', [hash, userId]);
  }

  async setDeactivated(trx: Knex, userId: string): Promise<void> {
    await trx.raw('UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = ?', [userId]);
    // A deactivated account gives its addresses back (as Synapse): they may register again.
    await trx.raw('DELETE FROM user_threepids WHERE user_id = ?', [userId]);
  }

  /**
   * issue 9: the states server admins set (suspended, locked, shadow-banned, approved); false: unknown user.
   * issue 12: a restriction's row (restrictions-store.ts) follows its flag in the same transaction; `by`: the admin.
   */
  async setAccountState(userId: string, state: Partial<Record<'suspended' | 'locked' | 'shadow_banned' | 'approved' | 'erased', boolean>>, by: string | null = null): Promise<boolean> {
    const cols = Object.entries(state).filter(([, v]) => v !== undefined);
    if (!cols.length) return !!(await this.user(userId));
    return this.db.transaction(async (trx) => {
      const r = await trx.raw(`UPDATE users SET ${cols.map(([k]) => `${k} = ?`).join(', ')} WHERE user_id = ?`, [...cols.map(([, v]) => v as boolean), userId]);
      if (!r.rowCount) return false;
      const now = Date.now();
      for (const [k, v] of cols) if (isRestrictionKind(k)) await this.restrictions.followFlag(trx, userId, k, v as boolean, by, now);
      return true;
    });
  }

  /** issue 12: restrictions with reason and expiry (their table follows the flags above). */
  readonly restrictions: RestrictionStore;

  /** issue 9: undoes a deactivation (Synapse's `deactivated: false`); the password is set by the caller. */
  async reactivate(trx: Knex, userId: string): Promise<void> {
    await trx.raw('UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = ?', [userId]);
  }

  async upsertDevice(trx: Knex, userId: string, deviceId: string, displayName: string | null, ip: string | null): Promise<void> {
    await trx.raw(
      `INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = EXCLUDED.last_seen_ts, last_seen_ip = EXCLUDED.last_seen_ip,
         display_name = COALESCE(devices.display_name, EXCLUDED.display_name)`,
      [userId, deviceId, displayName, Date.now(), ip, Date.now()],
    );
    await trx.raw('UPDATE users SET last_seen_ts = ? WHERE user_id = ?', [Date.now(), userId]); // issue 9: the account's last use
  }

  async devices(userId: string): Promise<DeviceRow[]> {
    const r = await this.db.raw('SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ? ORDER BY created_ts', [userId]);
    return r.rows;
  }

  async device(userId: string, deviceId: string): Promise<DeviceRow | undefined> {
    const r = await this.db.raw('SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ? AND device_id = ?', [userId, deviceId]);
    return r.rows[0];
  }

  async deviceCount(userId: string): Promise<number> {
    const r = await this.db.raw('SELECT count(*)::int AS n FROM devices WHERE user_id = ?', [userId]);
    return r.rows[0].n;
  }

  /** The devices past the newest `keep` (by last use, then creation), least recently seen first; `except` is never among them. */
  async devicesBeyond(userId: string, keep: number, except: string): Promise<string[]> {
    const r = await this.db.raw(
      `SELECT device_id FROM devices WHERE user_id = ? AND device_id <> ?
       ORDER BY COALESCE(last_seen_ts, created_ts) DESC, created_ts DESC OFFSET ?`,
      [userId, except, Math.max(0, keep - 1)],
    );
    return r.rows.map((x: { device_id: string }) => x.device_id).reverse();
  }

  async renameDevice(userId: string, deviceId: string, name: string): Promise<boolean> {
    const r = await this.db.raw('UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?', [name, userId, deviceId]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Several devices' last_seen in one statement. */
  async touchDevices(rows: { userId: string; deviceId: string; ts: number; ip: string | null }[]): Promise<void> {
    await this.db.raw(
      `UPDATE devices d SET last_seen_ts = s.ts, last_seen_ip = s.ip
       FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[]) AS s(user_id, device_id, ts, ip)
       WHERE d.user_id = s.user_id AND d.device_id = s.device_id`,
      [rows.map((r) => r.userId), rows.map((r) => r.deviceId), rows.map((r) => r.ts), rows.map((r) => r.ip) as string[]],
    );
    // issue 9: the account's last use (the admin user list orders by it), in the same batch.
    await this.db.raw(
      `UPDATE users u SET last_seen_ts = s.ts FROM (SELECT user_id, max(ts) AS ts FROM unnest(?::text[], ?::bigint[]) AS x(user_id, ts) GROUP BY user_id) s
       WHERE u.user_id = s.user_id AND (u.last_seen_ts IS NULL OR u.last_seen_ts < s.ts)`,
      [rows.map((r) => r.userId), rows.map((r) => r.ts)],
    );
  }

  /** Deletes devices and every token they hold. */
  async deleteDevices(trx: Knex, userId: string, deviceIds: string[] | 'all', exceptDevice?: string): Promise<string[]> {
    const params: Bindings = [userId];
    let cond = '';
    if (deviceIds !== 'all') {
      cond += ' AND device_id = ANY(?)';
      params.push(deviceIds);
    }
    if (exceptDevice) {
      cond += ' AND device_id <> ?';
      params.push(exceptDevice);
    }
    const r = await trx.raw(`DELETE FROM devices WHERE user_id = ?${cond} RETURNING device_id`, params);
    await trx.raw(`DELETE FROM access_tokens WHERE user_id = ?${cond}`, params);
    await trx.raw(`DELETE FROM refresh_tokens WHERE user_id = ?${cond}`, params);
    return r.rows.map((x: { device_id: string }) => x.device_id);
  }

  async insertRefreshToken(trx: Knex, hash: Buffer, userId: string, deviceId: string): Promise<number> {
    const r = await trx.raw('INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES (?, ?, ?, ?) RETURNING id', [hash, userId, deviceId, Date.now()]);
    return Number(r.rows[0].id);
  }

  async insertAccessToken(trx: Knex, hash: Buffer, userId: string, deviceId: string, expiresTs: number | null, refreshId: number | null): Promise<void> {
    await trx.raw(
      'INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_token_id, created_ts) VALUES (?, ?, ?, ?, ?, ?)',
      [hash, userId, deviceId, expiresTs, refreshId, Date.now()],
    );
  }

  async accessToken(hash: Buffer): Promise<TokenRow | undefined> {
    const r = await this.db.raw(
      `SELECT t.id, t.user_id, t.device_id, t.expires_ts, u.is_admin, u.is_guest, u.deactivated, u.suspended, u.locked, u.shadow_banned, u.approved
       FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ?`,
      [hash],
    );
    return r.rows[0];
  }

  async refreshToken(trx: Knex, hash: Buffer): Promise<{ id: number; user_id: string; device_id: string } | undefined> {
    const r = await trx.raw('SELECT id, user_id, device_id FROM refresh_tokens WHERE token_hash = ? FOR UPDATE', [hash]);
    return r.rows[0];
  }

  /** Drops a refresh token and the access tokens it minted. */
  async deleteRefreshToken(trx: Knex, id: number): Promise<void> {
    await trx.raw('DELETE FROM refresh_tokens WHERE id = ?', [id]);
  }

  async deleteAccessTokenById(trx: Knex, id: number): Promise<void> {
    await trx.raw('DELETE FROM access_tokens WHERE id = ?', [id]);
  }

  async isLocalpartTaken(localpart: string): Promise<boolean> {
    const r = await this.db.raw('SELECT 1 FROM users WHERE lower(localpart) = lower(?)', [localpart]);
    return r.rows.length > 0;
  }

  async userCount(): Promise<number> {
    const r = await this.db.raw('SELECT count(*)::int AS n FROM users');
    return r.rows[0].n;
  }

  // User-interactive auth sessions. Unauthenticated clients create them, so each insert trims the
  // table to the newest `cap` rows, and a session older than its lifetime reads as unknown.
  async createUiaSession(sessionId: string, userId: string | null, params: Record<string, unknown>, limits: { cap: number; expiredBefore: number }): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx.raw('INSERT INTO uia_sessions (session_id, user_id, params, created_ts) VALUES (?, ?, ?, ?)', [sessionId, userId, JSON.stringify(params), Date.now()]);
      await trimByAge(trx, 'uia_sessions', limits.cap, limits.expiredBefore);
    });
  }

  async uiaSession(sessionId: string, createdAfter: number): Promise<{ session_id: string; user_id: string | null; completed: string[]; params: Record<string, unknown>; created_ts: number } | undefined> {
    const r = await this.db.raw('SELECT * FROM uia_sessions WHERE session_id = ? AND created_ts > ?', [sessionId, createdAfter]);
    return r.rows[0];
  }

  async deleteUiaSessionsBefore(createdBefore: number): Promise<number> {
    const r = await this.db.raw('DELETE FROM uia_sessions WHERE created_ts <= ?', [createdBefore]);
    return r.rowCount ?? 0;
  }

  async completeUiaStage(sessionId: string, stage: string): Promise<void> {
    await this.db.raw(
      `UPDATE uia_sessions SET completed = completed || jsonb_build_array(?::text)
       WHERE session_id = ? AND NOT completed @> jsonb_build_array(?::text)`,
      [stage, sessionId, stage],
    );
  }

  async setUiaParam(sessionId: string, key: string, value: unknown): Promise<void> {
    await this.db.raw('UPDATE uia_sessions SET params = params || ?::jsonb WHERE session_id = ?', [JSON.stringify({ [key]: value }), sessionId]);
  }

  async deleteUiaSession(sessionId: string): Promise<void> {
    await this.db.raw('DELETE FROM uia_sessions WHERE session_id = ?', [sessionId]);
  }

  // Registration tokens.
  async registrationToken(token: string): Promise<{ token: string; uses_allowed: number | null; pending: number; completed: number; expiry_time: number | null } | undefined> {
    const r = await this.db.raw('SELECT * FROM registration_tokens WHERE token = ?', [token]);
    return r.rows[0];
  }

  // issue 9 (roles9): registration tokens managed by admins (Synapse's /_synapse/admin/v1/registration_tokens).
  async registrationTokens(valid?: boolean): Promise<RegistrationTokenRow[]> {
    const now = Date.now();
    const validSql = '(uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time > ?)';
    const r = valid === undefined
      ? await this.db.raw('SELECT * FROM registration_tokens ORDER BY token')
      : await this.db.raw(`SELECT * FROM registration_tokens WHERE ${valid ? '' : 'NOT '}(${validSql}) ORDER BY token`, [now]);
    return r.rows;
  }

  async insertRegistrationToken(t: { token: string; usesAllowed: number | null; expiryTime: number | null }): Promise<boolean> {
    const r = await this.db.raw(
      'INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING token',
      [t.token, t.usesAllowed, t.expiryTime],
    );
    return r.rows.length > 0;
  }

  async updateRegistrationToken(token: string, change: { usesAllowed?: number | null; expiryTime?: number | null }): Promise<RegistrationTokenRow | undefined> {
    const sets: string[] = [];
    const params: Bindings = [];
    if (change.usesAllowed !== undefined) { sets.push('uses_allowed = ?'); params.push(change.usesAllowed); }
    if (change.expiryTime !== undefined) { sets.push('expiry_time = ?'); params.push(change.expiryTime); }
    const r = sets.length
      ? await this.db.raw(`UPDATE registration_tokens SET ${sets.join(', ')} WHERE token = ? RETURNING *`, [...params, token])
      : await this.db.raw('SELECT * FROM registration_tokens WHERE token = ?', [token]);
    return r.rows[0];
  }

  async deleteRegistrationToken(token: string): Promise<boolean> {
    const r = await this.db.raw('DELETE FROM registration_tokens WHERE token = ?', [token]);
    return (r.rowCount ?? 0) > 0;
  }

  /** issue 9: an erased account's profile is emptied (Synapse's deactivate with erase). */
  async eraseProfile(trx: Knex, userId: string): Promise<void> {
    await trx.raw('UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = ?', [userId]);
    await trx.raw('UPDATE users SET erased = TRUE WHERE user_id = ?', [userId]);
  }

  async useRegistrationToken(trx: Knex, token: string): Promise<boolean> {
    const r = await trx.raw(
      `UPDATE registration_tokens SET completed = completed + 1
       WHERE token = ? AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time > ?)
       RETURNING token`,
      [token, Date.now()],
    );
    return r.rows.length > 0;
  }
}
