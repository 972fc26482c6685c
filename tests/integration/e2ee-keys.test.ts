// The key endpoints over raw HTTP, at their edges: uploads that are refused leave nothing stored,
// a one-time key goes out once (then the fallback key), device-list changes reach room-mates in
// /sync and /keys/changes, cross-signing keys ask for user-interactive auth only to be replaced.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { generateSigningKey, signJson, signingKeyFromSeed, type SigningKey } from '../../homeserver/protocol/signing.ts';

const C = '/_matrix/client/v3';
type User = Credentials & { password: string };

/** A device's identity: its ed25519 key (key id ed25519:<device>) and its signed device keys. */
function deviceIdentity(who: Credentials, deviceId = who.deviceId): { key: SigningKey; deviceKeys: Record<string, unknown> } {
  const key = generateSigningKey(deviceId);
  const deviceKeys = signJson({
    user_id: who.userId, device_id: deviceId,
    algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`ed25519:${deviceId}`]: key.publicKey, [`curve25519:${deviceId}`]: randomBytes(32).toString('base64').replace(/=+$/, '') },
  }, who.userId, key);
  return { key, deviceKeys };
}

function signedKey(who: Credentials, key: SigningKey, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return signJson({ key: randomBytes(32).toString('base64').replace(/=+$/, ''), ...extra }, who.userId, key);
}

/** A cross-signing key pair whose key id is ed25519:<public key>. */
function crossSigningKey(): SigningKey {
  const k = generateSigningKey();
  return signingKeyFromSeed(`ed25519:${k.publicKey}`, k.seed.toString('base64'));
}

