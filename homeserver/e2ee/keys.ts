import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Requester } from '../http/context.ts';
import { MatrixError, invalidParam } from '../http/errors.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { verifyJsonSignature } from '../protocol/signing.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import type { ClaimRequest, DeviceKeyCounts, DeviceListChange, KeyStore, OneTimeKey, SignatureRow } from './keys-store.ts';

export type Json = Record<string, unknown>;
type Signatures = Record<string, Record<string, string>>;

/** What e2ee needs to know of a user's devices (accounts/ owns them). */
export interface DeviceDirectory {
  devices(userId: string): Promise<Array<{ device_id: string; display_name: string | null }>>;
}

/** Users whose device names keys/query looks up at once. */
const NAME_LOOKUPS_AT_ONCE = 16;

/** The failure reported for another server's users when no federation is attached. */
const NO_FEDERATION = { status: 503, message: 'Federation is not available on this server' };

/**
 * issue 11: keys of other servers' users, asked of their servers (federation/ implements it; e2ee
 * never imports federation). Each call asks one server; a failure is reported in `failures`.
 */
export interface RemoteKeys {
  query(server: string, deviceKeys: Record<string, string[]>, timeoutMs: number): Promise<Json>;
  claim(server: string, oneTimeKeys: Record<string, Record<string, string>>, timeoutMs: number): Promise<Json>;
}

/** How long keys/query and keys/claim wait for other servers unless the client says (spec default 10 s). */
const REMOTE_TIMEOUT_MS = 10_000;

/** The client's `timeout`, bounded: at least a second (0 would fail every server), at most a minute. */
const remoteTimeout = (ms: number) => Math.min(Math.max(ms, 1_000), 60_000);

/** A failed server, as Synapse reports it in `failures`. */
function remoteFailure(err: unknown): Record<string, unknown> {
  const e = err as { status?: number; message?: string };
  return { status: e.status ?? 503, message: e.message ?? 'the server could not be reached' };
}

/** Users grouped by their server. */
function byServer<T>(wanted: Record<string, T>): Map<string, Record<string, T>> {
  const out = new Map<string, Record<string, T>>();
  for (const [u, v] of Object.entries(wanted)) {
    const server = u.slice(u.indexOf(':') + 1);
    let m = out.get(server);
    if (!m) out.set(server, (m = {}));
    m[u] = v;
  }
  return out;
}

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `algorithm:key_id` → its parts; 400 when it is not of that shape. */
function splitKeyId(id: string): { algorithm: string; keyId: string } {
  const i = id.indexOf(':');
  if (i <= 0 || i === id.length - 1) throw invalidParam(`Key ID ${id} is not of the form algorithm:key_id`);
  return { algorithm: id.slice(0, i), keyId: id.slice(i + 1) };
}

/**
 * Device keys, one-time and fallback keys, cross-signing keys and signatures (spec "End-to-end
 * encryption"), and the device-list changes they make: each change takes a position of the
 * stream sequence and wakes the user and every room they are in (their room-mates' syncs).
 */
export class KeyService {
  /** issue 11: set by the composition root when federation runs. */
  remote: RemoteKeys | undefined;
  /** issue 11: a local device's keys changed or it was deleted (federation tells the servers sharing a room: m.device_list_update). */
  onLocalDeviceChange: ((change: { userId: string; deviceId: string; deleted: boolean; streamId: number }) => void) | undefined;

  constructor(
    private store: KeyStore,
    private reader: RoomReader,
    private devices: DeviceDirectory,
    private tracker: StreamTracker,
    private notifier: Notifier,
    private serverName: string,
    private log: Logger,
  ) {}

  private isLocal(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }

  /**
   * Runs a write that records device-list changes, then wakes whoever may see them: each changed
   * user and their rooms, or only the one user a private change is for. `users`: whose rooms to
   * wake (read before the write).
   */
  async writeChanges<T>(users: string[], write: (trx: Knex, record: (changes: DeviceListChange[]) => void) => Promise<T>): Promise<T> {
    // The rooms are read before the write: the wake-up goes out in the tick the position is done.
    const rooms = new Map<string, string[]>();
    await Promise.all(users.map(async (u) => rooms.set(u, await this.reader.joinedRoomIds(u))));
    const { result, pos, changes } = await this.store.withChanges(write);
    if (pos !== undefined) {
      const keys = new Set<string>();
      for (const c of changes) {
        if (c.onlyTo) keys.add(c.onlyTo);
        else for (const k of [c.userId, ...(rooms.get(c.userId) ?? [])]) keys.add(k);
      }
      this.tracker.whenVisible(pos, () => this.notifier.notify('deviceLists', keys, pos));
    }
    return result;
  }

