import type { Requester } from '../http/context.ts';
import { MatrixError, invalidParam } from '../http/errors.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { verifyJsonSignature } from '../protocol/signing.ts';
import { isObject, type Json, type KeyService } from './keys.ts';
import type { DeviceListChange, KeyStore, NewSignature } from './keys-store.ts';

type Signatures = Record<string, Record<string, string>>;

export const CROSS_SIGNING_TYPES = ['master', 'self_signing', 'user_signing'] as const;
export type CrossSigningType = (typeof CROSS_SIGNING_TYPES)[number];

/** The object without `signatures` and `unsigned`: what a signature covers, compared for equality. */
function signedPart(obj: Json): string {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return canonicalJson(rest);
}

/**
 * Cross-signing (spec "Cross-signing"): the master, self-signing and user-signing keys of a user,
 * and the signatures uploaded over devices and master keys. Every change is a device-list change
 * (a user-signing signature one only its signer sees).
 */
export class CrossSigningService {
  constructor(private store: KeyStore, private keys: KeyService, private serverName: string) {}

  private isLocal(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }

  /**
   * Whether an upload of cross-signing keys needs user-interactive auth (spec 1.11): not when the
   * user has no master key yet, nor when every key uploaded is the one already stored.
   */
  async signingUploadNeedsAuth(me: Requester, body: { master_key?: Json; self_signing_key?: Json; user_signing_key?: Json }): Promise<boolean> {
    const stored = new Map((await this.store.crossSigningKeys([me.userId])).map((r) => [r.key_type, r.key_json]));
    if (!stored.has('master')) return false;
    return CROSS_SIGNING_TYPES.some((t) => body[`${t}_key`] !== undefined && stored.get(t) !== canonicalJson(body[`${t}_key`]));
  }

  /** POST /keys/device_signing/upload (after auth): master, self-signing and user-signing keys, checked. */
  async uploadSigningKeys(me: Requester, body: { master_key?: Json; self_signing_key?: Json; user_signing_key?: Json }): Promise<void> {
    const stored = new Map((await this.store.crossSigningKeys([me.userId])).map((r) => [r.key_type, r]));
    const upload: Array<{ type: CrossSigningType; pub: string; json: string }> = [];
    let masterPub = stored.get('master')?.public_key;
    if (body.master_key) {
      masterPub = checkCrossSigningKey(body.master_key, me.userId, 'master');
      upload.push({ type: 'master', pub: masterPub, json: canonicalJson(body.master_key) });
    }
    for (const type of ['self_signing', 'user_signing'] as const) {
      const key = body[`${type}_key`];
      if (!key) continue;
      if (!masterPub) throw new MatrixError(400, 'M_MISSING_PARAM', 'No master key available to verify signature');
      const pub = checkCrossSigningKey(key, me.userId, type);
      if (!verifyJsonSignature(key, me.userId, `ed25519:${masterPub}`, masterPub)) {
        throw new MatrixError(400, 'M_INVALID_SIGNATURE', `Invalid signature on the ${type} key`);
      }
      upload.push({ type, pub, json: canonicalJson(key) });
    }
    const fresh = upload.filter((u) => stored.get(u.type)?.key_json !== u.json);
    if (!fresh.length) return;
    const publicChange = fresh.some((u) => u.type !== 'user_signing');
    await this.keys.writeChanges([me.userId], async (trx, record) => {
      for (const u of fresh) await this.store.putCrossSigningKey(trx, me.userId, u.type, u.pub, u.json);
      record([publicChange ? { userId: me.userId } : { userId: me.userId, onlyTo: me.userId }]);
    });
    // issue 11: other servers sharing a room hear of new master / self-signing keys (m.signing_key_update).
    if (publicChange) {
      const update: Json = { user_id: me.userId };
      for (const u of fresh) if (u.type !== 'user_signing') update[`${u.type}_key`] = JSON.parse(u.json);
      this.onPublicKeysChanged?.(me.userId, update);
    }
  }

  /** issue 11: told of a local user's new master / self-signing keys (federation sends m.signing_key_update). */
  onPublicKeysChanged: ((userId: string, update: Json) => void) | undefined;

