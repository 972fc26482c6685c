// Presence: GET/PUT /presence/{userId}/status, /sync's set_presence and presence.events to users
// who share a room only, the timeout to offline, PRESENCE=off, matrix-js-sdk's own events; in
// process and on Redis, and across two workers sharing one Redis.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { UserEvent, type MatrixClient } from 'matrix-js-sdk';
import { startServer, type TestServer } from '../helpers/server.ts';
import { makeClient, registerUser, roomApi, stopClients, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
/** No auto-joined room: users share a room only when a test makes them. */
const ENV = { AUTO_JOIN_ROOMS: '' };

type Sync = { next_batch: string; presence: { events: any[] }; rooms: { join: Record<string, any> } };

const presenceOf = (res: Sync, userId: string) => res.presence.events.filter((e) => e.type === 'm.presence' && e.sender === userId).map((e) => e.content);

/** Calls bound to one server. */
function helpers(base: () => string) {
  const { call, room, create } = roomApi(base);
  const sync = async (who: Credentials, query = '') => {
    const res = await call('GET', `${C}/sync?${query}`, { token: who.accessToken });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body as Sync;
  };
  const status = (who: Credentials, userId = who.userId) => call('GET', `${C}/presence/${encodeURIComponent(userId)}/status`, { token: who.accessToken });
  const put = (who: Credentials, body: unknown, userId = who.userId) => call('PUT', `${C}/presence/${encodeURIComponent(userId)}/status`, { token: who.accessToken, body });
  const join = async (who: Credentials, roomId: string) => assert.equal((await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: who.accessToken })).status, 200);
  /** Long-polls (without marking `who` online) until a presence of `subject` satisfies `want`. */
  const until = async (who: Credentials, since: string, subject: string, want: (c: any) => boolean, ms = 10_000) => {
    const end = Date.now() + ms;
    let from = since;
    while (Date.now() < end) {
      const res = await sync(who, `since=${from}&set_presence=offline&timeout=${Math.max(1, Math.min(5_000, end - Date.now()))}`);
      const hit = presenceOf(res, subject).find(want);
      if (hit) return { res, content: hit };
      from = res.next_batch;
    }
    throw new Error(`no matching presence of ${subject} for ${who.userId} within ${ms} ms`);
  };
  return { call, room, create, sync, status, put, join, until };
}