  // ---- POST /keys/upload --------------------------------------------------------------------

  /**
   * Device keys (signed by the device's own ed25519 key, for the requester's user and device),
   * one-time keys (a key id already there with another value is refused) and fallback keys. All
   * are checked before anything is stored; one transaction stores them.
   */
  async upload(me: Requester, body: { device_keys?: Json; one_time_keys?: Json; fallback_keys?: Json }): Promise<{ one_time_key_counts: Record<string, number> }> {
    let deviceKeysJson: string | undefined;
    let ed25519: string | undefined;
    if (body.device_keys !== undefined) {
      const dk = body.device_keys;
      if (dk.user_id !== me.userId) throw invalidParam(`device_keys.user_id must be ${me.userId}`);
      if (dk.device_id !== me.deviceId) throw invalidParam(`device_keys.device_id must be ${me.deviceId}, the device of the access token`);
      if (!Array.isArray(dk.algorithms) || !dk.algorithms.every((a) => typeof a === 'string')) throw invalidParam('device_keys.algorithms must be a list of strings');
      const keys = dk.keys;
      if (!isObject(keys) || !Object.values(keys).every((v) => typeof v === 'string')) throw invalidParam('device_keys.keys must map key IDs to keys');
      ed25519 = keys[`ed25519:${me.deviceId}`] as string | undefined;
      if (!ed25519) throw invalidParam(`device_keys.keys must hold ed25519:${me.deviceId}`);
      if (!verifyJsonSignature(dk, me.userId, `ed25519:${me.deviceId}`, ed25519)) {
        throw new MatrixError(400, 'M_INVALID_SIGNATURE', "device_keys is not signed by the device's own ed25519 key");
      }
      const { unsigned: _u, ...stored } = dk;
      deviceKeysJson = canonicalJson(stored);
    }
    ed25519 ??= await this.deviceEd25519(me.userId, me.deviceId);
    const oneTime = this.checkedKeys(me, body.one_time_keys, 'one_time_keys', ed25519);
    const fallback = this.checkedKeys(me, body.fallback_keys, 'fallback_keys', ed25519);

    let keysChanged = false;
    await this.writeChanges(deviceKeysJson ? [me.userId] : [], async (trx, record) => {
      if (deviceKeysJson && (await this.store.putDeviceKeys(trx, me.userId, me.deviceId, deviceKeysJson))) { record([{ userId: me.userId }]); keysChanged = true; }
      const existing = await this.store.existingOneTimeKeys(trx, me.userId, me.deviceId, oneTime);
      for (const k of oneTime) {
        const old = existing.get(`${k.algorithm}:${k.keyId}`);
        if (old !== undefined && old !== k.json) {
          throw invalidParam(`One time key ${k.algorithm}:${k.keyId} already exists. Old key: ${old}; new key: ${k.json}`);
        }
      }
      await this.store.insertOneTimeKeys(trx, me.userId, me.deviceId, oneTime.filter((k) => !existing.has(`${k.algorithm}:${k.keyId}`)));
      for (const k of fallback) await this.store.putFallbackKey(trx, me.userId, me.deviceId, k);
    });
    if (keysChanged) this.onLocalDeviceChange?.({ userId: me.userId, deviceId: me.deviceId, deleted: false, streamId: this.tracker.current() });
    return { one_time_key_counts: withSignedCurveCount(await this.store.oneTimeKeyCounts(me.userId, me.deviceId)) };
  }

  private async deviceEd25519(userId: string, deviceId: string): Promise<string | undefined> {
    const json = await this.store.deviceKeyJson(userId, deviceId);
    if (!json) return undefined;
    const keys = (JSON.parse(json) as Json).keys as Record<string, string> | undefined;
    return keys?.[`ed25519:${deviceId}`];
  }

