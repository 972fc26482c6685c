// Ed25519 JSON and event signing (appendices "Signing JSON", server-server-api "Signing Events").
import { createHash, createPrivateKey, createPublicKey, randomBytes, randomInt, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalJsonBytes } from './canonical-json.ts';
import { decodeBase64, encodeBase64 } from './base64.ts';
import { redactEvent } from './redaction.ts';
import { addContentHash } from './hashes.ts';
import type { RoomVersion } from './room-versions.ts';

export interface SigningKey {
  keyId: string; // e.g. 'ed25519:a_XyZ1'
  seed: Buffer; // 32 bytes
  publicKey: string; // unpadded base64
  sign(data: Uint8Array): Buffer;
}

// Fixed ASN.1 wrappers so raw 32-byte keys can be handed to node:crypto.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function keyFromSeed(keyId: string, seed: Buffer): SigningKey {
  if (seed.length !== 32) throw new Error(`ed25519 seed must be 32 bytes, got ${seed.length}`);
  if (!keyId.startsWith('ed25519:') || keyId.length === 'ed25519:'.length) {
    throw new Error(`invalid signing key id: ${keyId}`);
  }
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return {
    keyId,
    seed: Buffer.from(seed),
    publicKey: encodeBase64(spki.subarray(spki.length - 32)),
    sign: (data) => sign(null, data, privateKey),
  };
}

export function generateSigningKey(version?: string): SigningKey {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const v = version ?? Array.from({ length: 6 }, () => alphabet[randomInt(alphabet.length)]).join('');
  return keyFromSeed(`ed25519:${v}`, randomBytes(32));
}

export function signingKeyFromSeed(keyId: string, seedBase64: string): SigningKey {
  return keyFromSeed(keyId, decodeBase64(seedBase64));
}

/** The bytes a signature covers: canonical JSON without `signatures` and `unsigned`. */
function signedBytes(obj: Record<string, unknown>): Buffer {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return canonicalJsonBytes(rest);
}

type Signatures = Record<string, Record<string, string>>;

function withSignature<T extends Record<string, unknown>>(obj: T, existing: unknown, serverName: string, keyId: string, sig: string): T {
  const signatures: Signatures = {};
  if (existing !== null && typeof existing === 'object') {
    for (const [server, sigs] of Object.entries(existing as Signatures)) signatures[server] = { ...sigs };
  }
  signatures[serverName] = { ...signatures[serverName], [keyId]: sig };
  return { ...obj, signatures };
}

export function signJson<T extends Record<string, unknown>>(obj: T, serverName: string, key: SigningKey): T {
  const sig = encodeBase64(key.sign(signedBytes(obj)));
  return withSignature(obj, obj.signatures, serverName, key.keyId, sig);
}

function publicKeyObject(publicKeyBase64: string): KeyObject {
  const raw = decodeBase64(publicKeyBase64);
  if (raw.length !== 32) throw new Error('ed25519 public key must be 32 bytes');
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function verifyJsonSignature(obj: Record<string, unknown>, serverName: string, keyId: string, publicKeyBase64: string): boolean {
  // Only ed25519 is defined; any other algorithm counts as "no usable signature".
  if (!keyId.startsWith('ed25519:')) return false;
  const sigs = obj.signatures as Record<string, unknown> | undefined;
  const byServer = sigs && typeof sigs === 'object' ? (sigs[serverName] as Record<string, unknown> | undefined) : undefined;
  const sig = byServer && typeof byServer === 'object' ? byServer[keyId] : undefined;
  if (typeof sig !== 'string') return false;
  try {
    return verify(null, signedBytes(obj), publicKeyObject(publicKeyBase64), decodeBase64(sig));
  } catch {
    return false; // bad base64, bad key, or content that is not canonical-JSON encodable
  }
}

/** Signs the redacted event (so the signature survives redaction) and copies the signature onto
 *  the full event. If the event has no `hashes.sha256` yet, the content hash is added first so the
 *  signature covers the full content; an existing hash is never replaced, because co-signing a
 *  remote event (invites, restricted joins) must not change it (nor, from v3, its event ID). */
export function signEvent<T extends Record<string, unknown>>(event: T, serverName: string, key: SigningKey, version: RoomVersion): T {
  const hashes = event.hashes as Record<string, unknown> | undefined;
  const hashed: T = hashes && typeof hashes === 'object' && typeof hashes.sha256 === 'string' ? event : addContentHash(event);
  const sig = encodeBase64(key.sign(signedBytes(redactEvent(hashed, version))));
  return withSignature(hashed, hashed.signatures, serverName, key.keyId, sig);
}

export function verifyEventSignature(
  event: Record<string, unknown>,
  serverName: string,
  keyId: string,
  publicKeyBase64: string,
  version: RoomVersion,
): boolean {
  return verifyJsonSignature(redactEvent(event, version), serverName, keyId, publicKeyBase64);
}

/**
 * Hashes, signs and names a new event in one pass (v1/v2: the event already carries the ID its
 * server gave it, which is returned): the bytes signed — the
 * redacted event without signatures and unsigned — are exactly the bytes of the reference hash,
 * so they are made once. Same result as addContentHash, signEvent and computeEventId in turn.
 */
export function finalizeEvent<T extends Record<string, unknown>>(
  event: T,
  serverName: string,
  key: SigningKey,
  version: RoomVersion,
): { event: T & { hashes: { sha256: string }; signatures: Record<string, Record<string, string>> }; eventId: string } {
  if (version.eventIdFormat === 'v1') {
    // v1/v2: the origin server names the event (generateV1EventId) before hashing and signing;
    // the ID is part of the hashed and signed event.
    if (typeof event.event_id !== 'string') throw new Error(`room version ${version.id} events need their server-assigned event_id before signing`);
    const signed = signEvent(event, serverName, key, version);
    return { event: signed as T & { hashes: { sha256: string }; signatures: Record<string, Record<string, string>> }, eventId: event.event_id };
  }
  const hashed = addContentHash(event);
  const bytes = signedBytes(redactEvent(hashed, version));
  const sig = encodeBase64(key.sign(bytes));
  const signed = withSignature(hashed, hashed.signatures, serverName, key.keyId, sig);
  const ref = createHash('sha256').update(bytes).digest();
  const eventId = '$' + (version.eventIdFormat === 'v3' ? encodeBase64(ref) : ref.toString('base64url'));
  return { event: signed as T & { hashes: { sha256: string }; signatures: Record<string, Record<string, string>> }, eventId };
}
