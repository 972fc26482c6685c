import type { Db } from '../storage/db.ts';
import { encodeBase64 } from '../protocol/base64.ts';
import { generateSigningKey, signingKeyFromSeed, type SigningKey } from '../protocol/signing.ts';

/** The server's ed25519 signing key: made on first start, kept in the database for every worker. */
export async function loadOrCreateSigningKey(db: Db): Promise<SigningKey> {
  return db.transaction(async (trx) => {
    await trx.raw('SELECT pg_advisory_xact_lock(7271002)');
    const r = await trx.raw('SELECT key_id, seed FROM server_signing_keys ORDER BY created_ts DESC LIMIT 1');
    if (r.rows[0]) return signingKeyFromSeed(r.rows[0].key_id, r.rows[0].seed);
    const key = generateSigningKey();
    await trx.raw('INSERT INTO server_signing_keys (key_id, seed, created_ts) VALUES (?, ?, ?)', [key.keyId, encodeBase64(key.seed), Date.now()]);
    return key;
  });
}
