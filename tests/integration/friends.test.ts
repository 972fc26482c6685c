// Friends (issue 13): /_super/client/v1/friends — requests (send, accept, decline, cancel), remove,
// block and unblock, the list with presence, the io.superserver.friends extension of /sync (live,
// through a long-poll), "only friends may start a DM with me" on createRoom and /invite, the
// friend_requests rate limit, and what a careless or hostile user does.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const F = '/_super/client/v1/friends';
const KEY = 'io.superserver.friends';

describe('friends', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let carol: Credentials;
  let dave: Credentials;
  const call = (who: Credentials | undefined, method: string, path: string, body?: unknown) =>
    api(server.baseUrl, method, path, { token: who?.accessToken, body });
  const enc = encodeURIComponent;
  const list = async (who: Credentials) => {
    const res = await call(who, 'GET', F);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body as { friends: any[]; incoming: any[]; outgoing: any[]; blocked: string[]; settings: { only_friends_dm: boolean } };
  };
  const expectError = async (p: Promise<{ status: number; body: any }>, status: number, errcode: string, text?: RegExp) => {
    const res = await p;
    assert.equal(res.status, status, JSON.stringify(res.body));
    assert.equal(res.body.errcode, errcode);
    assert.equal(typeof res.body.error, 'string');
    if (text) assert.match(res.body.error, text);
  };

  before(async () => {
    server = await startServer({ env: { AUTO_JOIN_ROOMS: '', RATE_LIMITS: 'on', RC_REGISTRATION_PER_SECOND: '1000', RC_REGISTRATION_BURST: '1000', RC_INVITES_PER_USER_BURST: '1000', RC_FRIEND_REQUESTS_PER_SECOND: '0.001', RC_FRIEND_REQUESTS_BURST: '20', FEDERATION_DOMAIN_BLOCKLIST: 'other.example' } });
    [alice, bob, carol, dave] = await Promise.all([0, 1, 2, 3].map(() => registerUser(server.baseUrl)));
  });
  after(async () => { await server?.stop(); });

  test('a request reaches the other live in /sync, is accepted, and both lists show it with presence', async () => {
    const first = await call(bob, 'GET', `${C}/sync`);
    assert.equal(first.status, 200);
    assert.deepEqual(first.body[KEY], { full: true, links: [], settings: { only_friends_dm: false } });
    // Bob long-polls; Alice's request must wake him.
    const waiting = call(bob, 'GET', `${C}/sync?since=${first.body.next_batch}&timeout=10000`);
    await new Promise((r) => setTimeout(r, 200));
    const sent = await call(alice, 'POST', `${F}/requests`, { user_id: bob.userId, message: 'hi, it is Alice' });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    assert.deepEqual(sent.body, { state: 'outgoing' });
    const woken = await waiting;
    assert.equal(woken.status, 200);
    const links = woken.body[KEY]?.links;
    assert.equal(woken.body[KEY]?.full, false);
    assert.equal(links?.length, 1, JSON.stringify(woken.body[KEY]));
    assert.equal(links[0].user_id, alice.userId);
    assert.equal(links[0].state, 'incoming');
    assert.equal(links[0].message, 'hi, it is Alice');

    assert.deepEqual((await list(alice)).outgoing.map((r) => r.user_id), [bob.userId]);
    assert.deepEqual((await list(bob)).incoming.map((r) => r.user_id), [alice.userId]);

    const accepted = await call(bob, 'POST', `${F}/requests/${enc(alice.userId)}/accept`, {});
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    const a = await list(alice);
    const b = await list(bob);
    assert.deepEqual(a.friends.map((f) => f.user_id), [bob.userId]);
    assert.deepEqual(b.friends.map((f) => f.user_id), [alice.userId]);
    assert.deepEqual([a.incoming, a.outgoing, b.incoming, b.outgoing], [[], [], [], []]);
    assert.ok(['online', 'offline', 'unavailable'].includes(a.friends[0].presence.presence));
    // Bob synced a moment ago: he is online to his friend.
    assert.equal(a.friends[0].presence.presence, 'online');

    // Alice's next incremental sync says bob is a friend now.
    const s = await call(alice, 'GET', `${C}/sync?since=${first.body.next_batch}`);
    const mine = s.body[KEY].links.find((l: any) => l.user_id === bob.userId);
    assert.equal(mine.state, 'friend');
  });

  test('the WebSocket sync carries the friends extension too, live', async () => {
    const [erin, frank] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl)]);
    const url = new URL('/_matrix/client/unstable/io.superserver/sync', server.baseUrl.replace(/^http/, 'ws'));
    url.searchParams.set('access_token', frank.accessToken);
    const ws = new WebSocket(url);
    const frames: Array<Record<string, any>> = [];
    let wake: (() => void) | undefined;
    ws.on('message', (d) => { frames.push(JSON.parse(String(d))); wake?.(); });
    const until = async (pred: (f: Record<string, any>) => boolean) => {
      const end = Date.now() + 10_000;
      for (;;) {
        const hit = frames.find(pred);
        if (hit) return hit;
        assert.ok(Date.now() < end, `no such frame in ${JSON.stringify(frames).slice(0, 500)}`);
        await new Promise<void>((r) => { wake = r; setTimeout(r, 200); });
      }
    };
    try {
      const first = await until((f) => f[KEY]?.full === true);
      assert.deepEqual(first[KEY].links, []);
      assert.equal((await call(erin, 'POST', `${F}/requests`, { user_id: frank.userId })).status, 200);
      const pushed = await until((f) => f[KEY]?.full === false);
      assert.deepEqual(pushed[KEY].links.map((l: any) => [l.user_id, l.state]), [[erin.userId, 'incoming']]);
    } finally {
      ws.close();
    }
  });

  test('hostile and careless requests are refused with clear errors and change nothing', async () => {
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: carol.userId }), 400, 'M_INVALID_PARAM', /own friend/);
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: `@nobody:${server.serverName}` }), 404, 'M_NOT_FOUND', /Unknown user/);
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: 'not a user id' }), 400, 'M_INVALID_PARAM');
    await expectError(call(carol, 'POST', `${F}/requests`, {}), 400, 'M_MISSING_PARAM');
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: 42 }), 400, 'M_BAD_JSON');
    await expectError(call(undefined, 'GET', F), 401, 'M_MISSING_TOKEN');
    // A server this one does not federate with (by policy): refused cleanly (tests/federation/federation-friends.test.ts: the others).
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: '@someone:other.example' }), 501, 'M_UNRECOGNIZED', /does not federate with/);

    assert.equal((await call(carol, 'POST', `${F}/requests`, { user_id: dave.userId })).status, 200);
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: dave.userId }), 400, 'M_INVALID_PARAM', /already sent/);
    // Not yours to accept, decline or cancel.
    await expectError(call(carol, 'POST', `${F}/requests/${enc(dave.userId)}/accept`, {}), 404, 'M_NOT_FOUND');
    await expectError(call(alice, 'POST', `${F}/requests/${enc(carol.userId)}/decline`, {}), 404, 'M_NOT_FOUND');
    await expectError(call(dave, 'DELETE', `${F}/requests/${enc(carol.userId)}`), 404, 'M_NOT_FOUND', /no pending/);
    await expectError(call(alice, 'DELETE', `${F}/requests/${enc(dave.userId)}`), 404, 'M_NOT_FOUND');
    await expectError(call(carol, 'DELETE', `${F}/${enc(dave.userId)}`), 404, 'M_NOT_FOUND', /not your friend/);
    await expectError(call(carol, 'PUT', `${F}/blocks/${enc(carol.userId)}`, {}), 400, 'M_INVALID_PARAM');
    await expectError(call(carol, 'DELETE', `${F}/blocks/${enc(dave.userId)}`), 404, 'M_NOT_FOUND');
    await expectError(call(carol, 'PUT', `${F}/settings`, { only_friends_dm: 'yes' }), 400, 'M_BAD_JSON');
    // Nothing above changed the lists.
    const c = await list(carol);
    assert.deepEqual(c.outgoing.map((r) => r.user_id), [dave.userId]);
    assert.deepEqual([c.friends, c.incoming, c.blocked], [[], [], []]);

    // Cancel: gone on both sides.
    assert.equal((await call(carol, 'DELETE', `${F}/requests/${enc(dave.userId)}`)).status, 200);
    assert.deepEqual((await list(dave)).incoming, []);
    assert.deepEqual((await list(carol)).outgoing, []);
  });

  test('asking back accepts; decline and remove end it on both sides', async () => {
    assert.equal((await call(carol, 'POST', `${F}/requests`, { user_id: alice.userId })).status, 200);
    const back = await call(alice, 'POST', `${F}/requests`, { user_id: carol.userId });
    assert.deepEqual(back.body, { state: 'friend' });
    assert.ok((await list(carol)).friends.some((f) => f.user_id === alice.userId));
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: alice.userId }), 400, 'M_INVALID_PARAM', /already friends/);
    assert.equal((await call(carol, 'DELETE', `${F}/${enc(alice.userId)}`)).status, 200);
    assert.ok(!(await list(alice)).friends.some((f) => f.user_id === carol.userId));

    assert.equal((await call(dave, 'POST', `${F}/requests`, { user_id: alice.userId })).status, 200);
    assert.equal((await call(alice, 'POST', `${F}/requests/${enc(dave.userId)}/decline`, {})).status, 200);
    assert.deepEqual((await list(dave)).outgoing, []);
    assert.deepEqual((await list(alice)).incoming, []);
  });

  test('a blocked user cannot ask again nor DM; blocking ends the friendship; unblock', async () => {
    assert.equal((await call(dave, 'POST', `${F}/requests`, { user_id: carol.userId })).status, 200);
    assert.equal((await call(carol, 'PUT', `${F}/blocks/${enc(dave.userId)}`, {})).status, 200);
    assert.equal((await call(carol, 'PUT', `${F}/blocks/${enc(dave.userId)}`, {})).status, 200, 'blocking twice is harmless');
    assert.deepEqual((await list(carol)).blocked, [dave.userId]);
    assert.deepEqual((await list(carol)).incoming, []);
    assert.deepEqual((await list(dave)).outgoing, []);
    await expectError(call(dave, 'POST', `${F}/requests`, { user_id: carol.userId }), 403, 'M_FORBIDDEN');
    await expectError(call(carol, 'POST', `${F}/requests`, { user_id: dave.userId }), 400, 'M_INVALID_PARAM', /unblock/);
    await expectError(call(dave, 'POST', `${C}/createRoom`, { is_direct: true, invite: [carol.userId], preset: 'trusted_private_chat' }), 403, 'M_FORBIDDEN');
    assert.equal((await call(carol, 'DELETE', `${F}/blocks/${enc(dave.userId)}`)).status, 200);
    assert.deepEqual((await list(carol)).blocked, []);
    assert.equal((await call(dave, 'POST', `${F}/requests`, { user_id: carol.userId })).status, 200);
    assert.equal((await call(carol, 'POST', `${F}/requests/${enc(dave.userId)}/decline`, {})).status, 200);
  });

  test('"only friends may start a DM with me": createRoom and /invite into a room of two are refused, friends pass, groups pass', async () => {
    const on = await call(bob, 'PUT', `${F}/settings`, { only_friends_dm: true });
    assert.equal(on.status, 200);
    assert.equal((await list(bob)).settings.only_friends_dm, true);
    // Carol is not Bob's friend.
    await expectError(call(carol, 'POST', `${C}/createRoom`, { is_direct: true, invite: [bob.userId] }), 403, 'M_FORBIDDEN', /only accepts direct messages from friends/);
    await expectError(call(carol, 'POST', `${C}/createRoom`, { invite: [bob.userId] }), 403, 'M_FORBIDDEN', /friends/);
    const empty = await call(carol, 'POST', `${C}/createRoom`, {});
    assert.equal(empty.status, 200);
    await expectError(call(carol, 'POST', `${C}/rooms/${enc(empty.body.room_id)}/invite`, { user_id: bob.userId }), 403, 'M_FORBIDDEN', /friends/);
    // A group (more than two) is not a DM.
    assert.equal((await call(carol, 'POST', `${C}/createRoom`, { invite: [bob.userId, dave.userId] })).status, 200);
    // Alice is a friend: her DM passes.
    assert.equal((await call(alice, 'POST', `${C}/createRoom`, { is_direct: true, invite: [bob.userId] })).status, 200);
    // The setting's change reached Bob's sync.
    const s = await call(bob, 'GET', `${C}/sync`);
    assert.deepEqual(s.body[KEY].settings, { only_friends_dm: true });
    assert.equal((await call(bob, 'PUT', `${F}/settings`, { only_friends_dm: false })).status, 200);
    assert.equal((await call(carol, 'POST', `${C}/rooms/${enc(empty.body.room_id)}/invite`, { user_id: bob.userId })).status, 200);
  });

  test('friend requests are rate-limited like invites (429 with retry_after_ms)', async () => {
    const eve = await registerUser(server.baseUrl);
    // Refused requests pay too (a script probing for users is what the limit is for).
    let limited: { status: number; body: any } | undefined;
    for (let i = 0; i < 25 && !limited; i++) {
      const res = await call(eve, 'POST', `${F}/requests`, { user_id: `@probe${i}:${server.serverName}` });
      if (res.status === 429) limited = res;
      else assert.equal(res.status, 404, JSON.stringify(res.body));
    }
    assert.ok(limited, 'a request past the burst of 20 is refused');
    assert.equal(limited.body.errcode, 'M_LIMIT_EXCEEDED');
    assert.ok(limited.body.retry_after_ms > 0);
  });
});
