import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';

export type ValidationPurpose = 'register' | 'add' | 'password';

export interface ThreepidRow {
  medium: string;
  address: string;
  user_id: string;
  validated_at: number;
  added_at: number;
}

export interface ValidationSessionRow {
  session_id: string;
  medium: string;
  address: string;
  client_secret: string;
  purpose: ValidationPurpose;
  token_hash: Buffer;
  send_attempt: number;
  validated_ts: number | null;
  created_ts: number;
  expires_ts: number;
}

/** The SQL of user_threepids and threepid_validation_sessions (migration 011). */
export class ThreepidStore {
  constructor(readonly db: Db) {}

  async threepids(userId: string): Promise<ThreepidRow[]> {
    const r = await this.db.raw('SELECT * FROM user_threepids WHERE user_id = ? ORDER BY added_at', [userId]);
    return r.rows;
  }

  async owner(medium: string, address: string): Promise<string | undefined> {
    const r = await this.db.raw('SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?', [medium, address]);
    return r.rows[0]?.user_id;
  }

  /** Binds an address to an account; false when it already belongs to one (the primary key decides). */
  async bind(trx: Knex, t: { medium: string; address: string; userId: string; validatedAt: number }): Promise<boolean> {
    const r = await trx.raw(
      `INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT DO NOTHING RETURNING address`,
      [t.medium, t.address, t.userId, t.validatedAt, Date.now()],
    );
    return r.rows.length > 0;
  }

  async unbind(userId: string, medium: string, address: string): Promise<boolean> {
    const r = await this.db.raw('DELETE FROM user_threepids WHERE user_id = ? AND medium = ? AND address = ?', [userId, medium, address]);
    return (r.rowCount ?? 0) > 0;
  }

  async unbindAll(trx: Knex, userId: string): Promise<void> {
    await trx.raw('DELETE FROM user_threepids WHERE user_id = ?', [userId]);
  }

  // Validation sessions.
  async sessionBySecret(clientSecret: string, medium: string, address: string, purpose: ValidationPurpose): Promise<ValidationSessionRow | undefined> {
    const r = await this.db.raw(
      'SELECT * FROM threepid_validation_sessions WHERE client_secret = ? AND medium = ? AND address = ? AND purpose = ? AND expires_ts > ?',
      [clientSecret, medium, address, purpose, Date.now()],
    );
    return r.rows[0];
  }

  async session(sessionId: string): Promise<ValidationSessionRow | undefined> {
    const r = await this.db.raw('SELECT * FROM threepid_validation_sessions WHERE session_id = ? AND expires_ts > ?', [sessionId, Date.now()]);
    return r.rows[0];
  }

  /** Sessions for this address still pending: what keeps one address from being mailed without end. */
  async pendingForAddress(medium: string, address: string): Promise<number> {
    const r = await this.db.raw(
      'SELECT count(*)::int AS n FROM threepid_validation_sessions WHERE medium = ? AND address = ? AND expires_ts > ?',
      [medium, address, Date.now()],
    );
    return r.rows[0].n;
  }

  /**
   * Creates a session (or, for the same secret, address and purpose, replaces its token: a new
   * send_attempt), then trims the table to `cap` rows, dropping expired and then the oldest.
   */
  async upsertSession(s: Omit<ValidationSessionRow, 'validated_ts'>, cap: number): Promise<string> {
    return this.db.transaction(async (trx) => {
      const r = await trx.raw(
        `INSERT INTO threepid_validation_sessions (session_id, medium, address, client_secret, purpose, token_hash, send_attempt, created_ts, expires_ts)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (client_secret, medium, address, purpose) DO UPDATE SET
           token_hash = EXCLUDED.token_hash, send_attempt = EXCLUDED.send_attempt, expires_ts = EXCLUDED.expires_ts,
           session_id = CASE WHEN threepid_validation_sessions.expires_ts > ? THEN threepid_validation_sessions.session_id ELSE EXCLUDED.session_id END,
           validated_ts = CASE WHEN threepid_validation_sessions.expires_ts > ? THEN threepid_validation_sessions.validated_ts END,
           created_ts = CASE WHEN threepid_validation_sessions.expires_ts > ? THEN threepid_validation_sessions.created_ts ELSE EXCLUDED.created_ts END
         RETURNING session_id`,
        [s.session_id, s.medium, s.address, s.client_secret, s.purpose, s.token_hash, s.send_attempt, s.created_ts, s.expires_ts, s.created_ts, s.created_ts, s.created_ts],
      );
      await trimByAge(trx, 'threepid_validation_sessions', cap);
      return r.rows[0].session_id as string;
    });
  }

  /** Marks the session whose link was followed; false when the token, secret or sid do not match a live one. */
  async markValidated(sessionId: string, clientSecret: string, tokenHash: Buffer): Promise<boolean> {
    const r = await this.db.raw(
      `UPDATE threepid_validation_sessions SET validated_ts = COALESCE(validated_ts, ?)
       WHERE session_id = ? AND client_secret = ? AND token_hash = ? AND expires_ts > ? RETURNING session_id`,
      [Date.now(), sessionId, clientSecret, tokenHash, Date.now()],
    );
    return r.rows.length > 0;
  }

  async deleteSession(trx: Knex, sessionId: string): Promise<void> {
    await trx.raw('DELETE FROM threepid_validation_sessions WHERE session_id = ?', [sessionId]);
  }

  async deleteExpiredSessions(): Promise<number> {
    const r = await this.db.raw('DELETE FROM threepid_validation_sessions WHERE expires_ts <= ?', [Date.now()]);
    return r.rowCount ?? 0;
  }
}

/**
 * Keeps the newest `cap` rows of a table that unauthenticated clients fill, none created at or
 * before `expiredBefore`: whatever is older than the cap-th newest row goes too. Index probes
 * (created_ts is indexed), cheap enough to run on every insert.
 */
export async function trimByAge(db: Knex, table: 'threepid_validation_sessions' | 'uia_sessions', cap: number, expiredBefore = 0): Promise<void> {
  await db.raw(
    `DELETE FROM ${table} WHERE created_ts <= ? OR created_ts < (SELECT created_ts FROM ${table} ORDER BY created_ts DESC OFFSET ? LIMIT 1)`,
    [expiredBefore, cap - 1],
  );
}
