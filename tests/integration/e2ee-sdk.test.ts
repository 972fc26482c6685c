// Real matrix-js-sdk clients with the Rust crypto hold encrypted conversations here: a DM, a group
// of three, a late joiner, a second device restoring the key backup, a logged-out device, and a
// cross-signing bootstrap. The server stores ciphertext only.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MatrixEvent, type MatrixClient } from 'matrix-js-sdk';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, makeClient, registerUser, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';

const C = '/_matrix/client/v3';
const ENCRYPTION = { type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } };

/** Waits until `client` shows a decrypted m.room.message with this body in the room. */
async function waitForDecrypted(client: MatrixClient, roomId: string, body: string, timeoutMs = 30_000): Promise<MatrixEvent> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
    const hit = events.find((e) => e.getType() === 'm.room.message' && e.isEncrypted() && e.getContent().body === body);
    if (hit) return hit;
    if (Date.now() > end) {
      const seen = events.map((e) => `${e.getType()}${e.isDecryptionFailure() ? '(undecryptable)' : ''}`).join(', ');
      throw new Error(`${client.getUserId()} did not decrypt "${body}" in ${timeoutMs} ms; timeline: ${seen}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether `client` saw an event it could not decrypt in the room (a message it has no key for). */
function undecryptable(client: MatrixClient, roomId: string): MatrixEvent[] {
  return (client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.isDecryptionFailure());
}

async function joinedAndSeen(client: MatrixClient, roomId: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (client.getRoom(roomId)?.getMyMembership() !== 'join') {
    if (Date.now() > end) throw new Error(`${client.getUserId()} never saw itself joined to ${roomId}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('end-to-end encryption with matrix-js-sdk (Rust crypto)', () => {
  let server: TestServer;
  const users: Record<string, Credentials & { password: string }> = {};
  const clients: Record<string, MatrixClient> = {};

  before(async () => {
    server = await startServer();
    for (const name of ['alice', 'bob', 'carol']) {
      users[name] = await registerUser(server.baseUrl, `${name}${Date.now().toString(36)}`);
      clients[name] = await makeClient(server.baseUrl, users[name]!, { crypto: true });
    }
  });

  after(async () => {
    for (const c of Object.values(clients)) c.stopClient();
    await server?.stop();
  });

  async function createRoom(creator: string, invite: string[]): Promise<string> {
    const res = await api(server.baseUrl, 'POST', `${C}/createRoom`, {
      token: users[creator]!.accessToken,
      body: { preset: 'private_chat', invite: invite.map((n) => users[n]!.userId), initial_state: [ENCRYPTION], is_direct: invite.length === 1 },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const roomId = res.body.room_id as string;
    for (const n of invite) {
      const j = await api(server.baseUrl, 'POST', `${C}/rooms/${encodeURIComponent(roomId)}/join`, { token: users[n]!.accessToken, body: {} });
      assert.equal(j.status, 200, JSON.stringify(j.body));
    }
    for (const n of [creator, ...invite]) await joinedAndSeen(clients[n]!, roomId);
    return roomId;
  }

  test('an encrypted DM: each message decrypts on the other side, the server holds no plaintext', async () => {
    const roomId = await createRoom('alice', ['bob']);
    const texts = ['hello bob, this is secret', 'hi alice, secret reply', 'one more secret from alice'];
    await clients.alice!.sendTextMessage(roomId, texts[0]!);
    await waitForDecrypted(clients.bob!, roomId, texts[0]!);
    await clients.bob!.sendTextMessage(roomId, texts[1]!);
    await waitForDecrypted(clients.alice!, roomId, texts[1]!);
    await clients.alice!.sendTextMessage(roomId, texts[2]!);
    await waitForDecrypted(clients.bob!, roomId, texts[2]!);

    const db = await connectDatabase(server);
    try {
      const r = await db.query(`SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = $1`, [roomId]);
      const all = r.rows.map((x: { json: string }) => x.json).join('\n');
      for (const t of texts) assert.ok(!all.includes(t), `the stored events hold "${t}"`);
      assert.ok(r.rows.filter((x: { json: string }) => JSON.parse(x.json).type === 'm.room.encrypted').length >= 3, 'the messages are stored as m.room.encrypted');
    } finally {
      await db.end();
    }
  });

  test('an encrypted group of three: every message decrypts on every other member', async () => {
    const roomId = await createRoom('alice', ['bob', 'carol']);
    for (const sender of ['alice', 'bob', 'carol']) {
      const text = `group secret from ${sender}`;
      await clients[sender]!.sendTextMessage(roomId, text);
      for (const reader of ['alice', 'bob', 'carol'].filter((n) => n !== sender)) await waitForDecrypted(clients[reader]!, roomId, text);
    }
    for (const n of ['alice', 'bob', 'carol']) assert.deepEqual(undecryptable(clients[n]!, roomId).map((e) => e.getId()), [], `${n} has undecryptable events`);
  });

  test('a member who joins later reads the new messages, not the old ones', async () => {
    const roomId = await createRoom('alice', ['bob']);
    const { event_id: beforeId } = await clients.alice!.sendTextMessage(roomId, 'before carol came');
    await waitForDecrypted(clients.bob!, roomId, 'before carol came');
    const inv = await api(server.baseUrl, 'POST', `${C}/rooms/${encodeURIComponent(roomId)}/invite`, { token: users.alice!.accessToken, body: { user_id: users.carol!.userId } });
    assert.equal(inv.status, 200, JSON.stringify(inv.body));
    const j = await api(server.baseUrl, 'POST', `${C}/rooms/${encodeURIComponent(roomId)}/join`, { token: users.carol!.accessToken, body: {} });
    assert.equal(j.status, 200, JSON.stringify(j.body));
    await joinedAndSeen(clients.carol!, roomId);
    // Alice's client hears of carol's devices through device_lists and shares the new session with her.
    await clients.alice!.sendTextMessage(roomId, 'after carol came');
    await waitForDecrypted(clients.carol!, roomId, 'after carol came');
    await waitForDecrypted(clients.bob!, roomId, 'after carol came');
    // History is shared, so carol may fetch the old event: as ciphertext she has no key for.
    const raw = await api(server.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(beforeId)}`, { token: users.carol!.accessToken });
    assert.equal(raw.status, 200, JSON.stringify(raw.body));
    assert.equal(raw.body.type, 'm.room.encrypted');
    const old = new MatrixEvent(raw.body);
    await clients.carol!.decryptEventIfNeeded(old);
    assert.equal(old.isDecryptionFailure(), true, 'carol must not read what was said before she joined');
    assert.notEqual(old.getContent().body, 'before carol came');
  });

  test('a cross-signing bootstrap succeeds and the others see the master key', async () => {
    const crypto = clients.alice!.getCrypto()!;
    await crypto.bootstrapCrossSigning({
      authUploadDeviceSigningKeys: async (makeRequest) => {
        await makeRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: users.alice!.userId }, password: users.alice!.password } as never);
      },
    });
    assert.equal(await crypto.isCrossSigningReady(), true);
    // The signature over the device comes back through device_lists (own user changed) and keys/query.
    const end = Date.now() + 20_000;
    while (!(await crypto.getDeviceVerificationStatus(users.alice!.userId, users.alice!.deviceId))?.crossSigningVerified) {
      assert.ok(Date.now() < end, "alice's device never showed as signed by her self-signing key");
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(await clients.bob!.getCrypto()!.userHasCrossSigningKeys(users.alice!.userId, true), true);
  });

  test('a second device of a user restores the key backup and reads the history', async () => {
    const roomId = await createRoom('alice', ['bob']);
    const crypto = clients.alice!.getCrypto()!;
    await crypto.resetKeyBackup();
    const version = await crypto.getActiveSessionBackupVersion();
    assert.ok(version, 'a backup version is active');
    const history = ['history one', 'history two'];
    for (const t of history) {
      await clients.alice!.sendTextMessage(roomId, t);
      await waitForDecrypted(clients.bob!, roomId, t);
    }
    // The keys reach the backup in the background: wait until the room's session is there.
    const end = Date.now() + 30_000;
    for (;;) {
      const res = await api(server.baseUrl, 'GET', `${C}/room_keys/keys/${encodeURIComponent(roomId)}?version=${version}`, { token: users.alice!.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      if (Object.keys(res.body.sessions).length > 0) break;
      assert.ok(Date.now() < end, 'the room key never reached the backup');
      await new Promise((r) => setTimeout(r, 200));
    }
    const login = await api(server.baseUrl, 'POST', `${C}/login`, {
      body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: users.alice!.userId }, password: users.alice!.password, initial_device_display_name: 'second' },
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const second = await makeClient(server.baseUrl, { userId: login.body.user_id, accessToken: login.body.access_token, deviceId: login.body.device_id }, { crypto: true });
    clients.aliceSecond = second;
    await joinedAndSeen(second, roomId);
    const key = await crypto.getSessionBackupPrivateKey();
    assert.ok(key, 'the first device holds the backup key');
    await second.getCrypto()!.storeSessionBackupPrivateKey(key, version);
    const restored = await second.getCrypto()!.restoreKeyBackup();
    assert.ok(restored.imported >= 1, `imported ${restored.imported} keys`);
    for (const t of history) await waitForDecrypted(second, roomId, t);
  });

  test('a device that logged out stops receiving room keys', async () => {
    const roomId = await createRoom('alice', ['bob']);
    const login = await api(server.baseUrl, 'POST', `${C}/login`, {
      body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: users.bob!.userId }, password: users.bob!.password, initial_device_display_name: 'bob two' },
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const bob2creds = { userId: login.body.user_id, accessToken: login.body.access_token, deviceId: login.body.device_id };
    const bob2 = await makeClient(server.baseUrl, bob2creds, { crypto: true });
    await joinedAndSeen(bob2, roomId);
    // Alice learns of bob's new device through device_lists, and shares her next session with it.
    const hasDevice = async (present: boolean) => {
      const end = Date.now() + 20_000;
      for (;;) {
        const devices = await clients.alice!.getCrypto()!.getUserDeviceInfo([users.bob!.userId]);
        if (devices.get(users.bob!.userId)?.has(bob2creds.deviceId) === present) return;
        assert.ok(Date.now() < end, `alice never saw bob's second device ${present ? 'appear' : 'go'}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    await hasDevice(true);
    await clients.alice!.sendTextMessage(roomId, 'for both of bob\'s devices');
    await waitForDecrypted(bob2, roomId, "for both of bob's devices");
    bob2.stopClient();
    const out = await api(server.baseUrl, 'POST', `${C}/logout`, { token: bob2creds.accessToken, body: {} });
    assert.equal(out.status, 200);
    await hasDevice(false);
    await clients.alice!.sendTextMessage(roomId, 'only for bob\'s first device');
    await waitForDecrypted(clients.bob!, roomId, "only for bob's first device");
    const db = await connectDatabase(server);
    try {
      const pending = await db.query('SELECT count(*)::int AS n FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2', [users.bob!.userId, bob2creds.deviceId]);
      assert.equal(pending.rows[0].n, 0, 'nothing waits for the logged-out device');
      const keys = await db.query('SELECT count(*)::int AS n FROM e2ee_device_keys WHERE user_id = $1 AND device_id = $2', [users.bob!.userId, bob2creds.deviceId]);
      assert.equal(keys.rows[0].n, 0, "the logged-out device's keys are gone");
    } finally {
      await db.end();
    }
  });
});
