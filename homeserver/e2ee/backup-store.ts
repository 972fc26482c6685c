import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';

export interface BackupVersionRow {
  version: number;
  algorithm: string;
  auth_data: string;
  etag: number;
  deleted: boolean;
}

export interface BackupKey {
  roomId: string;
  sessionId: string;
  firstMessageIndex: number;
  forwardedCount: number;
  isVerified: boolean;
  /** session_data as JSON text. */
  sessionData: string;
}

export interface BackupKeyRow {
  room_id: string;
  session_id: string;
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: string;
}

/** Server-side key backup: versions (numbered per user, never reused) and their room keys. */
export class BackupStore {
  constructor(private db: Db) {}

  transaction<T>(fn: (trx: Knex) => Promise<T>): Promise<T> {
    return this.db.transaction(fn);
  }

  /** The newest version not deleted; `forUpdate` locks it (writers of its keys wait for a deletion). */
  async current(userId: string, db: Knex = this.db, forUpdate = false): Promise<BackupVersionRow | undefined> {
    const r = await db.raw(
      `SELECT version, algorithm, auth_data, etag, deleted FROM e2ee_backup_versions
       WHERE user_id = ? AND NOT deleted ORDER BY version DESC LIMIT 1${forUpdate ? ' FOR UPDATE' : ''}`,
      [userId],
    );
    return r.rows[0];
  }

  async version(userId: string, version: number, db: Knex = this.db): Promise<BackupVersionRow | undefined> {
    const r = await db.raw(
      'SELECT version, algorithm, auth_data, etag, deleted FROM e2ee_backup_versions WHERE user_id = ? AND version = ? AND NOT deleted',
      [userId, version],
    );
    return r.rows[0];
  }

  /** A new version, numbered after every version the user ever had. */
  async create(userId: string, algorithm: string, authData: string): Promise<number> {
    return this.db.transaction(async (trx) => {
      // Two creations at once: the second waits for the first's number.
      await trx.raw('SELECT pg_advisory_xact_lock(hashtext(?))', [`e2ee-backup:${userId}`]);
      const r = await trx.raw(
        `INSERT INTO e2ee_backup_versions (user_id, version, algorithm, auth_data)
         SELECT ?, COALESCE(max(version), 0) + 1, ?, ? FROM e2ee_backup_versions WHERE user_id = ?
         RETURNING version`,
        [userId, algorithm, authData, userId],
      );
      return Number(r.rows[0].version);
    });
  }

  async updateAuthData(userId: string, version: number, authData: string): Promise<void> {
    await this.db.raw('UPDATE e2ee_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ? AND NOT deleted', [authData, userId, version]);
  }

  /** Marks a version deleted and drops its keys; false when there was no such version. */
  async deleteVersion(userId: string, version: number): Promise<boolean> {
    return this.db.transaction(async (trx) => {
      const r = await trx.raw('UPDATE e2ee_backup_versions SET deleted = TRUE WHERE user_id = ? AND version = ? AND NOT deleted RETURNING 1', [userId, version]);
      if (!r.rows.length) return false;
      await trx.raw('DELETE FROM e2ee_backup_keys WHERE user_id = ? AND version = ?', [userId, version]);
      return true;
    });
  }

  /**
   * Stores keys, each replacing the stored one of its session only when it is better (spec: a
   * verified key over an unverified one, then the lower first_message_index, then the lower
   * forwarded_count). Returns how many rows changed.
   */
  async putKeys(trx: Knex, userId: string, version: number, keys: BackupKey[]): Promise<number> {
    if (!keys.length) return 0;
    const r = await trx.raw(
      `INSERT INTO e2ee_backup_keys AS k (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
       SELECT ?, ?, * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::boolean[], ?::text[])
       ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
         first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
         is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data
       WHERE (EXCLUDED.is_verified AND NOT k.is_verified)
          OR (EXCLUDED.is_verified = k.is_verified AND (EXCLUDED.first_message_index < k.first_message_index
              OR (EXCLUDED.first_message_index = k.first_message_index AND EXCLUDED.forwarded_count < k.forwarded_count)))
       RETURNING 1`,
      [userId, version, keys.map((k) => k.roomId), keys.map((k) => k.sessionId), keys.map((k) => k.firstMessageIndex),
        keys.map((k) => k.forwardedCount), keys.map((k) => k.isVerified), keys.map((k) => k.sessionData)],
    );
    return r.rows.length;
  }

  async bumpEtag(trx: Knex, userId: string, version: number): Promise<void> {
    await trx.raw('UPDATE e2ee_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?', [userId, version]);
  }

  async count(userId: string, version: number, db: Knex = this.db): Promise<number> {
    const r = await db.raw('SELECT count(*)::int AS n FROM e2ee_backup_keys WHERE user_id = ? AND version = ?', [userId, version]);
    return r.rows[0].n;
  }

  async keys(userId: string, version: number, roomId?: string, sessionId?: string): Promise<BackupKeyRow[]> {
    const r = await this.db.raw(
      `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2ee_backup_keys
       WHERE user_id = ? AND version = ? AND (?::text IS NULL OR room_id = ?) AND (?::text IS NULL OR session_id = ?)`,
      [userId, version, roomId ?? null, roomId ?? null, sessionId ?? null, sessionId ?? null],
    );
    return r.rows;
  }

  async deleteKeys(trx: Knex, userId: string, version: number, roomId?: string, sessionId?: string): Promise<number> {
    const r = await trx.raw(
      `DELETE FROM e2ee_backup_keys
       WHERE user_id = ? AND version = ? AND (?::text IS NULL OR room_id = ?) AND (?::text IS NULL OR session_id = ?)`,
      [userId, version, roomId ?? null, roomId ?? null, sessionId ?? null, sessionId ?? null],
    );
    return r.rowCount ?? 0;
  }

  /** Every backup of a user (deactivation). */
  async deleteUser(userId: string): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx.raw('DELETE FROM e2ee_backup_keys WHERE user_id = ?', [userId]);
      await trx.raw('UPDATE e2ee_backup_versions SET deleted = TRUE WHERE user_id = ?', [userId]);
    });
  }
}
