import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';

/** A device's one-time-key counts per algorithm and its unused fallback-key algorithms. */
export interface DeviceKeyCounts {
  counts: Record<string, number>;
  unusedFallback: string[];
}

export interface OneTimeKey {
  algorithm: string;
  keyId: string;
  /** The key as JSON text (a string or a signed object). */
  json: string;
}

export interface ClaimRequest {
  userId: string;
  deviceId: string;
  algorithm: string;
}

export interface ClaimedKey extends ClaimRequest {
  keyId: string;
  json: string;
}

export interface SignatureRow {
  signer_user_id: string;
  signer_key_id: string;
  target_user_id: string;
  target_key_id: string;
  signature: string;
}

export interface NewSignature {
  signerUserId: string;
  signerKeyId: string;
  targetUserId: string;
  targetKeyId: string;
  signature: string;
}

/** A device-list change: whose keys changed, and (only_to) whether only one user may see it. */
export interface DeviceListChange {
  userId: string;
  onlyTo?: string;
}

/**
 * The key tables of homeserver/e2ee: device keys, one-time and fallback keys, cross-signing keys,
 * signatures, and the device-list change stream (positions of the one stream sequence).
 */
export class KeyStore {
  constructor(readonly db: Db, private tracker: StreamTracker) {}

  /**
   * Runs `write` in one transaction that takes one stream position for the device-list changes it
   * records; returns the position (undefined when `write` recorded none) once committed.
   */
  async withChanges<T>(write: (trx: Knex, record: (changes: DeviceListChange[]) => void) => Promise<T>): Promise<{ result: T; pos?: number; changes: DeviceListChange[] }> {
    const positions: number[] = [];
    const changes: DeviceListChange[] = [];
    let pos: number | undefined;
    try {
      const result = await this.db.transaction(async (trx) => {
        const out = await write(trx, (c) => changes.push(...c));
        if (changes.length) {
          pos = await this.tracker.allocate(trx);
          positions.push(pos);
          const seen = new Set<string>();
          const users: string[] = [];
          const onlyTo: Array<string | null> = [];
          for (const c of changes) {
            if (seen.has(c.userId)) continue;
            seen.add(c.userId);
            users.push(c.userId);
            onlyTo.push(c.onlyTo ?? null);
          }
          await trx.raw(
            `INSERT INTO e2ee_device_list_changes (stream_pos, user_id, only_to)
             SELECT ?, u, o FROM unnest(?::text[], ?::text[]) AS x(u, o)`,
            [pos, users, onlyTo as unknown as string[]],
          );
        }
        return out;
      });
      return { result, pos, changes };
    } finally {
      this.tracker.done(positions);
    }
  }

  // ---- device keys --------------------------------------------------------------------------

  async deviceKeyJson(userId: string, deviceId: string, db: Knex = this.db): Promise<string | undefined> {
    const r = await db.raw('SELECT key_json FROM e2ee_device_keys WHERE user_id = ? AND device_id = ?', [userId, deviceId]);
    return r.rows[0]?.key_json;
  }

  /** Stores the device's keys; false when the same keys were there already. */
  async putDeviceKeys(trx: Knex, userId: string, deviceId: string, json: string): Promise<boolean> {
    const r = await trx.raw(
      `INSERT INTO e2ee_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)
       ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json
       WHERE e2ee_device_keys.key_json <> EXCLUDED.key_json
       RETURNING 1`,
      [userId, deviceId, json],
    );
    return r.rows.length > 0;
  }

  /** Device keys of these users (all their devices), with the users' own signatures over them. */
  async deviceKeysOf(userIds: string[]): Promise<Array<{ user_id: string; device_id: string; key_json: string }>> {
    if (!userIds.length) return [];
    const r = await this.db.raw('SELECT user_id, device_id, key_json FROM e2ee_device_keys WHERE user_id = ANY(?::text[])', [userIds]);
    return r.rows;
  }

  // ---- one-time and fallback keys -----------------------------------------------------------