  /** One-time or fallback keys, checked: `algorithm:id` names, string or signed-object values (signed by the device when it is known). */
  private checkedKeys(me: Requester, keys: Json | undefined, field: string, ed25519: string | undefined): OneTimeKey[] {
    if (keys === undefined) return [];
    const out: OneTimeKey[] = [];
    for (const [id, value] of Object.entries(keys)) {
      const { algorithm, keyId } = splitKeyId(id);
      if (typeof value === 'string') {
        out.push({ algorithm, keyId, json: JSON.stringify(value) });
        continue;
      }
      if (!isObject(value) || typeof value.key !== 'string') throw invalidParam(`${field}.${id} must be a key string or an object with a key`);
      if (ed25519 !== undefined && isObject(value.signatures) && !verifyJsonSignature(value, me.userId, `ed25519:${me.deviceId}`, ed25519)) {
        throw new MatrixError(400, 'M_INVALID_SIGNATURE', `${field}.${id} is not signed by the device's ed25519 key`);
      }
      out.push({ algorithm, keyId, json: canonicalJson(value) });
    }
    return out;
  }

  // ---- POST /keys/query ---------------------------------------------------------------------

  async query(me: Requester, wanted: Record<string, string[]>, timeoutMs = REMOTE_TIMEOUT_MS): Promise<Json> {
    const remoteWanted: Record<string, string[]> = {};
    for (const [u, d] of Object.entries(wanted)) if (!this.isLocal(u)) remoteWanted[u] = d;
    const [out, remote] = await Promise.all([this.queryLocal(me.userId, wanted), this.queryRemote(remoteWanted, remoteTimeout(timeoutMs))]);
    const failures = out.failures as Json;
    Object.assign(failures, remote.failures);
    for (const field of ['device_keys', 'master_keys', 'self_signing_keys'] as const) Object.assign(out[field] as Json, remote[field]);
    return out;
  }

  /** issue 11: other servers' users, asked of their servers in parallel (federation /user/keys/query). */
  private async queryRemote(wanted: Record<string, string[]>, timeoutMs: number): Promise<Record<'failures' | 'device_keys' | 'master_keys' | 'self_signing_keys', Json>> {
    const out = { failures: {} as Json, device_keys: {} as Json, master_keys: {} as Json, self_signing_keys: {} as Json };
    await Promise.all([...byServer(wanted)].map(async ([server, users]) => {
      if (!this.remote) { out.failures[server] = NO_FEDERATION; return; }
      try {
        const res = await this.remote.query(server, users, timeoutMs);
        // Only the users asked about, and only of that server: a server speaks for its own users.
        for (const field of ['device_keys', 'master_keys', 'self_signing_keys'] as const) {
          const got = res[field];
          if (!isObject(got)) continue;
          for (const u of Object.keys(users)) if (isObject(got[u])) out[field][u] = got[u];
        }
      } catch (err) {
        out.failures[server] = remoteFailure(err);
      }
    }));
    return out;
  }

  /**
   * issue 11: keys of this server's users for another server (federation /user/keys/query): no
   * user-signing keys, no signatures visible only to one user.
   */
  queryForServer(wanted: Record<string, string[]>): Promise<Json> {
    const local: Record<string, string[]> = {};
    for (const [u, d] of Object.entries(wanted)) if (this.isLocal(u)) local[u] = d;
    return this.queryLocal(undefined, local).then(({ failures: _f, user_signing_keys: _u, ...rest }) => {
      // Device names stay on this server (Synapse's allow_device_name_lookup_over_federation: off).
      for (const devices of Object.values(rest.device_keys as Record<string, Record<string, Json>>)) {
        for (const keys of Object.values(devices)) if (isObject(keys.unsigned)) delete keys.unsigned.device_display_name;
      }
      return rest;
    });
  }

  /** issue 11: GET /_matrix/federation/v1/user/devices/{userId}: a local user's devices with their keys. */
  async devicesForServer(userId: string): Promise<Json> {
    const res = await this.queryForServer({ [userId]: [] });
    const keys = (res.device_keys as Record<string, Record<string, Json>>)[userId] ?? {};
    const devices = (await this.devices.devices(userId)).map((d) => ({ device_id: d.device_id, ...(keys[d.device_id] ? { keys: keys[d.device_id] } : {}) }));
    const out: Json = { user_id: userId, stream_id: this.tracker.current(), devices };
    const master = (res.master_keys as Json)[userId];
    const selfSigning = (res.self_signing_keys as Json)[userId];
    if (master) out.master_key = master;
    if (selfSigning) out.self_signing_key = selfSigning;
    return out;
  }

