import type { Requester } from '../http/context.ts';
import { MatrixError, invalidParam, notFound } from '../http/errors.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import type { BackupKey, BackupKeyRow, BackupStore, BackupVersionRow } from './backup-store.ts';

export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: Record<string, unknown>;
}

/** The rooms → sessions → key map of PUT /room_keys/keys (all levels are brought to this shape). */
export type RoomKeys = Record<string, { sessions: Record<string, KeyBackupData> }>;

/** A backup version as the client names it: a positive integer (anything else does not exist, as Synapse). */
function parseVersion(raw: string | undefined): number | undefined {
  if (raw === undefined || !/^[1-9][0-9]{0,14}$/.test(raw)) return undefined;
  return Number(raw);
}

/**
 * Server-side key backup (spec "Server-side key backups"): versions with their auth_data, and the
 * encrypted room keys of the current version. Keys are written only to the current version
 * (M_WRONG_ROOM_KEYS_VERSION otherwise); each write of keys moves the version's etag.
 */
export class BackupService {
  constructor(private store: BackupStore) {}

  async createVersion(me: Requester, algorithm: string, authData: Record<string, unknown>): Promise<{ version: string }> {
    return { version: String(await this.store.create(me.userId, algorithm, canonicalJson(authData))) };
  }

  /** GET /room_keys/version[/{version}]: the current version, or the one named. */
  async getVersion(me: Requester, raw?: string): Promise<Record<string, unknown>> {
    let row: BackupVersionRow | undefined;
    if (raw === undefined) {
      row = await this.store.current(me.userId);
      if (!row) throw notFound('No current backup version');
    } else {
      const v = parseVersion(raw);
      row = v === undefined ? undefined : await this.store.version(me.userId, v);
      if (!row) throw notFound('Unknown backup version');
    }
    const version = Number(row.version);
    return {
      algorithm: row.algorithm,
      auth_data: JSON.parse(row.auth_data),
      count: await this.store.count(me.userId, version),
      etag: String(row.etag),
      version: String(version),
    };
  }

  /** PUT /room_keys/version/{version}: new auth_data for a version (same algorithm; a body version must match). */
  async updateVersion(me: Requester, raw: string, body: { algorithm: string; auth_data: Record<string, unknown>; version?: string }): Promise<void> {
    if (body.version !== undefined && body.version !== raw) throw invalidParam('Version in body does not match');
    const v = parseVersion(raw);
    const row = v === undefined ? undefined : await this.store.version(me.userId, v);
    if (!row) throw notFound('Unknown backup version');
    if (row.algorithm !== body.algorithm) throw invalidParam('Algorithm does not match');
    await this.store.updateAuthData(me.userId, Number(row.version), canonicalJson(body.auth_data));
  }

  /** DELETE /room_keys/version[/{version}]: the version and its keys (without a version: the current one). */
  async deleteVersion(me: Requester, raw?: string): Promise<void> {
    const v = raw === undefined ? (await this.store.current(me.userId))?.version : parseVersion(raw);
    if (v === undefined || !(await this.store.deleteVersion(me.userId, Number(v)))) throw notFound('Unknown backup version');
  }

  /** PUT /room_keys/keys…: keys of the current version; the better key of a session stays. */
  async putKeys(me: Requester, raw: string | undefined, rooms: RoomKeys): Promise<{ etag: string; count: number }> {
    const v = parseVersion(raw);
    const keys: BackupKey[] = [];
    for (const [roomId, room] of Object.entries(rooms)) {
      for (const [sessionId, k] of Object.entries(room.sessions)) {
        keys.push({ roomId, sessionId, firstMessageIndex: k.first_message_index, forwardedCount: k.forwarded_count, isVerified: k.is_verified, sessionData: canonicalJson(k.session_data) });
      }
    }
    return this.store.transaction(async (trx) => {
      // Locked: a deletion or a new version waits until these keys are in (or this write sees it).
      const current = await this.store.current(me.userId, trx, true);
      if (!current || v === undefined || Number(current.version) !== v) {
        const named = v === undefined ? undefined : await this.store.version(me.userId, v, trx);
        if (!named || !current) throw notFound('Unknown backup version');
        throw new MatrixError(403, 'M_WRONG_ROOM_KEYS_VERSION', 'Wrong backup version.', { current_version: String(current.version) });
      }
      const changed = await this.store.putKeys(trx, me.userId, v, keys);
      let etag = Number(current.etag);
      if (changed) { await this.store.bumpEtag(trx, me.userId, v); etag++; }
      return { etag: String(etag), count: await this.store.count(me.userId, v, trx) };
    });
  }

  /** GET /room_keys/keys…: all keys, a room's, or one session's (404 when that session has none). */
  async getKeys(me: Requester, raw: string | undefined, roomId?: string, sessionId?: string): Promise<Record<string, unknown>> {
    const v = await this.existing(me, raw);
    const rows = await this.store.keys(me.userId, v, roomId, sessionId);
    if (sessionId !== undefined) {
      if (!rows.length) throw notFound('No room_keys found');
      return keyData(rows[0]!) as unknown as Record<string, unknown>;
    }
    const rooms: Record<string, { sessions: Record<string, KeyBackupData> }> = {};
    for (const r of rows) (rooms[r.room_id] ??= { sessions: {} }).sessions[r.session_id] = keyData(r);
    if (roomId !== undefined) return rooms[roomId] ?? { sessions: {} };
    return { rooms };
  }

  /** DELETE /room_keys/keys…: drops keys of a version (any version that exists). */
  async deleteKeys(me: Requester, raw: string | undefined, roomId?: string, sessionId?: string): Promise<{ etag: string; count: number }> {
    const v = await this.existing(me, raw);
    return this.store.transaction(async (trx) => {
      const gone = await this.store.deleteKeys(trx, me.userId, v, roomId, sessionId);
      if (gone) await this.store.bumpEtag(trx, me.userId, v);
      const row = (await this.store.version(me.userId, v, trx))!;
      return { etag: String(row.etag), count: await this.store.count(me.userId, v, trx) };
    });
  }

  private async existing(me: Requester, raw: string | undefined): Promise<number> {
    const v = parseVersion(raw);
    const row = v === undefined ? undefined : await this.store.version(me.userId, v);
    if (!row) throw notFound('Unknown backup version');
    return Number(row.version);
  }

  userDeactivated(userId: string): Promise<void> {
    return this.store.deleteUser(userId);
  }
}

function keyData(r: BackupKeyRow): KeyBackupData {
  return {
    first_message_index: Number(r.first_message_index),
    forwarded_count: Number(r.forwarded_count),
    is_verified: r.is_verified,
    session_data: JSON.parse(r.session_data),
  };
}
