import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  generateSigningKey,
  signEvent,
  signJson,
  signingKeyFromSeed,
  verifyEventSignature,
  verifyJsonSignature,
} from '../../homeserver/protocol/signing.ts';
import { addContentHash, checkContentHash, computeContentHash } from '../../homeserver/protocol/hashes.ts';
import { ROOM_VERSIONS } from '../../homeserver/protocol/room-versions.ts';

// appendices.md "Cryptographic Test Vectors".
const SEED = 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1';
const KEY = signingKeyFromSeed('ed25519:1', SEED);
const V1 = ROOM_VERSIONS['1']!;
const V10 = ROOM_VERSIONS['10']!;
const V11 = ROOM_VERSIONS['11']!;

test('key from the test-vector seed', () => {
  assert.equal(KEY.keyId, 'ed25519:1');
  assert.equal(KEY.seed.length, 32);
  assert.equal(KEY.publicKey, 'XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI');
});

test('JSON signing vector: empty object', () => {
  assert.deepEqual(signJson({}, 'domain', KEY), {
    signatures: { domain: { 'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ' } },
  });
});

test('JSON signing vector: object with data', () => {
  assert.deepEqual(signJson({ one: 1, two: 'Two' }, 'domain', KEY), {
    one: 1,
    signatures: { domain: { 'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw' } },
    two: 'Two',
  });
});

test('signJson ignores unsigned, keeps existing signatures, does not mutate', () => {
  const input = { one: 1, two: 'Two', unsigned: { age_ts: 5 }, signatures: { other: { 'ed25519:x': 'abc' } } };
  const snapshot = structuredClone(input);
  const out = signJson(input, 'domain', KEY);
  assert.deepEqual(input, snapshot);
  assert.deepEqual(out.unsigned, { age_ts: 5 });
  assert.deepEqual(out.signatures, {
    other: { 'ed25519:x': 'abc' },
    domain: { 'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw' },
  });
});

test('verifyJsonSignature accepts valid and rejects tampered/wrong-key/missing signatures', () => {
  const signed = signJson({ one: 1, two: 'Two' }, 'domain', KEY);
  assert.equal(verifyJsonSignature(signed, 'domain', 'ed25519:1', KEY.publicKey), true);
  assert.equal(verifyJsonSignature({ ...signed, unsigned: { x: 1 } }, 'domain', 'ed25519:1', KEY.publicKey), true);
  assert.equal(verifyJsonSignature({ ...signed, two: 'Three' }, 'domain', 'ed25519:1', KEY.publicKey), false);
  assert.equal(verifyJsonSignature(signed, 'domain', 'ed25519:1', generateSigningKey().publicKey), false);
  assert.equal(verifyJsonSignature(signed, 'other', 'ed25519:1', KEY.publicKey), false);
  assert.equal(verifyJsonSignature(signed, 'domain', 'ed25519:2', KEY.publicKey), false);
  assert.equal(verifyJsonSignature(signed, 'domain', 'ed25519:1', 'not base64!'), false);
});

test('generateSigningKey: key id format and a working key pair', () => {
  const k = generateSigningKey();
  assert.match(k.keyId, /^ed25519:[A-Za-z0-9]{6}$/);
  assert.equal(generateSigningKey('a_XyZ1').keyId, 'ed25519:a_XyZ1');
  const signed = signJson({ hello: 'world' }, 'example.org', k);
  assert.equal(verifyJsonSignature(signed, 'example.org', k.keyId, k.publicKey), true);
  // round-trips through the seed
  const again = signingKeyFromSeed(k.keyId, k.seed.toString('base64'));
  assert.equal(again.publicKey, k.publicKey);
  assert.throws(() => signingKeyFromSeed('ed25519:1', 'AAAA'));
});

const MINIMAL_EVENT = {
  room_id: '!x:domain',
  sender: '@a:domain',
  origin: 'domain',
  origin_server_ts: 1000000,
  signatures: {},
  hashes: {},
  type: 'X',
  content: {},
  prev_events: [],
  auth_events: [],
  depth: 3,
  unsigned: { age_ts: 1000000 },
};

const REDACTABLE_EVENT = {
  content: { body: 'Here is the message content' },
  event_id: '$0:domain',
  origin: 'domain',
  origin_server_ts: 1000000,
  type: 'm.room.message',
  room_id: '!r:domain',
  sender: '@u:domain',
  signatures: {},
  unsigned: { age_ts: 1000000 },
};