  /** issue 11: a remote user's device list changed (m.device_list_update, m.signing_key_update): room-mates re-fetch it. */
  async applyRemoteDeviceListUpdate(userId: string): Promise<void> {
    if (this.isLocal(userId)) return;
    await this.writeChanges([userId], async (_trx, record) => { record([{ userId }]); });
  }

  private async queryLocal(viewer: string | undefined, wanted: Record<string, string[]>): Promise<Json> {
    const me = { userId: viewer ?? '' };
    const deviceKeys: Record<string, Record<string, Json>> = {};
    const failures: Record<string, unknown> = {};
    const local = Object.keys(wanted).filter((u) => this.isLocal(u));
    const [rows, crossRows, sigs] = await Promise.all([
      this.store.deviceKeysOf(local),
      this.store.crossSigningKeys(local),
      this.store.signaturesOver(local, me.userId),
    ]);
    const sigIndex = indexSignatures(sigs);
    for (const u of local) deviceKeys[u] = {};
    const withKeys = new Set<string>();
    for (const r of rows) {
      const only = wanted[r.user_id]!;
      if (only.length && !only.includes(r.device_id)) continue;
      deviceKeys[r.user_id]![r.device_id] = withSignatures(JSON.parse(r.key_json), sigIndex.get(`${r.user_id}|${r.device_id}`));
      withKeys.add(r.user_id);
    }
    // Device names, as Synapse shows them to local users.
    const users = [...withKeys];
    for (let i = 0; i < users.length; i += NAME_LOOKUPS_AT_ONCE) {
      await Promise.all(users.slice(i, i + NAME_LOOKUPS_AT_ONCE).map(async (u) => {
        const names = new Map((await this.devices.devices(u)).map((d) => [d.device_id, d.display_name]));
        for (const [deviceId, keys] of Object.entries(deviceKeys[u]!)) {
          if (!names.has(deviceId)) { delete deviceKeys[u]![deviceId]; continue; }
          const name = names.get(deviceId);
          if (name) keys.unsigned = { ...(isObject(keys.unsigned) ? keys.unsigned : {}), device_display_name: name };
        }
      }));
    }
    const master: Record<string, Json> = {};
    const selfSigning: Record<string, Json> = {};
    const userSigning: Record<string, Json> = {};
    for (const r of crossRows) {
      const key = withSignatures(JSON.parse(r.key_json), sigIndex.get(`${r.user_id}|${r.public_key}`));
      if (r.key_type === 'master') master[r.user_id] = key;
      else if (r.key_type === 'self_signing') selfSigning[r.user_id] = key;
      else if (r.key_type === 'user_signing' && r.user_id === me.userId) userSigning[r.user_id] = key;
    }
    return { failures, device_keys: deviceKeys, master_keys: master, self_signing_keys: selfSigning, user_signing_keys: userSigning };
  }

  // ---- POST /keys/claim ---------------------------------------------------------------------

  async claim(wanted: Record<string, Record<string, string>>, timeoutMs = REMOTE_TIMEOUT_MS): Promise<Json> {
    const remoteWanted: Record<string, Record<string, string>> = {};
    for (const [u, d] of Object.entries(wanted)) if (!this.isLocal(u)) remoteWanted[u] = d;
    const failures: Record<string, unknown> = {};
    const remoteKeys: Record<string, unknown> = {};
    const [out] = await Promise.all([this.claimLocal(wanted), Promise.all([...byServer(remoteWanted)].map(async ([server, users]) => {
      if (!this.remote) { failures[server] = NO_FEDERATION; return; }
      try {
        const res = await this.remote.claim(server, users, remoteTimeout(timeoutMs));
        const got = isObject(res.one_time_keys) ? res.one_time_keys : {};
        for (const u of Object.keys(users)) if (isObject(got[u])) remoteKeys[u] = got[u];
      } catch (err) {
        failures[server] = remoteFailure(err);
      }
    }))]);
    Object.assign(out.one_time_keys as Json, remoteKeys);
    return { ...out, failures };
  }