function suite(name: string, redis: boolean): void {
  describe(`presence (${name})`, () => {
    let server: TestServer;
    let alice: Credentials;
    let bob: Credentials;
    let eve: Credentials;
    let roomId: string;
    const h = helpers(() => server.baseUrl);

    before(async () => {
      server = await startServer({ redis: redis || undefined, env: ENV });
      [alice, bob, eve] = [await registerUser(server.baseUrl), await registerUser(server.baseUrl), await registerUser(server.baseUrl)];
      roomId = await h.create(alice, { preset: 'public_chat' });
      await h.join(bob, roomId);
      await h.join(eve, roomId);
      await h.call('POST', `${h.room(roomId)}/leave`, { token: eve.accessToken });
    });
    after(async () => { stopClients(); await server?.stop(); });

    test('presence reaches a room-mate through /sync and never a non-member or a member who left', async () => {
      const outsider = await registerUser(server.baseUrl);
      const bobBase = await h.sync(bob, 'set_presence=offline');
      const eveBase = await h.sync(eve, 'set_presence=offline');
      const outBase = await h.sync(outsider, 'set_presence=offline');
      const poll = h.until(bob, bobBase.next_batch, alice.userId, (c) => c.status_msg === 'in a meeting');
      assert.equal((await h.put(alice, { presence: 'online', status_msg: 'in a meeting' })).status, 200);
      const { res, content } = await poll;
      assert.equal(content.presence, 'online');
      assert.equal(content.currently_active, true);
      assert.equal(typeof content.last_active_ago, 'number');
      // Bob's own sync with set_presence=offline did not make him online.
      assert.equal((await h.status(alice, bob.userId)).body.presence, 'offline');
      // An initial sync shows room-mates that are not offline.
      assert.equal(presenceOf(await h.sync(bob, 'set_presence=offline'), alice.userId)[0]?.status_msg, 'in a meeting');
      // Eve (left) and the outsider (never joined) see nothing of alice, incrementally or initially.
      for (const [who, base] of [[eve, eveBase], [outsider, outBase]] as const) {
        const later = await h.sync(who, `since=${base.next_batch}&set_presence=offline&timeout=300`);
        assert.deepEqual(presenceOf(later, alice.userId), [], `${who.userId} sees no presence of alice`);
        assert.deepEqual(presenceOf(await h.sync(who, 'set_presence=offline'), alice.userId), []);
        assert.equal((await h.status(who, alice.userId)).status, 403);
      }
      // Later changes still reach bob only.
      const next = h.until(bob, res.next_batch, alice.userId, (c) => c.presence === 'unavailable');
      await h.put(alice, { presence: 'unavailable' });
      assert.equal((await next).content.status_msg, undefined, 'status_msg absent: cleared');
    });

    test('a presence filter leaves out what it excludes', async () => {
      await h.put(alice, { presence: 'online', status_msg: 'filtered' });
      await h.sync(bob); // bob online too
      const f = (x: unknown) => `set_presence=offline&filter=${encodeURIComponent(JSON.stringify(x))}`;
      const all = await h.sync(alice, 'set_presence=offline');
      assert.ok(presenceOf(all, bob.userId).length && presenceOf(all, alice.userId).length, 'unfiltered: both');
      assert.deepEqual((await h.sync(alice, f({ presence: { not_types: ['*'] } }))).presence.events, []);
      assert.deepEqual((await h.sync(alice, f({ presence: { types: [] } }))).presence.events, []);
      const onlyBob = await h.sync(alice, f({ presence: { senders: [bob.userId] } }));
      assert.deepEqual(onlyBob.presence.events.map((e: any) => e.sender), [bob.userId]);
      assert.equal((await h.sync(alice, f({ presence: { limit: 1 } }))).presence.events.length, 1);
    });

    test('joining a room: the joiner hears of its members that are online, and they of the joiner', async () => {
      await h.put(alice, { presence: 'online', status_msg: 'welcome' });
      const dave = await registerUser(server.baseUrl);
      const first = await h.sync(dave); // online, but sharing no room yet
      assert.deepEqual(presenceOf(first, alice.userId), []);
      const bobBase = await h.sync(bob, 'set_presence=offline');
      await h.join(dave, roomId);
      const { content } = await h.until(dave, first.next_batch, alice.userId, (c) => c.status_msg === 'welcome');
      assert.equal(content.presence, 'online');
      const toBob = await h.until(bob, bobBase.next_batch, dave.userId, (c) => c.presence === 'online');
      assert.ok(toBob.content);
    });

    test('status round trip: GET own and a room-mate\'s; 403 for a stranger, 404 for an unknown user', async () => {
      assert.equal((await h.put(alice, { presence: 'unavailable', status_msg: 'lunch 🍜' })).status, 200);
      for (const who of [alice, bob]) {
        const r = await h.status(who, alice.userId);
        assert.equal(r.status, 200);
        assert.equal(r.body.presence, 'unavailable');
        assert.equal(r.body.status_msg, 'lunch 🍜');
      }
      assert.equal((await h.put(alice, { presence: 'online', status_msg: null })).status, 200);
      const r = await h.status(bob, alice.userId);
      assert.equal(r.body.presence, 'online');
      assert.equal(r.body.status_msg, undefined);
      assert.equal(r.body.currently_active, true);
      assert.ok(r.body.last_active_ago >= 0 && r.body.last_active_ago < 10_000);
      const stranger = await h.status(eve, alice.userId);
      assert.equal(stranger.status, 403);
      assert.equal(stranger.body.errcode, 'M_FORBIDDEN');
      const unknown = await h.status(alice, '@nobody-here:localhost');
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.errcode, 'M_NOT_FOUND');
    });

    test('refused: other users\' presence, bad bodies, bad set_presence; nothing changes', async () => {
      await h.put(alice, { presence: 'online', status_msg: 'steady' });
      const expect = async (res: Promise<{ status: number; body: any }>, status: number, errcode: string) => {
        const r = await res;
        assert.equal(r.status, status, JSON.stringify(r.body));
        assert.equal(r.body.errcode, errcode);
      };
      await expect(h.put(bob, { presence: 'offline' }, alice.userId), 403, 'M_FORBIDDEN');
      await expect(h.put(alice, { presence: 'busy' }), 400, 'M_BAD_JSON');
      await expect(h.put(alice, { presence: 'online', status_msg: 5 }), 400, 'M_BAD_JSON');
      await expect(h.put(alice, { presence: 'online', status_msg: 'x'.repeat(5000) }), 400, 'M_BAD_JSON');
      await expect(h.put(alice, { status_msg: 'no state' }), 400, 'M_MISSING_PARAM');
      await expect(h.status(alice, 'not-a-user'), 400, 'M_INVALID_PARAM');
      await expect(h.call('GET', `${C}/sync?set_presence=busy`, { token: alice.accessToken }), 400, 'M_INVALID_PARAM');
      const now = await h.status(bob, alice.userId);
      assert.equal(now.body.status_msg, 'steady');
      assert.equal(now.body.presence, 'online');
    });

    test('set_presence: offline does not mark online, unavailable does, the default is online', async () => {
      const carol = await registerUser(server.baseUrl);
      await h.join(carol, roomId); // a member event only: no activity
      const look = async () => (await h.status(bob, carol.userId)).body.presence;
      await h.sync(carol, 'set_presence=offline');
      assert.equal(await look(), 'offline');
      await h.sync(carol, 'set_presence=unavailable');
      assert.equal(await look(), 'unavailable');
      await h.sync(carol);
      assert.equal(await look(), 'online');
      const own = await h.sync(carol, 'set_presence=offline');
      assert.equal(presenceOf(own, carol.userId)[0]?.presence, 'online', 'one sees one\'s own presence');
    });

    test('a matrix-js-sdk client sees presence through UserEvent.Presence', async () => {
      const client: MatrixClient = await makeClient(server.baseUrl, bob);
      const seen = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no UserEvent.Presence for alice')), 10_000);
        const on = (_e: unknown, user: { userId: string; presence: string; presenceStatusMsg?: string }) => {
          if (user.userId !== alice.userId || user.presence !== 'unavailable' || user.presenceStatusMsg !== 'sdk check') return;
          clearTimeout(timer);
          client.removeListener(UserEvent.Presence, on as never);
          resolve();
        };
        client.on(UserEvent.Presence, on as never);
      });
      await h.put(alice, { presence: 'unavailable', status_msg: 'sdk check' });
      await seen;
      client.stopClient();
    });

    describe('with PRESENCE_TIMEOUT_MS=1000', () => {
      let quick: TestServer;
      const q = helpers(() => quick.baseUrl);
      before(async () => { quick = await startServer({ redis: redis || undefined, env: { ...ENV, PRESENCE_TIMEOUT_MS: '1000' } }); });
      after(() => quick?.stop());

      test('a user who stops syncing goes offline after the timeout; one who keeps syncing stays online', async () => {
        const a = await registerUser(quick.baseUrl);
        const b = await registerUser(quick.baseUrl);
        const rid = await q.create(a, { preset: 'public_chat' });
        await q.join(b, rid);
        const base = await q.sync(b, 'set_presence=offline');
        await q.sync(a); // online
        const lastSync = Date.now();
        // a was online already (creating the room is activity), or becomes so with its sync.
        const online = presenceOf(base, a.userId).some((c) => c.presence === 'online')
          ? base : (await q.until(b, base.next_batch, a.userId, (c) => c.presence === 'online')).res;
        // b now long-polls (online) while a says nothing.
        let from = online.next_batch;
        let offline: any;
        const end = Date.now() + 10_000;
        while (!offline && Date.now() < end) {
          const r = await q.sync(b, `since=${from}&timeout=2000`);
          offline = presenceOf(r, a.userId).find((c) => c.presence === 'offline');
          from = r.next_batch;
        }
        assert.ok(offline, 'a went offline');
        const after = Date.now() - lastSync;
        assert.ok(after >= 900, `not before the timeout (${after} ms)`);
        assert.equal((await q.status(a, b.userId)).body.presence, 'online', 'b, syncing all along, is online');
        // Syncing again brings a back.
        await q.sync(a);
        assert.equal((await q.status(b, a.userId)).body.presence, 'online');
      });
    });

    describe('with PRESENCE=off', () => {
      let off: TestServer;
      const o = helpers(() => off.baseUrl);
      before(async () => { off = await startServer({ redis: redis || undefined, env: { ...ENV, PRESENCE: 'off' } }); });
      after(() => off?.stop());

      test('the endpoints answer (everyone offline) and /sync carries no presence', async () => {
        const a = await registerUser(off.baseUrl);
        const b = await registerUser(off.baseUrl);
        const rid = await o.create(a, { preset: 'public_chat' });
        await o.join(b, rid);
        const base = await o.sync(b);
        await o.sync(a);
        assert.equal((await o.put(a, { presence: 'online', status_msg: 'hello' })).status, 200);
        assert.deepEqual((await o.status(a)).body, { presence: 'offline' });
        assert.deepEqual((await o.status(b, a.userId)).body, { presence: 'offline' });
        assert.equal((await o.status(b, '@nobody:localhost')).status, 404);
        assert.equal((await o.put(a, { presence: 'nope' })).status, 400);
        const later = await o.sync(b, `since=${base.next_batch}&timeout=500`);
        assert.deepEqual(later.presence.events, []);
        assert.deepEqual((await o.sync(b)).presence.events, []);
      });
    });
  });
}