describe('e2ee keys over HTTP', () => {
  let server: TestServer;
  const call = (method: string, path: string, token?: string, body?: unknown) => api(server.baseUrl, method, path, { token, body });

  // No auto-joined room: who shares a room with whom is up to each test.
  before(async () => { server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } }); });
  after(async () => { await server?.stop(); });

  async function counts(who: Credentials): Promise<{ otk: Record<string, number>; fallback: string[] }> {
    const s = await call('GET', `${C}/sync?timeout=0`, who.accessToken);
    assert.equal(s.status, 200);
    return { otk: s.body.device_one_time_keys_count, fallback: s.body.device_unused_fallback_key_types };
  }

  /** Incremental syncs from `since` until one carries device_lists (what a client does); that response. */
  async function syncUntilLists(who: Credentials, since: string): Promise<any> {
    const end = Date.now() + 20_000;
    for (;;) {
      const r = await call('GET', `${C}/sync?timeout=5000&since=${encodeURIComponent(since)}`, who.accessToken);
      assert.equal(r.status, 200);
      if (r.body.device_lists) return r.body;
      assert.ok(Date.now() < end, 'no device_lists in 20 s');
      since = r.body.next_batch;
    }
  }

  async function queryDevices(asker: Credentials, of: string): Promise<Record<string, any>> {
    const q = await call('POST', `${C}/keys/query`, asker.accessToken, { device_keys: { [of]: [] } });
    assert.equal(q.status, 200, JSON.stringify(q.body));
    return q.body.device_keys[of];
  }

  test('device keys for another device, another user or badly signed: 400, nothing stored', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const otherDevice = deviceIdentity(alice, 'NOTMINE');
    const otks = (key: SigningKey) => ({ 'signed_curve25519:AAAA': signedKey(alice, key) });
    let r = await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: otherDevice.deviceKeys, one_time_keys: otks(otherDevice.key) });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    const bobs = deviceIdentity(bob);
    r = await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: bobs.deviceKeys });
    assert.equal(r.status, 400);
    // Signed by some other key than the device's own.
    const mine = deviceIdentity(alice);
    const forged = signJson({ ...(mine.deviceKeys as object), signatures: undefined }, alice.userId, generateSigningKey(alice.deviceId));
    r = await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: forged, one_time_keys: otks(mine.key) });
    assert.equal(r.status, 400);
    assert.equal(r.body.errcode, 'M_INVALID_SIGNATURE');
    // Not signed at all.
    const { signatures: _s, ...unsigned } = mine.deviceKeys;
    r = await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: unsigned });
    assert.equal(r.status, 400);
    assert.deepEqual(await queryDevices(bob, alice.userId), {}, 'no device keys were stored');
    assert.deepEqual((await counts(alice)).otk, { signed_curve25519: 0 }, 'no one-time key was stored');

    r = await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: mine.deviceKeys, one_time_keys: otks(mine.key) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body.one_time_key_counts, { signed_curve25519: 1 });
    const devices = await queryDevices(bob, alice.userId);
    assert.deepEqual(Object.keys(devices), [alice.deviceId]);
    assert.equal(devices[alice.deviceId].keys[`ed25519:${alice.deviceId}`], mine.key.publicKey);
    assert.equal(devices[alice.deviceId].unsigned.device_display_name, 'test');
    // A one-time key signed by another key is refused too.
    r = await call('POST', `${C}/keys/upload`, alice.accessToken, { one_time_keys: { 'signed_curve25519:BBBB': signedKey(alice, generateSigningKey(alice.deviceId)) } });
    assert.equal(r.status, 400);
    assert.deepEqual((await counts(alice)).otk, { signed_curve25519: 1 });
  });

  test('a one-time key uploaded again: the same value is fine, another is refused with nothing stored', async () => {
    const alice = await registerUser(server.baseUrl);
    const { key, deviceKeys } = deviceIdentity(alice);
    const k1 = signedKey(alice, key);
    assert.equal((await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: deviceKeys, one_time_keys: { 'signed_curve25519:K1': k1 } })).status, 200);
    const again = await call('POST', `${C}/keys/upload`, alice.accessToken, { one_time_keys: { 'signed_curve25519:K1': k1 } });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body.one_time_key_counts, { signed_curve25519: 1 });
    const clash = await call('POST', `${C}/keys/upload`, alice.accessToken, { one_time_keys: { 'signed_curve25519:K1': signedKey(alice, key), 'signed_curve25519:K2': signedKey(alice, key) } });
    assert.equal(clash.status, 400, JSON.stringify(clash.body));
    assert.deepEqual((await counts(alice)).otk, { signed_curve25519: 1 }, 'K2 of the refused upload was not stored');
  });

  test('double claim: each one-time key goes to one claimer, then the fallback key (marked used)', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const { key, deviceKeys } = deviceIdentity(alice);
    const otks: Record<string, unknown> = {};
    for (let i = 0; i < 10; i++) otks[`signed_curve25519:OTK${i}`] = signedKey(alice, key);
    const fallback = signedKey(alice, key, { fallback: true });
    const up = await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: deviceKeys, one_time_keys: otks, fallback_keys: { 'signed_curve25519:FB': fallback } });
    assert.equal(up.status, 200);
    assert.deepEqual(await counts(alice), { otk: { signed_curve25519: 10 }, fallback: ['signed_curve25519'] });
    // 25 claims at once for 10 keys.
    const claims = await Promise.all(Array.from({ length: 25 }, () =>
      call('POST', `${C}/keys/claim`, bob.accessToken, { one_time_keys: { [alice.userId]: { [alice.deviceId]: 'signed_curve25519' } } })));
    const got = claims.map((c) => {
      assert.equal(c.status, 200, JSON.stringify(c.body));
      const keys = c.body.one_time_keys[alice.userId][alice.deviceId] as Record<string, unknown>;
      assert.equal(Object.keys(keys).length, 1);
      return Object.keys(keys)[0]!;
    });
    const oneTime = got.filter((k) => k !== 'signed_curve25519:FB');
    assert.equal(new Set(oneTime).size, oneTime.length, 'no one-time key handed out twice');
    assert.deepEqual(oneTime.sort(), Object.keys(otks).sort(), 'every one-time key handed out');
    assert.equal(got.filter((k) => k === 'signed_curve25519:FB').length, 15, 'then the fallback key');
    const fb = claims.find((c) => c.body.one_time_keys[alice.userId][alice.deviceId]['signed_curve25519:FB'])!;
    assert.deepEqual(fb.body.one_time_keys[alice.userId][alice.deviceId]['signed_curve25519:FB'], fallback);
    assert.deepEqual(await counts(alice), { otk: { signed_curve25519: 0 }, fallback: [] }, 'the fallback key is used');
    // A new fallback key is unused again; unknown devices and remote users are simply absent or failures.
    await call('POST', `${C}/keys/upload`, alice.accessToken, { fallback_keys: { 'signed_curve25519:FB2': signedKey(alice, key, { fallback: true }) } });
    assert.deepEqual((await counts(alice)).fallback, ['signed_curve25519']);
    const odd = await call('POST', `${C}/keys/claim`, bob.accessToken, { one_time_keys: { [alice.userId]: { NOSUCH: 'signed_curve25519' }, '@x:elsewhere.example': { D: 'signed_curve25519' } } });
    assert.equal(odd.status, 200);
    assert.deepEqual(odd.body.one_time_keys, {});
    assert.ok(odd.body.failures['elsewhere.example'], 'the remote server is a failure');
  });

  test('device-list changes reach room-mates in /sync and /keys/changes; leaving the last shared room is `left`', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const loner = await registerUser(server.baseUrl);
    const room = (await call('POST', `${C}/createRoom`, alice.accessToken, { preset: 'private_chat', invite: [bob.userId] })).body.room_id;
    assert.equal((await call('POST', `${C}/rooms/${encodeURIComponent(room)}/join`, bob.accessToken, {})).status, 200);
    const start = (await call('GET', `${C}/sync?timeout=0`, bob.accessToken)).body.next_batch;
    const lonerStart = (await call('GET', `${C}/sync?timeout=0`, loner.accessToken)).body.next_batch;
    // Bob's long-polls wake up for alice's new keys.
    const poll = syncUntilLists(bob, start);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: deviceIdentity(alice).deviceKeys })).status, 200);
    const woke = { body: await poll };
    assert.deepEqual(woke.body.device_lists.changed, [alice.userId]);
    const changes = await call('GET', `${C}/keys/changes?from=${start}&to=${woke.body.next_batch}`, bob.accessToken);
    assert.equal(changes.status, 200);
    assert.deepEqual(changes.body.changed, [alice.userId]);
    const lonely = await call('GET', `${C}/sync?timeout=0&since=${lonerStart}`, loner.accessToken);
    assert.equal(lonely.body.device_lists, undefined, 'a user sharing no room hears nothing');

    // A device deleted: its keys go, room-mates hear of it.
    const login = await call('POST', `${C}/login`, undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.userId }, password: (alice as User).password });
    const second = { userId: alice.userId, accessToken: login.body.access_token, deviceId: login.body.device_id };
    assert.equal((await call('POST', `${C}/keys/upload`, second.accessToken, { device_keys: deviceIdentity(second).deviceKeys })).status, 200);
    assert.deepEqual(Object.keys(await queryDevices(bob, alice.userId)).sort(), [alice.deviceId, second.deviceId].sort());
    const before = (await call('GET', `${C}/sync?timeout=0&since=${woke.body.next_batch}`, bob.accessToken)).body.next_batch;
    assert.equal((await call('POST', `${C}/logout`, second.accessToken, {})).status, 200);
    const afterLogout = { body: await syncUntilLists(bob, before) };
    assert.deepEqual(afterLogout.body.device_lists.changed, [alice.userId]);
    assert.deepEqual(Object.keys(await queryDevices(bob, alice.userId)), [alice.deviceId], "the logged-out device's keys are gone");

    // Alice leaves the only room they share: she is `left` for bob.
    assert.equal((await call('POST', `${C}/rooms/${encodeURIComponent(room)}/leave`, alice.accessToken, {})).status, 200);
    const left = { body: await syncUntilLists(bob, afterLogout.body.next_batch) };
    assert.deepEqual(left.body.device_lists.left, [alice.userId]);
    assert.ok(!left.body.device_lists.changed.includes(alice.userId));
  });

  test('a new member is `changed` for the members, and the members for the new member', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const room = (await call('POST', `${C}/createRoom`, alice.accessToken, { preset: 'public_chat' })).body.room_id;
    const aliceStart = (await call('GET', `${C}/sync?timeout=0`, alice.accessToken)).body.next_batch;
    const bobStart = (await call('GET', `${C}/sync?timeout=0`, bob.accessToken)).body.next_batch;
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(room)}`, bob.accessToken, {})).status, 200);
    const a = await syncUntilLists(alice, aliceStart);
    assert.ok(a.device_lists.changed.includes(bob.userId), JSON.stringify(a.device_lists));
    const b = await syncUntilLists(bob, bobStart);
    assert.ok(b.device_lists.changed.includes(alice.userId), JSON.stringify(b.device_lists));
  });

  test('cross-signing: the first upload needs no auth, the same keys again neither, new ones do; signatures are checked', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const device = deviceIdentity(alice);
    assert.equal((await call('POST', `${C}/keys/upload`, alice.accessToken, { device_keys: device.deviceKeys })).status, 200);
    const keysFor = (who: Credentials) => {
      const master = crossSigningKey();
      const ssk = crossSigningKey();
      const usk = crossSigningKey();
      const masterKey = signJson({ user_id: who.userId, usage: ['master'], keys: { [master.keyId]: master.publicKey } }, who.userId, device.key);
      return {
        master, ssk, usk,
        body: {
          master_key: masterKey,
          self_signing_key: signJson({ user_id: who.userId, usage: ['self_signing'], keys: { [ssk.keyId]: ssk.publicKey } }, who.userId, master),
          user_signing_key: signJson({ user_id: who.userId, usage: ['user_signing'], keys: { [usk.keyId]: usk.publicKey } }, who.userId, master),
        },
      };
    };
    const first = keysFor(alice);
    // A self-signing key not signed by the master key is refused.
    const bad = await call('POST', `${C}/keys/device_signing/upload`, alice.accessToken, {
      ...first.body, self_signing_key: signJson({ user_id: alice.userId, usage: ['self_signing'], keys: { [first.ssk.keyId]: first.ssk.publicKey } }, alice.userId, first.ssk),
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, 'M_INVALID_SIGNATURE');
    assert.equal((await call('POST', `${C}/keys/device_signing/upload`, alice.accessToken, first.body)).status, 200, 'the first upload needs no auth');
    assert.equal((await call('POST', `${C}/keys/device_signing/upload`, alice.accessToken, first.body)).status, 200, 'the same keys again need no auth');
    const second = keysFor(alice);
    const challenge = await call('POST', `${C}/keys/device_signing/upload`, alice.accessToken, second.body);
    assert.equal(challenge.status, 401);
    assert.deepEqual(challenge.body.flows, [{ stages: ['m.login.password'] }]);
    let q = await call('POST', `${C}/keys/query`, bob.accessToken, { device_keys: { [alice.userId]: [] } });
    assert.deepEqual(q.body.master_keys[alice.userId].keys, first.body.master_key.keys, 'nothing replaced without auth');
    const authed = await call('POST', `${C}/keys/device_signing/upload`, alice.accessToken, {
      ...second.body, auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.userId }, password: (alice as User).password, session: challenge.body.session },
    });
    assert.equal(authed.status, 200, JSON.stringify(authed.body));
    q = await call('POST', `${C}/keys/query`, bob.accessToken, { device_keys: { [alice.userId]: [] } });
    assert.deepEqual(q.body.master_keys[alice.userId].keys, second.body.master_key.keys);
    assert.ok(q.body.self_signing_keys[alice.userId]);
    assert.equal(q.body.user_signing_keys[alice.userId], undefined, 'the user-signing key only to its owner');
    const own = await call('POST', `${C}/keys/query`, alice.accessToken, { device_keys: { [alice.userId]: [] } });
    assert.ok(own.body.user_signing_keys[alice.userId]);

    // Signatures: the self-signing key over the device is kept; a forged one is a failure.
    const { signatures: _s, unsigned: _u, ...plain } = device.deviceKeys as Record<string, unknown>;
    const signedDevice = signJson(plain, alice.userId, second.ssk);
    const forged = signJson(plain, alice.userId, signingKeyFromSeed(second.ssk.keyId, generateSigningKey().seed.toString('base64')));
    let up = await call('POST', `${C}/keys/signatures/upload`, alice.accessToken, { [alice.userId]: { [alice.deviceId]: forged } });
    assert.equal(up.status, 200);
    assert.equal(up.body.failures[alice.userId][alice.deviceId].errcode, 'M_INVALID_SIGNATURE');
    up = await call('POST', `${C}/keys/signatures/upload`, alice.accessToken, { [alice.userId]: { [alice.deviceId]: signedDevice, NOSUCHDEVICE: signedDevice } });
    assert.equal(up.status, 200);
    assert.deepEqual(Object.keys(up.body.failures[alice.userId]), ['NOSUCHDEVICE']);
    q = await call('POST', `${C}/keys/query`, bob.accessToken, { device_keys: { [alice.userId]: [] } });
    assert.equal(q.body.device_keys[alice.userId][alice.deviceId].signatures[alice.userId][second.ssk.keyId], (signedDevice.signatures as any)[alice.userId][second.ssk.keyId]);
    // A remote user is a failure of keys/query.
    q = await call('POST', `${C}/keys/query`, bob.accessToken, { device_keys: { '@someone:remote.example': [] } });
    assert.ok(q.body.failures['remote.example']);
  });
});