test('event signing vector: minimal event (hash and signature)', () => {
  const hashed = addContentHash(MINIMAL_EVENT);
  assert.equal(hashed.hashes.sha256, '5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos');
  const signed = signEvent(hashed, 'domain', KEY, V1);
  assert.deepEqual(signed, {
    auth_events: [],
    content: {},
    depth: 3,
    hashes: { sha256: '5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos' },
    origin: 'domain',
    origin_server_ts: 1000000,
    prev_events: [],
    room_id: '!x:domain',
    sender: '@a:domain',
    signatures: { domain: { 'ed25519:1': 'KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg' } },
    type: 'X',
    unsigned: { age_ts: 1000000 },
  });
  // Any of v1-v10 redacts this event identically, so the vector holds for v10 too.
  assert.deepEqual(signEvent(hashed, 'domain', KEY, V10).signatures, signed.signatures);
});

test('event signing vector: redactable event (hash and signature)', () => {
  assert.equal(computeContentHash(REDACTABLE_EVENT), 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g');
  // signEvent adds the content hash itself when the event has none.
  const signed = signEvent(REDACTABLE_EVENT, 'domain', KEY, V1);
  assert.deepEqual(signed, {
    content: { body: 'Here is the message content' },
    event_id: '$0:domain',
    hashes: { sha256: 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g' },
    origin: 'domain',
    origin_server_ts: 1000000,
    type: 'm.room.message',
    room_id: '!r:domain',
    sender: '@u:domain',
    signatures: { domain: { 'ed25519:1': 'Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA' } },
    unsigned: { age_ts: 1000000 },
  });
});

test('signEvent never replaces an existing content hash', () => {
  const withHash = { ...REDACTABLE_EVENT, hashes: { sha256: 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g' }, content: { body: 'edited' } };
  assert.equal(signEvent(withHash, 'domain', KEY, V1).hashes.sha256, 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g');
});

test('event signatures cover the redacted form only', () => {
  const signed = signEvent(addContentHash(REDACTABLE_EVENT), 'domain', KEY, V10);
  assert.equal(verifyEventSignature(signed, 'domain', 'ed25519:1', KEY.publicKey, V10), true);
  // Redacting content (or dropping unsigned) keeps the signature valid...
  assert.equal(verifyEventSignature({ ...signed, content: {}, unsigned: undefined }, 'domain', 'ed25519:1', KEY.publicKey, V10), true);
  // ...but the content hash then no longer matches.
  assert.equal(checkContentHash(signed), true);
  assert.equal(checkContentHash({ ...signed, content: {} }), false);
  // Changing a protected field breaks the signature.
  assert.equal(verifyEventSignature({ ...signed, sender: '@v:domain' }, 'domain', 'ed25519:1', KEY.publicKey, V10), false);
  // v11 no longer protects `origin`, so the v10 signature does not verify under v11 rules.
  assert.equal(verifyEventSignature(signed, 'domain', 'ed25519:1', KEY.publicKey, V11), false);
});

test('checkContentHash needs a well-formed sha256 hash', () => {
  assert.equal(checkContentHash(REDACTABLE_EVENT), false);
  assert.equal(checkContentHash({ ...REDACTABLE_EVENT, hashes: { sha256: '!!' } }), false);
  assert.equal(checkContentHash({ ...REDACTABLE_EVENT, hashes: { sha256: 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g' } }), true);
  assert.equal(checkContentHash({ ...REDACTABLE_EVENT, hashes: { sha256: 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g=' } }), true);
});

test('finalizeEvent equals addContentHash + signEvent + computeEventId, for v3, v10 and v11', async () => {
  const { finalizeEvent, signEvent, signingKeyFromSeed } = await import('../../homeserver/protocol/signing.ts');
  const { addContentHash, computeEventId } = await import('../../homeserver/protocol/hashes.ts');
  const { getRoomVersion } = await import('../../homeserver/protocol/room-versions.ts');
  const key = signingKeyFromSeed('ed25519:1', 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');
  const event = {
    auth_events: ['$a'], content: { body: 'hello', msgtype: 'm.text' }, depth: 3, origin_server_ts: 1000,
    prev_events: ['$p'], room_id: '!r:domain', sender: '@u:domain', type: 'm.room.message',
  };
  for (const v of ['3', '10', '11']) {
    const version = getRoomVersion(v)!;
    const expected = signEvent(addContentHash(event), 'domain', key, version);
    const got = finalizeEvent(event, 'domain', key, version);
    assert.deepEqual(got.event, expected);
    assert.equal(got.eventId, computeEventId(expected, version));
  }
});