suite('in process', false);
suite('redis', true);

describe('presence across two workers on one Redis', { skip: process.env.TEST_BACKEND === 'embedded' ? 'needs an external database' : false }, () => {
  test('a status set on worker A reaches a long-poll and a GET on worker B', async () => {
    const a = await startServer({ redis: true, env: ENV });
    const b = await startServer({ env: { ...ENV, DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    try {
      const ha = helpers(() => a.baseUrl);
      const hb = helpers(() => b.baseUrl);
      const alice = await registerUser(a.baseUrl);
      const bob = await registerUser(b.baseUrl);
      const rid = await ha.create(alice, { preset: 'public_chat' });
      await hb.join(bob, rid);
      const base = await hb.sync(bob, 'set_presence=offline');
      const t0 = Date.now();
      const poll = hb.until(bob, base.next_batch, alice.userId, (c) => c.status_msg === 'from A', 5_000);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal((await ha.put(alice, { presence: 'unavailable', status_msg: 'from A' })).status, 200);
      const { content } = await poll;
      assert.equal(content.presence, 'unavailable');
      assert.ok(Date.now() - t0 < 3_000, 'woken promptly on the other worker');
      const got = await hb.status(bob, alice.userId);
      assert.equal(got.body.presence, 'unavailable');
      assert.equal(got.body.status_msg, 'from A');
    } finally {
      await b.stop().catch(() => {});
      await a.stop();
    }
  });
});