  /**
   * POST /keys/signatures/upload: the requester's self-signing key over their devices, their
   * devices over their master key, their user-signing key over others' master keys. Each signed
   * object must be the stored key (but for signatures); what fails is reported per key.
   */
  async uploadSignatures(me: Requester, body: Record<string, Record<string, unknown>>): Promise<{ failures: Record<string, Record<string, { errcode: string; error: string }>> }> {
    const failures: Record<string, Record<string, { errcode: string; error: string }>> = {};
    const fail = (u: string, k: string, errcode: string, error: string) => { (failures[u] ??= {})[k] = { errcode, error }; };
    const targets = Object.keys(body).filter((u) => this.isLocal(u));
    for (const u of Object.keys(body)) if (!this.isLocal(u)) for (const k of Object.keys(body[u] ?? {})) fail(u, k, 'M_NOT_FOUND', 'Federation is not available on this server');
    const cross = new Map<string, Map<string, { public_key: string; key_json: string }>>();
    for (const r of await this.store.crossSigningKeys([...new Set([me.userId, ...targets])])) {
      let m = cross.get(r.user_id);
      if (!m) cross.set(r.user_id, (m = new Map()));
      m.set(r.key_type, r);
    }
    const mine = cross.get(me.userId);
    const deviceRows = new Map((await this.store.deviceKeysOf([me.userId])).map((r) => [r.device_id, JSON.parse(r.key_json) as Json]));
    const sigs: NewSignature[] = [];
    const changes: DeviceListChange[] = [];
    for (const target of targets) {
      for (const [keyId, signed] of Object.entries(body[target] ?? {})) {
        if (!isObject(signed) || !isObject(signed.signatures)) { fail(target, keyId, 'M_INVALID_PARAM', 'Not a signed object'); continue; }
        const bySigner = (signed.signatures as Signatures)[me.userId];
        if (!isObject(bySigner)) { fail(target, keyId, 'M_INVALID_SIGNATURE', `No signature by ${me.userId}`); continue; }
        if (target === me.userId) {
          const master = mine?.get('master');
          if (master && keyId === master.public_key) {
            // Own devices' signatures over the master key.
            if (signedPart(signed) !== signedPart(JSON.parse(master.key_json))) { fail(target, keyId, 'M_INVALID_SIGNATURE', 'The signed object is not the stored master key'); continue; }
            let any = false;
            for (const [sigKeyId, sig] of Object.entries(bySigner)) {
              const deviceId = sigKeyId.startsWith('ed25519:') ? sigKeyId.slice(8) : undefined;
              if (!deviceId || deviceId === master.public_key) continue;
              const deviceKey = (deviceRows.get(deviceId)?.keys as Record<string, string> | undefined)?.[sigKeyId];
              if (!deviceKey || !verifyJsonSignature(signed, me.userId, sigKeyId, deviceKey)) { fail(target, keyId, 'M_INVALID_SIGNATURE', `Invalid signature ${sigKeyId}`); any = false; break; }
              sigs.push({ signerUserId: me.userId, signerKeyId: sigKeyId, targetUserId: me.userId, targetKeyId: keyId, signature: String(sig) });
              any = true;
            }
            if (any) changes.push({ userId: me.userId });
            continue;
          }
          // The self-signing key over one of the user's devices.
          const device = deviceRows.get(keyId);
          if (!device) { fail(target, keyId, 'M_NOT_FOUND', 'Unknown device or key'); continue; }
          const ssk = mine?.get('self_signing');
          if (!ssk) { fail(target, keyId, 'M_MISSING_PARAM', 'No self-signing key is uploaded'); continue; }
          if (signedPart(signed) !== signedPart(device)) { fail(target, keyId, 'M_INVALID_SIGNATURE', 'The signed object is not the stored device key'); continue; }
          const sigKeyId = `ed25519:${ssk.public_key}`;
          if (typeof bySigner[sigKeyId] !== 'string' || !verifyJsonSignature(signed, me.userId, sigKeyId, ssk.public_key)) { fail(target, keyId, 'M_INVALID_SIGNATURE', 'Invalid self-signing signature'); continue; }
          sigs.push({ signerUserId: me.userId, signerKeyId: sigKeyId, targetUserId: me.userId, targetKeyId: keyId, signature: bySigner[sigKeyId] as string });
          changes.push({ userId: me.userId });
          continue;
        }
        // The requester's user-signing key over another user's master key.
        const theirMaster = cross.get(target)?.get('master');
        if (!theirMaster || theirMaster.public_key !== keyId) { fail(target, keyId, 'M_NOT_FOUND', 'Not the master key of that user'); continue; }
        const usk = mine?.get('user_signing');
        if (!usk) { fail(target, keyId, 'M_MISSING_PARAM', 'No user-signing key is uploaded'); continue; }
        if (signedPart(signed) !== signedPart(JSON.parse(theirMaster.key_json))) { fail(target, keyId, 'M_INVALID_SIGNATURE', 'The signed object is not the stored master key'); continue; }
        const sigKeyId = `ed25519:${usk.public_key}`;
        if (typeof bySigner[sigKeyId] !== 'string' || !verifyJsonSignature(signed, me.userId, sigKeyId, usk.public_key)) { fail(target, keyId, 'M_INVALID_SIGNATURE', 'Invalid user-signing signature'); continue; }
        sigs.push({ signerUserId: me.userId, signerKeyId: sigKeyId, targetUserId: target, targetKeyId: keyId, signature: bySigner[sigKeyId] as string });
        changes.push({ userId: target, onlyTo: me.userId });
      }
    }
    if (sigs.length) {
      await this.keys.writeChanges(changes.some((c) => !c.onlyTo) ? [me.userId] : [], async (trx, record) => {
        await this.store.putSignatures(trx, sigs);
        record(changes);
      });
    }
    return { failures };
  }
}

/** Checks a cross-signing key's shape: the user's, of this usage, exactly one ed25519 key; returns it. */
function checkCrossSigningKey(key: Json, userId: string, type: CrossSigningType): string {
  if (key.user_id !== userId) throw invalidParam(`The ${type} key is not for user ${userId}`);
  if (!Array.isArray(key.usage) || !key.usage.includes(type)) throw invalidParam(`The ${type} key's usage must include ${type}`);
  const keys = key.keys;
  if (!isObject(keys) || Object.keys(keys).length !== 1) throw invalidParam(`The ${type} key must hold exactly one key`);
  const [id, pub] = Object.entries(keys)[0]!;
  if (!id.startsWith('ed25519:') || typeof pub !== 'string' || id.slice(8) !== pub) throw invalidParam(`The ${type} key must be ed25519:<public key>`);
  return pub;
}