  /** The stored one-time keys of a device among these (algorithm, key id) pairs. */
  async existingOneTimeKeys(trx: Knex, userId: string, deviceId: string, keys: OneTimeKey[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (!keys.length) return out;
    const r = await trx.raw(
      `SELECT algorithm, key_id, key_json FROM e2ee_one_time_keys
       WHERE user_id = ? AND device_id = ? AND (algorithm, key_id) IN (SELECT * FROM unnest(?::text[], ?::text[]))`,
      [userId, deviceId, keys.map((k) => k.algorithm), keys.map((k) => k.keyId)],
    );
    for (const row of r.rows as Array<{ algorithm: string; key_id: string; key_json: string }>) out.set(`${row.algorithm}:${row.key_id}`, row.key_json);
    return out;
  }

  async insertOneTimeKeys(trx: Knex, userId: string, deviceId: string, keys: OneTimeKey[]): Promise<void> {
    if (!keys.length) return;
    await trx.raw(
      `INSERT INTO e2ee_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
       SELECT ?, ?, a, k, j FROM unnest(?::text[], ?::text[], ?::text[]) AS x(a, k, j)
       ON CONFLICT DO NOTHING`,
      [userId, deviceId, keys.map((k) => k.algorithm), keys.map((k) => k.keyId), keys.map((k) => k.json)],
    );
  }

  /** Replaces a device's fallback key of an algorithm (the same key again keeps its `used` flag). */
  async putFallbackKey(trx: Knex, userId: string, deviceId: string, key: OneTimeKey): Promise<void> {
    await trx.raw(
      `INSERT INTO e2ee_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES (?, ?, ?, ?, ?, FALSE)
       ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json, used = FALSE
       WHERE e2ee_fallback_keys.key_id <> EXCLUDED.key_id OR e2ee_fallback_keys.key_json <> EXCLUDED.key_json`,
      [userId, deviceId, key.algorithm, key.keyId, key.json],
    );
  }

  /** Unclaimed one-time keys of a device per algorithm. */
  async oneTimeKeyCounts(userId: string, deviceId: string, db: Knex = this.db): Promise<Record<string, number>> {
    const r = await db.raw(
      'SELECT algorithm, count(*)::int AS n FROM e2ee_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm',
      [userId, deviceId],
    );
    const out: Record<string, number> = {};
    for (const row of r.rows as Array<{ algorithm: string; n: number }>) out[row.algorithm] = row.n;
    return out;
  }

  /** Unclaimed one-time keys per algorithm and the algorithms of unused fallback keys, in one statement (/sync). */
  /**
   * The one-time-key counts and unused fallback-key algorithms of several devices in one
   * statement (every sync woken by one send asks in the same turn of the event loop).
   * Keyed by `userId \0 deviceId`; a device with no keys is absent.
   */
  async keyCountsMany(devices: Array<{ userId: string; deviceId: string }>): Promise<Map<string, DeviceKeyCounts>> {
    const out = new Map<string, DeviceKeyCounts>();
    if (!devices.length) return out;
    const r = await this.db.raw(
      `SELECT q.user_id, q.device_id, k.kind, k.algorithm, k.n
       FROM unnest(?::text[], ?::text[]) AS q(user_id, device_id)
       CROSS JOIN LATERAL (
         SELECT 'otk' AS kind, o.algorithm, count(*)::int AS n FROM e2ee_one_time_keys o
         WHERE o.user_id = q.user_id AND o.device_id = q.device_id GROUP BY o.algorithm
         UNION ALL
         SELECT 'fallback', f.algorithm, 0 FROM e2ee_fallback_keys f
         WHERE f.user_id = q.user_id AND f.device_id = q.device_id AND NOT f.used
       ) AS k`,
      [devices.map((d) => d.userId), devices.map((d) => d.deviceId)],
    );
    for (const row of r.rows as Array<{ user_id: string; device_id: string; kind: string; algorithm: string; n: number }>) {
      const key = `${row.user_id}\0${row.device_id}`;
      let entry = out.get(key);
      if (!entry) out.set(key, (entry = { counts: {}, unusedFallback: [] }));
      if (row.kind === 'otk') entry.counts[row.algorithm] = row.n;
      else entry.unusedFallback.push(row.algorithm);
    }
    for (const entry of out.values()) entry.unusedFallback.sort();
    return out;
  }

  /**
   * Claims one one-time key per request, in one statement: each row handed out is deleted, and a
   * row another claim holds is skipped (SKIP LOCKED), so no key ever goes to two claimers.
   */
  async claimOneTimeKeys(requests: ClaimRequest[]): Promise<ClaimedKey[]> {
    if (!requests.length) return [];
    const r = await this.db.raw(
      `WITH picked AS (
         SELECT k.user_id, k.device_id, k.algorithm, k.key_id
         FROM unnest(?::text[], ?::text[], ?::text[]) AS q(user_id, device_id, algorithm)
         CROSS JOIN LATERAL (
           SELECT o.user_id, o.device_id, o.algorithm, o.key_id FROM e2ee_one_time_keys o
           WHERE o.user_id = q.user_id AND o.device_id = q.device_id AND o.algorithm = q.algorithm
           ORDER BY o.key_id LIMIT 1 FOR UPDATE SKIP LOCKED
         ) AS k
       )
       DELETE FROM e2ee_one_time_keys o USING picked p
       WHERE o.user_id = p.user_id AND o.device_id = p.device_id AND o.algorithm = p.algorithm AND o.key_id = p.key_id
       RETURNING o.user_id, o.device_id, o.algorithm, o.key_id, o.key_json`,
      [requests.map((q) => q.userId), requests.map((q) => q.deviceId), requests.map((q) => q.algorithm)],
    );
    return r.rows.map((x: { user_id: string; device_id: string; algorithm: string; key_id: string; key_json: string }) => ({
      userId: x.user_id, deviceId: x.device_id, algorithm: x.algorithm, keyId: x.key_id, json: x.key_json,
    }));
  }

  /** The fallback keys for these requests, marked used (a fallback key may go out again). */
  async claimFallbackKeys(requests: ClaimRequest[]): Promise<ClaimedKey[]> {
    if (!requests.length) return [];
    const r = await this.db.raw(
      `UPDATE e2ee_fallback_keys f SET used = TRUE
       FROM unnest(?::text[], ?::text[], ?::text[]) AS q(user_id, device_id, algorithm)
       WHERE f.user_id = q.user_id AND f.device_id = q.device_id AND f.algorithm = q.algorithm
       RETURNING f.user_id, f.device_id, f.algorithm, f.key_id, f.key_json`,
      [requests.map((q) => q.userId), requests.map((q) => q.deviceId), requests.map((q) => q.algorithm)],
    );
    return r.rows.map((x: { user_id: string; device_id: string; algorithm: string; key_id: string; key_json: string }) => ({
      userId: x.user_id, deviceId: x.device_id, algorithm: x.algorithm, keyId: x.key_id, json: x.key_json,
    }));
  }

  // ---- cross-signing keys and signatures ----------------------------------------------------

  async crossSigningKeys(userIds: string[], db: Knex = this.db): Promise<Array<{ user_id: string; key_type: string; public_key: string; key_json: string }>> {
    if (!userIds.length) return [];
    const r = await db.raw('SELECT user_id, key_type, public_key, key_json FROM e2ee_cross_signing_keys WHERE user_id = ANY(?::text[])', [userIds]);
    return r.rows;
  }

  async putCrossSigningKey(trx: Knex, userId: string, type: string, publicKey: string, json: string): Promise<void> {
    await trx.raw(
      `INSERT INTO e2ee_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = EXCLUDED.public_key, key_json = EXCLUDED.key_json`,
      [userId, type, publicKey, json],
    );
  }

  /** Signatures over these users' keys made by the users themselves or by `viewer`. */
  async signaturesOver(targetUserIds: string[], viewer: string): Promise<SignatureRow[]> {
    if (!targetUserIds.length) return [];
    const r = await this.db.raw(
      `SELECT * FROM e2ee_signatures
       WHERE target_user_id = ANY(?::text[]) AND (signer_user_id = target_user_id OR signer_user_id = ?)`,
      [targetUserIds, viewer],
    );
    return r.rows;
  }

  async putSignatures(trx: Knex, sigs: NewSignature[]): Promise<void> {
    if (!sigs.length) return;
    await trx.raw(
      `INSERT INTO e2ee_signatures (signer_user_id, signer_key_id, target_user_id, target_key_id, signature)
       SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[])
       ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = EXCLUDED.signature`,
      [sigs.map((s) => s.signerUserId), sigs.map((s) => s.signerKeyId), sigs.map((s) => s.targetUserId), sigs.map((s) => s.targetKeyId), sigs.map((s) => s.signature)],
    );
  }

  // ---- device-list changes ------------------------------------------------------------------

  /** Users whose keys changed in (since, to] that `viewer` may hear of (room-mates are filtered by the caller). */
  async changedUsers(since: number, to: number, viewer: string): Promise<Array<{ user_id: string; only_to: string | null }>> {
    const r = await this.db.raw(
      `SELECT DISTINCT user_id, only_to FROM e2ee_device_list_changes
       WHERE stream_pos > ? AND stream_pos <= ? AND (only_to IS NULL OR only_to = ?)`,
      [since, to, viewer],
    );
    return r.rows;
  }

  // ---- removal ------------------------------------------------------------------------------

  /** Removes these devices' keys (device keys, one-time and fallback keys, signatures over them). */
  async deleteDeviceKeys(trx: Knex, userId: string, deviceIds: string[]): Promise<void> {
    await trx.raw('DELETE FROM e2ee_device_keys WHERE user_id = ? AND device_id = ANY(?::text[])', [userId, deviceIds]);
    await trx.raw('DELETE FROM e2ee_one_time_keys WHERE user_id = ? AND device_id = ANY(?::text[])', [userId, deviceIds]);
    await trx.raw('DELETE FROM e2ee_fallback_keys WHERE user_id = ? AND device_id = ANY(?::text[])', [userId, deviceIds]);
    await trx.raw('DELETE FROM e2ee_signatures WHERE target_user_id = ? AND target_key_id = ANY(?::text[])', [userId, deviceIds]);
  }

  /** Every key of a user (deactivation): devices, cross-signing keys, signatures by and over them. */
  async deleteUserKeys(trx: Knex, userId: string): Promise<void> {
    for (const table of ['e2ee_device_keys', 'e2ee_one_time_keys', 'e2ee_fallback_keys', 'e2ee_cross_signing_keys']) {
      await trx.raw(`DELETE FROM ${table} WHERE user_id = ?`, [userId]);
    }
    await trx.raw('DELETE FROM e2ee_signatures WHERE target_user_id = ? OR signer_user_id = ?', [userId, userId]);
  }
}
