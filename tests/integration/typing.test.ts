// Typing: PUT /rooms/{roomId}/typing/{userId}, m.typing in /sync's ephemeral events to the room's
// members only, expiry without a request, matrix-js-sdk's own events; in process and on Redis,
// and across two workers sharing one Redis.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomMemberEvent, type MatrixClient } from 'matrix-js-sdk';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, makeClient, registerUser, roomApi, stopClients, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
/** No auto-joined room: users share a room only when a test makes them. */
const ENV = { AUTO_JOIN_ROOMS: '' };

type Sync = { next_batch: string; rooms: { join: Record<string, any> } };

/** The m.typing user list of a room in a sync response (undefined: no m.typing for it). */
function typingIn(res: Sync, roomId: string): string[] | undefined {
  const ev = res.rooms.join[roomId]?.ephemeral?.events?.find((e: any) => e.type === 'm.typing');
  return ev?.content.user_ids;
}

function suite(name: string, redis: boolean): void {
  describe(`typing (${name})`, () => {
    let server: TestServer;
    let alice: Credentials;
    let bob: Credentials;
    let eve: Credentials;
    const { call, room, create } = roomApi(() => server.baseUrl);
    const sync = async (who: Credentials, query = '') => {
      const res = await call('GET', `${C}/sync?${query}`, { token: who.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body as Sync;
    };
    const type = (who: Credentials, roomId: string, body: unknown, userId = who.userId) =>
      call('PUT', `${room(roomId)}/typing/${encodeURIComponent(userId)}`, { token: who.accessToken, body });
    const join = async (who: Credentials, roomId: string) => assert.equal((await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: who.accessToken })).status, 200);
    /** Long-polls from `since` until the room's m.typing satisfies `want`. */
    const until = async (who: Credentials, since: string, roomId: string, want: (ids: string[]) => boolean, ms = 10_000) => {
      const end = Date.now() + ms;
      let from = since;
      while (Date.now() < end) {
        const res = await sync(who, `since=${from}&timeout=${Math.max(1, Math.min(5_000, end - Date.now()))}`);
        const ids = typingIn(res, roomId);
        if (ids && want(ids)) return { res, ids };
        from = res.next_batch;
      }
      throw new Error(`no matching m.typing for ${who.userId} in ${roomId} within ${ms} ms`);
    };

    before(async () => {
      server = await startServer({ redis: redis || undefined, env: ENV });
      [alice, bob, eve] = [await registerUser(server.baseUrl), await registerUser(server.baseUrl), await registerUser(server.baseUrl)];
    });
    after(async () => { stopClients(); await server?.stop(); });

    test('typing reaches the other member through /sync and never a non-member or a member who left', async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      await join(eve, roomId);
      await call('POST', `${room(roomId)}/leave`, { token: eve.accessToken });
      const bobBase = await sync(bob);
      const eveBase = await sync(eve);
      assert.equal(typingIn(bobBase, roomId), undefined, 'nobody types yet: no m.typing on the initial sync');

      const poll = until(bob, bobBase.next_batch, roomId, (ids) => ids.includes(alice.userId));
      assert.equal((await type(alice, roomId, { typing: true, timeout: 20_000 })).status, 200);
      const { res } = await poll;
      assert.deepEqual(typingIn(res, roomId), [alice.userId]);
      assert.equal(res.rooms.join[roomId].ephemeral.events[0].room_id, undefined, 'sync events omit room_id');

      // The initial sync of a member shows who types now; renewing is no change.
      assert.deepEqual(typingIn(await sync(bob), roomId), [alice.userId]);
      assert.equal((await type(alice, roomId, { typing: true, timeout: 20_000 })).status, 200);
      const quiet = await sync(bob, `since=${res.next_batch}&timeout=300`);
      assert.equal(typingIn(quiet, roomId), undefined, 'a renewal wakes nobody');

      // Stopping: the list empties.
      const stopped = until(bob, quiet.next_batch, roomId, (ids) => ids.length === 0);
      assert.equal((await type(alice, roomId, { typing: false })).status, 200);
      await stopped;

      // Eve left before any of it: she sees no typing at all, now or in a fresh initial sync.
      const eveNow = await sync(eve, `since=${eveBase.next_batch}&timeout=300`);
      assert.equal(eveNow.rooms.join[roomId], undefined);
      const eveInitial = await sync(eve);
      assert.equal(eveInitial.rooms.join[roomId], undefined);
      // Nor does an outsider: his sync has no such room, and he cannot type into it.
      const outsider = await registerUser(server.baseUrl);
      assert.equal((await type(alice, roomId, { typing: true, timeout: 20_000 })).status, 200);
      assert.equal((await sync(outsider)).rooms.join[roomId], undefined);
      assert.equal((await type(outsider, roomId, { typing: true })).status, 403);
      await type(alice, roomId, { typing: false });
    });

    test('typing expires without a request and wakes the long-poll with the shorter list', async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      const base = await sync(bob);
      await type(bob, roomId, { typing: true, timeout: 30_000 });
      const started = Date.now();
      assert.equal((await type(alice, roomId, { typing: true, timeout: 800 })).status, 200);
      const { res } = await until(bob, base.next_batch, roomId, (ids) => ids.includes(alice.userId));
      assert.deepEqual([...typingIn(res, roomId)!].sort(), [alice.userId, bob.userId].sort());
      const { ids } = await until(bob, res.next_batch, roomId, (list) => !list.includes(alice.userId), 8_000);
      assert.deepEqual(ids, [bob.userId], 'alice ran out, bob still types');
      assert.ok(Date.now() - started >= 700, 'not before the timeout');
      await type(bob, roomId, { typing: false });
    });

    test('leaving the room stops typing there', async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      const base = await sync(alice);
      await type(bob, roomId, { typing: true, timeout: 60_000 });
      const { res } = await until(alice, base.next_batch, roomId, (ids) => ids.includes(bob.userId));
      await call('POST', `${room(roomId)}/leave`, { token: bob.accessToken });
      await until(alice, res.next_batch, roomId, (ids) => ids.length === 0, 5_000);
    });

    test('a filter that leaves m.typing (or the room) out of ephemeral gets none', async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      await type(alice, roomId, { typing: true, timeout: 20_000 });
      const f = (x: unknown) => `filter=${encodeURIComponent(JSON.stringify(x))}`;
      assert.deepEqual(typingIn(await sync(bob), roomId), [alice.userId], 'unfiltered: shown');
      for (const filter of [{ room: { ephemeral: { not_types: ['m.typing'] } } }, { room: { ephemeral: { types: ['m.receipt'] } } }, { room: { ephemeral: { not_rooms: [roomId] } } }]) {
        assert.equal(typingIn(await sync(bob, f(filter)), roomId), undefined, JSON.stringify(filter));
      }
      assert.deepEqual(typingIn(await sync(bob, f({ room: { ephemeral: { types: ['m.*'] } } })), roomId), [alice.userId], 'a wildcard lets it through');
      await type(alice, roomId, { typing: false });
    });

    test('refused: other users, non-members, unknown rooms and bad bodies change nothing', async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      const base = await sync(bob);
      const expect = async (res: Promise<{ status: number; body: any }>, status: number, errcode: string) => {
        const r = await res;
        assert.equal(r.status, status, JSON.stringify(r.body));
        assert.equal(r.body.errcode, errcode);
      };
      await expect(type(alice, roomId, { typing: true }, bob.userId), 403, 'M_FORBIDDEN');
      await expect(type(eve, roomId, { typing: true }), 403, 'M_FORBIDDEN');
      await expect(type(alice, '!nope:localhost', { typing: true }), 403, 'M_FORBIDDEN');
      await expect(type(alice, 'not-a-room', { typing: true }), 400, 'M_INVALID_PARAM');
      await expect(type(alice, roomId, { typing: 'yes' }), 400, 'M_BAD_JSON');
      await expect(type(alice, roomId, {}), 400, 'M_MISSING_PARAM');
      await expect(type(alice, roomId, { typing: true, timeout: -1 }), 400, 'M_BAD_JSON');
      await expect(type(alice, roomId, { typing: true, timeout: 'long' }), 400, 'M_BAD_JSON');
      await expect(type(alice, roomId, { typing: true, timeout: 1.5 }), 400, 'M_BAD_JSON');
      const none = await sync(bob, `since=${base.next_batch}&timeout=300`);
      assert.equal(typingIn(none, roomId), undefined, 'nothing changed');
      // A huge timeout is capped, not refused.
      assert.equal((await type(alice, roomId, { typing: true, timeout: 9_007_199_254_740_991 })).status, 200);
      await type(alice, roomId, { typing: false });
    });

    test('a matrix-js-sdk client sees typing through RoomMemberEvent.Typing', async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      const client: MatrixClient = await makeClient(server.baseUrl, bob);
      const seen = (want: boolean) => new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no RoomMemberEvent.Typing (${want})`)), 10_000);
        const on = (_e: unknown, member: { userId: string; roomId: string; typing: boolean }) => {
          if (member.userId !== alice.userId || member.roomId !== roomId || member.typing !== want) return;
          clearTimeout(timer);
          client.removeListener(RoomMemberEvent.Typing, on as never);
          resolve();
        };
        client.on(RoomMemberEvent.Typing, on as never);
      });
      const typing = seen(true);
      await type(alice, roomId, { typing: true, timeout: 20_000 });
      await typing;
      const stopped = seen(false);
      await type(alice, roomId, { typing: false });
      await stopped;
      client.stopClient();
    });
  });
}

suite('in process', false);
suite('redis', true);

describe('typing across two workers on one Redis', { skip: process.env.TEST_BACKEND === 'embedded' ? 'needs an external database' : false }, () => {
  test('typing through worker A reaches a long-poll on worker B, and its expiry too', async () => {
    const a = await startServer({ redis: true, env: ENV });
    const b = await startServer({ env: { ...ENV, DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    try {
      const alice = await registerUser(a.baseUrl);
      const bob = await registerUser(b.baseUrl);
      const roomId = (await api(a.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } })).body.room_id;
      assert.equal((await api(b.baseUrl, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken })).status, 200);
      const syncB = async (q: string) => (await api(b.baseUrl, 'GET', `${C}/sync?${q}`, { token: bob.accessToken })).body as Sync;
      const base = await syncB('');
      const poll = syncB(`since=${base.next_batch}&timeout=10000`);
      await new Promise((r) => setTimeout(r, 200));
      const t0 = Date.now();
      assert.equal((await api(a.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(alice.userId)}`, { token: alice.accessToken, body: { typing: true, timeout: 1_000 } })).status, 200);
      let res = await poll;
      // Other streams (presence) may wake it first; typing must come within moments.
      while (typingIn(res, roomId) === undefined && Date.now() - t0 < 3_000) res = await syncB(`since=${res.next_batch}&timeout=3000`);
      assert.ok(Date.now() - t0 < 3_000, 'woken promptly on the other worker');
      assert.deepEqual(typingIn(res, roomId), [alice.userId]);
      // Worker A ran the typing out; B's long-poll hears of it.
      for (let i = 0; i < 5 && typingIn(res, roomId)?.length !== 0; i++) res = await syncB(`since=${res.next_batch}&timeout=5000`);
      assert.deepEqual(typingIn(res, roomId), []);
    } finally {
      await b.stop().catch(() => {});
      await a.stop();
    }
  });
});