  /** One-time keys (else fallback keys) of this server's users; others are skipped. */
  async claimLocal(wanted: Record<string, Record<string, string>>): Promise<Json> {
    const failures: Record<string, unknown> = {};
    const requests: ClaimRequest[] = [];
    for (const [userId, devices] of Object.entries(wanted)) {
      if (!this.isLocal(userId)) continue;
      for (const [deviceId, algorithm] of Object.entries(devices)) requests.push({ userId, deviceId, algorithm });
    }
    const claimed = await this.store.claimOneTimeKeys(requests);
    const got = new Set(claimed.map((c) => `${c.userId}|${c.deviceId}`));
    const fallback = await this.store.claimFallbackKeys(requests.filter((q) => !got.has(`${q.userId}|${q.deviceId}`)));
    const oneTimeKeys: Record<string, Record<string, Record<string, unknown>>> = {};
    for (const c of [...claimed, ...fallback]) {
      ((oneTimeKeys[c.userId] ??= {})[c.deviceId] ??= {})[`${c.algorithm}:${c.keyId}`] = JSON.parse(c.json);
    }
    return { failures, one_time_keys: oneTimeKeys };
  }

  // ---- counts for /sync ---------------------------------------------------------------------

  async counts(me: Requester): Promise<{ device_one_time_keys_count: Record<string, number>; device_unused_fallback_key_types: string[] }> {
    const { counts, unusedFallback } = (await this.batchedCounts(me.userId, me.deviceId)) ?? { counts: {}, unusedFallback: [] };
    return { device_one_time_keys_count: withSignedCurveCount(counts), device_unused_fallback_key_types: unusedFallback };
  }

  /** Count requests of this turn of the event loop, read together. */
  private countBatch: Map<string, { userId: string; deviceId: string; waiters: Array<{ resolve: (c: DeviceKeyCounts | undefined) => void; reject: (err: unknown) => void }> }> | undefined;

  /**
   * One send wakes every member's /sync in the same turn of the event loop, and each wants its
   * device's key counts: they are read together, one statement for all instead of one each.
   */
  private batchedCounts(userId: string, deviceId: string): Promise<DeviceKeyCounts | undefined> {
    return new Promise((resolve, reject) => {
      if (!this.countBatch) {
        this.countBatch = new Map();
        setImmediate(() => void this.readCountBatch());
      }
      const key = `${userId}\0${deviceId}`;
      let entry = this.countBatch.get(key);
      if (!entry) this.countBatch.set(key, (entry = { userId, deviceId, waiters: [] }));
      entry.waiters.push({ resolve, reject });
    });
  }

  private async readCountBatch(): Promise<void> {
    const batch = this.countBatch ?? new Map();
    this.countBatch = undefined;
    try {
      const counts = await this.store.keyCountsMany([...batch.values()]);
      for (const [key, entry] of batch) for (const w of entry.waiters) w.resolve(counts.get(key));
    } catch (err) {
      for (const entry of batch.values()) for (const w of entry.waiters) w.reject(err);
    }
  }

  // ---- device lists -------------------------------------------------------------------------

  /**
   * Whose device lists `me` should fetch again (changed) or may stop tracking (left) for changes
   * in (since, to]: key changes of users sharing a room with them (and their own), members of
   * rooms they joined, users who joined their rooms; left: users who share no room with them any
   * more after a leave.
   */
  async listChanges(me: Requester, joinedRoomIds: string[], since: number, to: number): Promise<{ changed: string[]; left: string[] }> {
    const [keyChanges, own, events] = await Promise.all([
      this.store.changedUsers(since, to, me.userId),
      this.reader.ownMembershipChanges(me.userId, since, to),
      this.reader.memberEventsBetween(joinedRoomIds, since, to),
    ]);
    const changed = new Set<string>();
    const maybeLeft = new Set<string>();
    const joinedNow = new Set(joinedRoomIds);
    const newlyJoined = own.filter((m) => m.membership === 'join' && joinedNow.has(m.room_id)).map((m) => m.room_id);
    const newlyLeft = own.filter((m) => m.membership !== 'join' && !joinedNow.has(m.room_id)).map((m) => m.room_id);
    for (const e of events) {
      if (e.user_id === me.userId) continue;
      if (e.membership === 'join') { changed.add(e.user_id); maybeLeft.delete(e.user_id); } else if (e.membership === 'leave' || e.membership === 'ban') maybeLeft.add(e.user_id);
    }
    const members = await this.reader.roomMembersOf([...newlyJoined, ...newlyLeft]);
    for (const r of newlyJoined) for (const u of members.get(r) ?? []) changed.add(u);
    for (const r of newlyLeft) for (const u of members.get(r) ?? []) maybeLeft.add(u);
    const keyChanged = keyChanges.filter((c) => !c.only_to).map((c) => c.user_id);
    const candidates = [...new Set([...keyChanged, ...maybeLeft])].filter((u) => u !== me.userId);
    const sharing = await this.reader.sharingARoom(me.userId, candidates);
    for (const u of keyChanged) if (u === me.userId || sharing.has(u)) changed.add(u);
    for (const c of keyChanges) if (c.only_to === me.userId) changed.add(c.user_id);
    const left: string[] = [];
    for (const u of maybeLeft) if (u !== me.userId && !sharing.has(u)) { left.push(u); changed.delete(u); }
    changed.delete(me.userId);
    if (keyChanges.some((c) => c.user_id === me.userId)) changed.add(me.userId);
    return { changed: [...changed], left };
  }

