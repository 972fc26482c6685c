// Every bad input gets the spec's errcode and HTTP status, and the failed request changes nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('errors', () => {
  let server: TestServer;
  let alice: Credentials & { password: string };
  let roomId: string;
  const { call } = roomApi(() => server.baseUrl);
  const messages = async () => {
    const r = await call('GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100`, { token: alice.accessToken });
    return r.body.chunk.filter((e: { type: string }) => e.type === 'm.room.message').length as number;
  };
  const joinedRooms = async () => (await call('GET', `${C}/joined_rooms`, { token: alice.accessToken })).body.joined_rooms as string[];

  before(async () => {
    server = await startServer({ env: { ACCESS_TOKEN_LIFETIME_MS: '1500', MAX_REQUEST_BYTES: '200000' } });
    alice = await registerUser(server.baseUrl);
    roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { name: 'e' } })).body.room_id;
  });
  after(() => server?.stop());

  function expectError(res: { status: number; body: any }, status: number, errcode: string): void {
    assert.equal(res.status, status, JSON.stringify(res.body));
    assert.equal(res.body.errcode, errcode);
    assert.equal(typeof res.body.error, 'string');
    assert.ok(!/at .*\.ts:\d+|SELECT|INSERT/.test(res.body.error), 'no stack trace or SQL');
  }

  test('unknown endpoint: 404 M_UNRECOGNIZED; wrong method: 405 M_UNRECOGNIZED', async () => {
    expectError(await call('GET', `${C}/no/such/thing`), 404, 'M_UNRECOGNIZED');
    expectError(await call('GET', '/_matrix/nothing'), 404, 'M_UNRECOGNIZED');
    expectError(await call('DELETE', `${C}/createRoom`, { token: alice.accessToken }), 405, 'M_UNRECOGNIZED');
  });

  test('OPTIONS is answered on every path with CORS headers', async () => {
    for (const path of [`${C}/sync`, `${C}/no/such/thing`, `${C}/rooms/x/send/m.room.message/1`]) {
      const res = await fetch(server.baseUrl + path, { method: 'OPTIONS' });
      assert.ok(res.status === 200 || res.status === 204);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.match(res.headers.get('access-control-allow-methods') ?? '', /PUT/);
      assert.match(res.headers.get('access-control-allow-headers') ?? '', /Authorization/);
    }
    const get = await call('GET', '/_matrix/client/versions');
    assert.equal(get.headers.get('access-control-allow-origin'), '*');
  });

  test('body not JSON: 400 M_NOT_JSON, nothing created', async () => {
    const before = await joinedRooms();
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, rawBody: '{"name": ' }), 400, 'M_NOT_JSON');
    const sent = await call('PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/nj1`, { token: alice.accessToken, rawBody: 'not json' });
    expectError(sent, 400, 'M_NOT_JSON');
    assert.deepEqual(await joinedRooms(), before);
    assert.equal(await messages(), 0);
  });

  test('wrong shape: 400 M_BAD_JSON, nothing created', async () => {
    const before = await joinedRooms();
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { name: 42 } }), 400, 'M_BAD_JSON');
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { invite: 'not-a-list' } }), 400, 'M_BAD_JSON');
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, rawBody: '[1,2]' }), 400, 'M_BAD_JSON');
    assert.deepEqual(await joinedRooms(), before);
    const room = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { room_version: '999' } });
    expectError(room, 400, 'M_UNSUPPORTED_ROOM_VERSION');
    assert.deepEqual(await joinedRooms(), before);
  });

  test('missing token: 401 M_MISSING_TOKEN; bad token: 401 M_UNKNOWN_TOKEN', async () => {
    expectError(await call('GET', `${C}/sync`), 401, 'M_MISSING_TOKEN');
    expectError(await call('GET', `${C}/account/whoami`, { token: 'syt_nonsense' }), 401, 'M_UNKNOWN_TOKEN');
    expectError(await call('GET', `${C}/account/whoami?access_token=bogus`), 401, 'M_UNKNOWN_TOKEN');
  });

  test('expired token: 401 M_UNKNOWN_TOKEN with soft_logout; refresh works and rotates', async () => {
    const reg = await call('POST', `${C}/register`, { body: { username: 'refresher', password: 'staple-battery-9', refresh_token: true, auth: { type: 'm.login.dummy' } } });
    assert.equal(reg.status, 200);
    assert.ok(reg.body.refresh_token);
    assert.ok(reg.body.expires_in_ms > 0 && reg.body.expires_in_ms <= 1500);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: reg.body.access_token })).status, 200);
    await new Promise((r) => setTimeout(r, 1700));
    const expired = await call('GET', `${C}/account/whoami`, { token: reg.body.access_token });
    expectError(expired, 401, 'M_UNKNOWN_TOKEN');
    assert.equal(expired.body.soft_logout, true);
    const refreshed = await call('POST', `${C}/refresh`, { body: { refresh_token: reg.body.refresh_token } });
    assert.equal(refreshed.status, 200);
    assert.notEqual(refreshed.body.refresh_token, reg.body.refresh_token);
    const who = await call('GET', `${C}/account/whoami`, { token: refreshed.body.access_token });
    assert.equal(who.body.user_id, '@refresher:localhost');
    assert.equal(who.body.device_id, reg.body.device_id);
    // The old refresh token is spent.
    expectError(await call('POST', `${C}/refresh`, { body: { refresh_token: reg.body.refresh_token } }), 401, 'M_UNKNOWN_TOKEN');
  });

  test('M_USER_IN_USE and M_INVALID_USERNAME on register and availability', async () => {
    const taken = alice.userId.slice(1, alice.userId.indexOf(':'));
    expectError(await call('POST', `${C}/register`, { body: { username: taken, password: 'x', auth: { type: 'm.login.dummy' } } }), 400, 'M_USER_IN_USE');
    expectError(await call('GET', `${C}/register/available?username=${taken}`), 400, 'M_USER_IN_USE');
    expectError(await call('POST', `${C}/register`, { body: { username: 'bad name!', password: 'x', auth: { type: 'm.login.dummy' } } }), 400, 'M_INVALID_USERNAME');
    expectError(await call('GET', `${C}/register/available?username=${encodeURIComponent('é')}`), 400, 'M_INVALID_USERNAME');
    assert.deepEqual((await call('GET', `${C}/register/available?username=free_name_1`)).body, { available: true });
  });

  test('wrong password: 403 M_FORBIDDEN; unknown user too; right password logs in', async () => {
    const localpart = alice.userId.slice(1, alice.userId.indexOf(':'));
    const login = (user: string, password: string) => call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password } });
    expectError(await login(localpart, 'wrong'), 403, 'M_FORBIDDEN');
    expectError(await login('nobody_here', 'wrong'), 403, 'M_FORBIDDEN');
    const ok = await login(alice.userId, alice.password);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.user_id, alice.userId);
  });

  test("not allowed by the room's auth rules: 403 M_FORBIDDEN, nothing changed", async () => {
    const bob = await registerUser(server.baseUrl);
    // Bob is not in the room: he cannot send, set state, or invite.
    const path = `${C}/rooms/${encodeURIComponent(roomId)}`;
    expectError(await call('PUT', `${path}/send/m.room.message/b1`, { token: bob.accessToken, body: { msgtype: 'm.text', body: 'x' } }), 403, 'M_FORBIDDEN');
    expectError(await call('PUT', `${path}/state/m.room.topic`, { token: bob.accessToken, body: { topic: 'x' } }), 403, 'M_FORBIDDEN');
    expectError(await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken }), 403, 'M_FORBIDDEN');
    // Once invited and joined, a default-power user cannot change power levels or kick the creator.
    assert.equal((await call('POST', `${path}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken })).status, 200);
    expectError(await call('PUT', `${path}/state/m.room.power_levels`, { token: bob.accessToken, body: { users: { [bob.userId]: 100 } } }), 403, 'M_FORBIDDEN');
    expectError(await call('POST', `${path}/kick`, { token: bob.accessToken, body: { user_id: alice.userId } }), 403, 'M_FORBIDDEN');
    const members = await call('GET', `${path}/joined_members`, { token: alice.accessToken });
    assert.deepEqual(Object.keys(members.body.joined).sort(), [alice.userId, bob.userId].sort());
    const pl = await call('GET', `${path}/state/m.room.power_levels`, { token: alice.accessToken });
    assert.equal(pl.body.users[bob.userId], undefined);
    assert.equal(await messages(), 0);
  });

  test('M_NOT_FOUND for unknown events, profiles, aliases and state', async () => {
    const path = `${C}/rooms/${encodeURIComponent(roomId)}`;
    expectError(await call('GET', `${path}/event/$nope`, { token: alice.accessToken }), 404, 'M_NOT_FOUND');
    expectError(await call('GET', `${C}/profile/${encodeURIComponent('@ghost:localhost')}`), 404, 'M_NOT_FOUND');
    expectError(await call('GET', `${C}/directory/room/${encodeURIComponent('#missing:localhost')}`), 404, 'M_NOT_FOUND');
    expectError(await call('GET', `${path}/state/m.room.tombstone`, { token: alice.accessToken }), 404, 'M_NOT_FOUND');
  });

  test('request body over the limit: 413 M_TOO_LARGE, nothing stored', async () => {
    const big = { msgtype: 'm.text', body: 'x'.repeat(300_000) };
    expectError(await call('PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/big1`, { token: alice.accessToken, body: big }), 413, 'M_TOO_LARGE');
    assert.equal(await messages(), 0);
  });

  test('event over 65,536 bytes: 413 M_TOO_LARGE, nothing stored; just under is fine', async () => {
    const res = await call('PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/big2`, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'y'.repeat(70_000) } });
    expectError(res, 413, 'M_TOO_LARGE');
    assert.equal(await messages(), 0);
    const ok = await call('PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/ok1`, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'z'.repeat(60_000) } });
    assert.equal(ok.status, 200);
    assert.equal(await messages(), 1);
  });

  test('the same transaction id sends once', async () => {
    const path = `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/same-txn`;
    const before = await messages();
    const results = await Promise.all([1, 2, 3].map(() => call('PUT', path, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'once' } })));
    for (const r of results) assert.equal(r.status, 200);
    assert.equal(new Set(results.map((r) => r.body.event_id)).size, 1);
    assert.equal(await messages(), before + 1);
  });
});
