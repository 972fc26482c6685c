import type { Db } from '../homeserver/storage/db.ts';

export interface StoredServerKey {
  serverName: string;
  keyId: string;
  publicKey: string;
  validUntilTs: number;
  expiredTs: number | null;
  responseJson: string;
}

/** Other servers' signing keys (federation_server_keys), as fetched, with their validity. */
export class ServerKeyStore {
  constructor(private db: Db) {}

  async get(serverName: string, keyId: string): Promise<StoredServerKey | undefined> {
    const r = await this.db.raw('SELECT * FROM federation_server_keys WHERE server_name = ? AND key_id = ?', [serverName, keyId]);
    return r.rows[0] ? toKey(r.rows[0]) : undefined;
  }

  async ofServer(serverName: string): Promise<StoredServerKey[]> {
    const r = await this.db.raw('SELECT * FROM federation_server_keys WHERE server_name = ? ORDER BY key_id', [serverName]);
    return r.rows.map(toKey);
  }

  /**
   * Stores the keys of one verified response in one transaction. A key already known with a later
   * validity keeps it (an older response, relayed by a notary, cannot shorten or resurrect it).
   */
  async put(keys: StoredServerKey[], now: number): Promise<void> {
    if (!keys.length) return;
    await this.db.transaction(async (trx) => {
      for (const k of keys) {
        await trx.raw(
          `INSERT INTO federation_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, response_json, fetched_ts)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (server_name, key_id) DO UPDATE SET
             public_key = EXCLUDED.public_key, valid_until_ts = EXCLUDED.valid_until_ts, expired_ts = EXCLUDED.expired_ts,
             response_json = EXCLUDED.response_json, fetched_ts = EXCLUDED.fetched_ts
           WHERE federation_server_keys.valid_until_ts <= EXCLUDED.valid_until_ts`,
          [k.serverName, k.keyId, k.publicKey, k.validUntilTs, k.expiredTs, k.responseJson, now],
        );
      }
    });
  }
}

function toKey(row: Record<string, unknown>): StoredServerKey {
  return {
    serverName: row.server_name as string,
    keyId: row.key_id as string,
    publicKey: row.public_key as string,
    validUntilTs: Number(row.valid_until_ts),
    expiredTs: row.expired_ts === null ? null : Number(row.expired_ts),
    responseJson: row.response_json as string,
  };
}