  /**
   * The device_lists, device_one_time_keys_count and device_unused_fallback_key_types of /sync
   * (and of the WebSocket's batches). Device lists are read only when the notifier saw a key change
   * or a membership change of the user or in their rooms since the token.
   */
  syncPart(): SyncPart {
    return {
      name: 'device-lists',
      stream: 'deviceLists',
      current: () => this.tracker.current(),
      read: (ctx) => this.readSync(ctx),
    };
  }

  private async readSync(ctx: SyncPartContext): Promise<SyncPartOutput> {
    const top: Record<string, unknown> = { ...(await this.counts(ctx.me)) };
    if (!ctx.since) return { top };
    // A token from before device lists had positions (0) starts from its event position.
    const since = ctx.since.deviceLists || ctx.since.events;
    const to = ctx.to.deviceLists;
    if (since >= to) return { top };
    // Key changes and membership changes both wake the stream for the user and their rooms.
    if (this.notifier.changedSince('deviceLists', [...ctx.joinedRoomIds, ctx.me.userId], since) === false) return { top };
    const lists = await this.listChanges(ctx.me, ctx.joinedRoomIds, since, to);
    if (!lists.changed.length && !lists.left.length) return { top };
    return { top: { ...top, device_lists: lists }, news: true };
  }

  /**
   * A member event was persisted (composition root: the engine's onPersisted, in the tick of the
   * engine's own notification): the room's members and the user may have device lists to fetch
   * or drop, at the event's position.
   */
  membershipChanged(roomId: string, userId: string, pos: number): void {
    this.tracker.whenVisible(pos, () => this.notifier.notify('deviceLists', [roomId, userId], pos));
  }

  // ---- removal ------------------------------------------------------------------------------

  /** Deleted devices (logout, device deletion): their keys go, their room-mates hear of it. */
  async devicesRemoved(userId: string, deviceIds: string[]): Promise<void> {
    if (!deviceIds.length) return;
    await this.writeChanges([userId], async (trx, record) => {
      await this.store.deleteDeviceKeys(trx, userId, deviceIds);
      record([{ userId }]);
    });
    for (const deviceId of deviceIds) this.onLocalDeviceChange?.({ userId, deviceId, deleted: true, streamId: this.tracker.current() });
  }

  /** A deactivated account: every key of the user goes. */
  async userDeactivated(userId: string): Promise<void> {
    await this.writeChanges([userId], async (trx, record) => {
      await this.store.deleteUserKeys(trx, userId);
      record([{ userId }]);
    });
    this.log.debug({ userId }, 'keys of a deactivated account removed');
  }
}

/** Synapse always reports signed_curve25519 (clients read a missing count as "unknown", not 0). */
function withSignedCurveCount(counts: Record<string, number>): Record<string, number> {
  return { signed_curve25519: 0, ...counts };
}

/** Signature rows by "target user|target key id". */
function indexSignatures(rows: SignatureRow[]): Map<string, SignatureRow[]> {
  const out = new Map<string, SignatureRow[]>();
  for (const r of rows) {
    const k = `${r.target_user_id}|${r.target_key_id}`;
    const list = out.get(k);
    if (list) list.push(r);
    else out.set(k, [r]);
  }
  return out;
}

function withSignatures(key: Json, rows: SignatureRow[] | undefined): Json {
  if (!rows?.length) return key;
  const signatures: Signatures = {};
  for (const [u, s] of Object.entries(isObject(key.signatures) ? (key.signatures as Signatures) : {})) signatures[u] = { ...s };
  for (const r of rows) (signatures[r.signer_user_id] ??= {})[r.signer_key_id] = r.signature;
  return { ...key, signatures };
}
