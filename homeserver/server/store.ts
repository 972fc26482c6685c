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
      const r = await trx.raw('SELECT key_id, seed FROM server_signing_keys ORDER BY created_ts DESC LIMIT 1');
      if (r.rows[0]) return { keyId: r.rows[0].key_id, seed: r.rows[0].seed };
      const key = make();
      await trx.raw('INSERT INTO server_signing_keys (key_id, seed, created_ts) VALUES (?, ?, ?)', [key.keyId, key.seed, Date.now()]);
      return key;
    });
  }

  /** True when the database answers within `timeoutMs`. */
  ready(timeoutMs: number): Promise<boolean> {
    return databaseReady(this.db, timeoutMs);
  }
}
