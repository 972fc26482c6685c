// Client-server spec conformance: status codes, errcodes and response shapes the spec (v1.19) names
// where this server used to answer differently.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('spec conformance', () => {
  let server: TestServer;
  let alice: Credentials & { password: string };
  let roomId: string;
  const { call } = roomApi(() => server.baseUrl);
  const enc = encodeURIComponent;

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { name: 'spec' } })).body.room_id;
  });
  after(() => server?.stop());

  function expectError(res: { status: number; body: any }, status: number, errcode: string): void {
    assert.equal(res.status, status, JSON.stringify(res.body));
    assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
  }

  test('login: 3PID identifiers are 403 M_FORBIDDEN, unknown identifier types 400 M_UNKNOWN', async () => {
    const login = (extra: Record<string, unknown>) => call('POST', `${C}/login`, { body: { type: 'm.login.password', password: alice.password, ...extra } });
    expectError(await login({ identifier: { type: 'm.id.thirdparty', medium: 'email', address: 'a@example.org' } }), 403, 'M_FORBIDDEN');
    expectError(await login({ identifier: { type: 'm.id.phone', country: 'GB', phone: '123' } }), 403, 'M_FORBIDDEN');
    expectError(await login({ medium: 'email', address: 'a@example.org' }), 403, 'M_FORBIDDEN');
    expectError(await login({ identifier: { type: 'm.id.nonsense', user: alice.userId } }), 400, 'M_UNKNOWN');
    const ok = await login({ identifier: { type: 'm.id.user', user: alice.userId } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.user_id, alice.userId);
  });

  test('profile: PUT without the key is M_MISSING_PARAM and changes nothing', async () => {
    const path = `${C}/profile/${enc(alice.userId)}/displayname`;
    assert.equal((await call('PUT', path, { token: alice.accessToken, body: { displayname: 'Alice' } })).status, 200);
    expectError(await call('PUT', path, { token: alice.accessToken, body: { other: 'x' } }), 400, 'M_MISSING_PARAM');
    assert.deepEqual((await call('GET', path)).body, { displayname: 'Alice' });
  });

  test('profile: other keys are 404 M_NOT_FOUND to read, 403 to set, invalid keys M_INVALID_PARAM', async () => {
    const base = `${C}/profile/${enc(alice.userId)}`;
    expectError(await call('GET', `${base}/m.tz`), 404, 'M_NOT_FOUND');
    expectError(await call('GET', `${base}/org.example.job`), 404, 'M_NOT_FOUND');
    expectError(await call('GET', `${C}/profile/${enc('@nobody:localhost')}/m.tz`), 404, 'M_NOT_FOUND');
    expectError(await call('GET', `${base}/Not-A-Key`), 400, 'M_INVALID_PARAM');
    expectError(await call('PUT', `${base}/m.tz`, { token: alice.accessToken, body: { 'm.tz': 'Europe/London' } }), 403, 'M_FORBIDDEN');
    expectError(await call('PUT', `${base}/Not-A-Key`, { token: alice.accessToken, body: { 'Not-A-Key': 1 } }), 400, 'M_INVALID_PARAM');
    const caps = await call('GET', `${C}/capabilities`, { token: alice.accessToken });
    assert.deepEqual(caps.body.capabilities['m.profile_fields'], { enabled: true, allowed: ['displayname', 'avatar_url'] });
  });

  test('profile: DELETE removes a field; deleting an absent one is 200', async () => {
    const base = `${C}/profile/${enc(alice.userId)}`;
    await call('PUT', `${base}/displayname`, { token: alice.accessToken, body: { displayname: 'Temp' } });
    assert.equal((await call('DELETE', `${base}/displayname`, { token: alice.accessToken })).status, 200);
    expectError(await call('GET', `${base}/displayname`), 404, 'M_NOT_FOUND');
    assert.equal((await call('DELETE', `${base}/org.example.job`, { token: alice.accessToken })).status, 200);
    const bob = await registerUser(server.baseUrl);
    expectError(await call('DELETE', `${base}/avatar_url`, { token: bob.accessToken }), 403, 'M_FORBIDDEN');
  });

  test('account data: server-managed types are 405 M_BAD_JSON', async () => {
    const me = enc(alice.userId);
    expectError(await call('PUT', `${C}/user/${me}/account_data/m.fully_read`, { token: alice.accessToken, body: { event_id: '$x' } }), 405, 'M_BAD_JSON');
    expectError(await call('PUT', `${C}/user/${me}/rooms/${enc(roomId)}/account_data/m.fully_read`, { token: alice.accessToken, body: { event_id: '$x' } }), 405, 'M_BAD_JSON');
  });

  test('/members: an unknown membership filter is 400 M_INVALID_PARAM', async () => {
    const path = `${C}/rooms/${enc(roomId)}/members`;
    expectError(await call('GET', `${path}?membership=bogus`, { token: alice.accessToken }), 400, 'M_INVALID_PARAM');
    expectError(await call('GET', `${path}?not_membership=bogus`, { token: alice.accessToken }), 400, 'M_INVALID_PARAM');
    const ok = await call('GET', `${path}?membership=join`, { token: alice.accessToken });
    assert.deepEqual(ok.body.chunk.map((e: { state_key: string }) => e.state_key), [alice.userId]);
  });

  test('/sync: joined rooms carry a summary, also in incremental syncs', async () => {
    const first = await call('GET', `${C}/sync`, { token: alice.accessToken });
    const room = first.body.rooms.join[roomId];
    assert.ok(room, 'room in initial sync');
    assert.equal(room.summary['m.joined_member_count'], 1);
    await call('PUT', `${C}/rooms/${enc(roomId)}/send/m.room.message/s1`, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'x' } });
    const next = await call('GET', `${C}/sync?since=${first.body.next_batch}`, { token: alice.accessToken });
    const inc = next.body.rooms.join[roomId];
    assert.equal(typeof inc.summary, 'object');
  });

  test('/sync full_state: all the state, but the timeline still starts at since', async () => {
    const first = await call('GET', `${C}/sync`, { token: alice.accessToken });
    await call('PUT', `${C}/rooms/${enc(roomId)}/send/m.room.message/fs1`, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'after' } });
    const res = await call('GET', `${C}/sync?full_state=true&since=${first.body.next_batch}`, { token: alice.accessToken });
    const room = res.body.rooms.join[roomId];
    assert.deepEqual(room.timeline.events.map((e: { content: { body?: string } }) => e.content.body), ['after']);
    const types = room.state.events.map((e: { type: string }) => e.type);
    for (const t of ['m.room.create', 'm.room.power_levels', 'm.room.member', 'm.room.name']) assert.ok(types.includes(t), `${t} in state: ${types}`);
  });
});
