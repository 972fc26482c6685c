// Two real matrix-js-sdk clients chat in the global room, in a DM and in a group, on both the
// embedded PostgreSQL and an external one: every message arrives once, in order.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MatrixClient, MatrixEvent } from 'matrix-js-sdk';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, makeClient, registerUser, waitForMessage, type Credentials } from '../helpers/client.ts';

// Both backends in the default run; TEST_BACKEND picks one (the suite's embedded pass).
const backends = [{ name: 'external PostgreSQL', embedded: false }, { name: 'embedded PostgreSQL', embedded: true }]
  .filter((b) => !process.env.TEST_BACKEND || (process.env.TEST_BACKEND === 'embedded') === b.embedded);

for (const backend of backends) {
  describe(`chat with matrix-js-sdk on ${backend.name}`, () => {
    let server: TestServer;
    let alice: Credentials;
    let bob: Credentials;
    let ca: MatrixClient;
    let cb: MatrixClient;

    before(async () => {
      server = await startServer({ embedded: backend.embedded });
      alice = await registerUser(server.baseUrl);
      bob = await registerUser(server.baseUrl);
      ca = await makeClient(server.baseUrl, alice);
      cb = await makeClient(server.baseUrl, bob);
    });

    after(async () => {
      ca?.stopClient();
      cb?.stopClient();
      await server?.stop();
    });

    const bodies = (client: MatrixClient, roomId: string, prefix: string): string[] =>
      client.getRoom(roomId)!.getLiveTimeline().getEvents()
        .filter((e: MatrixEvent) => e.getType() === 'm.room.message' && String(e.getContent().body).startsWith(prefix))
        .map((e: MatrixEvent) => String(e.getContent().body));

    async function exchange(roomId: string, prefix: string, n = 10): Promise<void> {
      // Alternate senders, each message sent only after the previous one was acknowledged.
      // As people do: each replies once the other's message has arrived, so both timelines agree.
      const expected: string[] = [];
      for (let i = 0; i < n; i++) {
        const client = i % 2 === 0 ? ca : cb;
        const body = `${prefix} ${i}`;
        if (i > 0) await waitForMessage(client, roomId, (e) => e.getContent().body === expected[i - 1]);
        await client.sendTextMessage(roomId, body);
        expected.push(body);
      }
      for (const client of [ca, cb]) {
        await waitForMessage(client, roomId, (e) => e.getContent().body === expected[n - 1]);
        assert.deepEqual(bodies(client, roomId, prefix), expected, 'every message once, in order');
      }
    }

    test('every new account is in the global room, and both can chat there', async () => {
      const global = await api(server.baseUrl, 'GET', `/_matrix/client/v3/directory/room/${encodeURIComponent('#global:localhost')}`);
      assert.equal(global.status, 200);
      const roomId = global.body.room_id as string;
      for (const c of [ca, cb]) {
        const joined = await c.getJoinedRooms();
        assert.ok(joined.joined_rooms.includes(roomId), 'joined the global room at registration');
      }
      await exchange(roomId, 'global');
    });

    test('a direct message reaches the other person, marked as direct', async () => {
      const { room_id: roomId } = await ca.createRoom({ is_direct: true, preset: 'trusted_private_chat' as never, invite: [bob.userId] });
      await ca.setAccountData('m.direct' as never, { [bob.userId]: [roomId] } as never);
      // Bob sees the invite with is_direct and joins.
      await waitForInvite(cb, roomId);
      const member = cb.getRoom(roomId)!.getMember(bob.userId)!;
      assert.equal(member.events.member?.getContent().is_direct, true);
      await cb.joinRoom(roomId);
      await exchange(roomId, 'dm');
      const direct = ca.getAccountData('m.direct' as never)?.getContent() as Record<string, string[]>;
      assert.deepEqual(direct[bob.userId], [roomId]);
    });

    test('a group: invite, join, chat, a non-member cannot post', async () => {
      const { room_id: roomId } = await ca.createRoom({ name: 'Planning', topic: 'weekly', visibility: 'private' as never, invite: [bob.userId] });
      await waitForInvite(cb, roomId);
      await cb.joinRoom(roomId);
      await exchange(roomId, 'group');
      assert.equal(cb.getRoom(roomId)!.name, 'Planning');
      const carol = await registerUser(server.baseUrl);
      const res = await api(server.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`, {
        token: carol.accessToken, body: { msgtype: 'm.text', body: 'intruder' },
      });
      assert.equal(res.status, 403);
      assert.equal(res.body.errcode, 'M_FORBIDDEN');
      // Bob leaves; Alice sees it.
      await cb.leave(roomId);
      await waitForMessage(ca, roomId, (e) => e.getType() === 'm.room.member' && e.getStateKey() === bob.userId && e.getContent().membership === 'leave');
    });

    test('history: a client paginates back through /messages', async () => {
      const { room_id: roomId } = await ca.createRoom({ name: 'History' });
      for (let i = 0; i < 30; i++) await ca.sendTextMessage(roomId, `h ${i}`);
      const res = await api(server.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100`, { token: alice.accessToken });
      assert.equal(res.status, 200);
      const got = res.body.chunk.filter((e: { type: string }) => e.type === 'm.room.message').map((e: { content: { body: string } }) => e.content.body);
      assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => `h ${29 - i}`));
    });
  });
}

async function waitForInvite(client: MatrixClient, roomId: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (client.getRoom(roomId)?.getMyMembership() === 'invite') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no invite to ${roomId} within ${timeoutMs} ms`);
}
