import { databaseReady, type Db } from '../storage/db.ts';

/** Advisory lock that makes workers starting together agree on one signing key. */
const SIGNING_KEY_LOCK = 7271002;

export interface StoredSigningKey {
  keyId: string;
  /** base64 (unpadded) ed25519 seed. */
  seed: string;
}

/** The server's own tables (its signing keys) and the readiness probe of the database. */
export class ServerStore {
  constructor(private db: Db) {}

  /**
   * The newest signing key; when there is none, the one `make` returns is stored and returned.
   * Under a lock, so that workers starting at once all end up with the same key.
   */
  async newestSigningKeyOr(make: () => StoredSigningKey): Promise<StoredSigningKey> {
    return this.db.transaction(async (trx) => {
      await trx.raw('SELECT pg_advisory_xact_lock(?)', [SIGNING_KEY_LOCK]);
      const r = await trx.raw('SELECT key_id, seed FROM server_signing_keys WHERE expired_ts IS NULL ORDER BY created_ts DESC LIMIT 1');
      if (r.rows[0]) return { keyId: r.rows[0].key_id, seed: r.rows[0].seed };
      const key = make();
      await trx.raw('INSERT INTO server_signing_keys (key_id, seed, created_ts) VALUES (?, ?, ?)', [key.keyId, key.seed, Date.now()]);
      return key;
    });
  }

  /**
   * issue 11: makes `key` the current signing key (the key file is the source of truth): stored
   * if absent, every other key marked expired now. A key id already stored with another seed is
   * refused (the file and the database disagree about the same key).
   */
  async importSigningKey(key: StoredSigningKey): Promise<'same' | 'imported' | 'conflict'> {
    return this.db.transaction(async (trx) => {
      await trx.raw('SELECT pg_advisory_xact_lock(?)', [SIGNING_KEY_LOCK]);
      const r = await trx.raw('SELECT seed, expired_ts FROM server_signing_keys WHERE key_id = ?', [key.keyId]);
      const now = Date.now();
      let outcome: 'same' | 'imported' = 'same';
      if (r.rows[0]) {
        if (r.rows[0].seed !== key.seed) return 'conflict';
        if (r.rows[0].expired_ts !== null) {
          await trx.raw('UPDATE server_signing_keys SET expired_ts = NULL, created_ts = ? WHERE key_id = ?', [now, key.keyId]);
          outcome = 'imported';
        }
      } else {
        await trx.raw('INSERT INTO server_signing_keys (key_id, seed, created_ts) VALUES (?, ?, ?)', [key.keyId, key.seed, now]);
        outcome = 'imported';
      }
      const expired = await trx.raw('UPDATE server_signing_keys SET expired_ts = ? WHERE key_id <> ? AND expired_ts IS NULL RETURNING 1', [now, key.keyId]);
      return expired.rows.length ? 'imported' : outcome;
    });
  }

  /** issue 11: keys replaced by a newer one, published as old_verify_keys. */
  async expiredSigningKeys(): Promise<Array<{ keyId: string; seed: string; expiredTs: number }>> {
    const r = await this.db.raw('SELECT key_id, seed, expired_ts FROM server_signing_keys WHERE expired_ts IS NOT NULL ORDER BY expired_ts');
    return r.rows.map((row: { key_id: string; seed: string; expired_ts: number }) => ({ keyId: row.key_id, seed: row.seed, expiredTs: row.expired_ts }));
  }

  /** True when the database answers within `timeoutMs`. */
  ready(timeoutMs: number): Promise<boolean> {
    return databaseReady(this.db, timeoutMs);
  }
}
