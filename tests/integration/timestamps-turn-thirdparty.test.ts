// Smaller endpoints over raw HTTP: TURN credentials, third-party protocols and lookups, and
// /timestamp_to_event.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const V1 = '/_matrix/client/v1';

describe('timestamp_to_event, TURN and third-party lookups', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  const { call } = roomApi(() => server.baseUrl);
  const send = async (who: Credentials, rid: string, body: string) => {
    const res = await call('PUT', `${C}/rooms/${encodeURIComponent(rid)}/send/m.room.message/${Math.random()}`, { token: who.accessToken, body: { msgtype: 'm.text', body } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.event_id as string;
  };
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test('no TURN server is configured: {}', async () => {
    const res = await call('GET', `${C}/voip/turnServer`, { token: alice.accessToken });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {});
    assert.equal((await call('GET', `${C}/voip/turnServer`)).status, 401);
  });

  test('no bridged protocols', async () => {
    const res = await call('GET', `${C}/thirdparty/protocols`, { token: alice.accessToken });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {});
    for (const path of ['/thirdparty/protocol/irc', '/thirdparty/location/irc', '/thirdparty/user/irc', '/thirdparty/location?alias=%23a%3Alocalhost', '/thirdparty/user?userid=%40a%3Alocalhost']) {
      const r = await call('GET', `${C}${path}`, { token: alice.accessToken });
      assert.equal(r.status, 404, path);
      assert.equal(r.body.errcode, 'M_NOT_FOUND', path);
    }
    const missing = await call('GET', `${C}/thirdparty/location`, { token: alice.accessToken });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.errcode, 'M_MISSING_PARAM');
    assert.equal((await call('GET', `${C}/thirdparty/protocols`)).status, 401);
  });

  test('timestamp_to_event finds the closest event in each direction', async () => {
    const rid = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'private_chat' } })).body.room_id as string;
    const url = (qs: string) => `${V1}/rooms/${encodeURIComponent(rid)}/timestamp_to_event?${qs}`;
    await pause(5);
    const first = await send(alice, rid, 'first');
    await pause(20);
    const t = Date.now();
    await pause(20);
    const second = await send(alice, rid, 'second');
    const ts = async (id: string) => (await call('GET', `${C}/rooms/${encodeURIComponent(rid)}/event/${encodeURIComponent(id)}`, { token: alice.accessToken })).body.origin_server_ts as number;

    const fwd = await call('GET', url(`ts=${t}&dir=f`), { token: alice.accessToken });
    assert.equal(fwd.status, 200, JSON.stringify(fwd.body));
    assert.deepEqual(fwd.body, { event_id: second, origin_server_ts: await ts(second) });
    const back = await call('GET', url(`ts=${t}&dir=b`), { token: alice.accessToken });
    assert.deepEqual(back.body, { event_id: first, origin_server_ts: await ts(first) });
    const exact = await call('GET', url(`ts=${await ts(second)}&dir=b`), { token: alice.accessToken });
    assert.equal(exact.body.event_id, second, 'an event at the very timestamp counts');

    const future = await call('GET', url(`ts=${Date.now() + 60_000}&dir=f`), { token: alice.accessToken });
    assert.equal(future.status, 404);
    assert.equal(future.body.errcode, 'M_NOT_FOUND');
    const past = await call('GET', url('ts=0&dir=b'), { token: alice.accessToken });
    assert.equal(past.status, 404);

    const outsider = await call('GET', url(`ts=${t}&dir=f`), { token: bob.accessToken });
    assert.equal(outsider.status, 403);
    assert.equal(outsider.body.errcode, 'M_FORBIDDEN');
    const bad: Array<[string, string]> = [['dir=f', 'M_MISSING_PARAM'], [`ts=${t}`, 'M_MISSING_PARAM'], [`ts=${t}&dir=x`, 'M_INVALID_PARAM'], ['ts=soon&dir=f', 'M_INVALID_PARAM']];
    for (const [qs, errcode] of bad) {
      const res = await call('GET', url(qs), { token: alice.accessToken });
      assert.equal(res.status, 400, qs);
      assert.equal(res.body.errcode, errcode, qs);
    }
  });

  test('timestamp_to_event skips events the user may not see', async () => {
    const rid = (await call('POST', `${C}/createRoom`, {
      token: alice.accessToken,
      body: { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }] },
    })).body.room_id as string;
    const hidden = await send(alice, rid, 'before bob');
    await pause(5);
    const t = Date.now();
    await pause(5);
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(rid)}`, { token: bob.accessToken })).status, 200);
    const res = await call('GET', `${V1}/rooms/${encodeURIComponent(rid)}/timestamp_to_event?ts=${t}&dir=b`, { token: bob.accessToken });
    // The message before his join is hidden; the room's first events (before history_visibility
    // was set, so under the default "shared") are not.
    assert.equal(res.status, 200);
    assert.notEqual(res.body.event_id, hidden);
    const alices = await call('GET', `${V1}/rooms/${encodeURIComponent(rid)}/timestamp_to_event?ts=${t}&dir=b`, { token: alice.accessToken });
    assert.equal(alices.body.event_id, hidden);
    const fwd = await call('GET', `${V1}/rooms/${encodeURIComponent(rid)}/timestamp_to_event?ts=${t}&dir=f`, { token: bob.accessToken });
    assert.equal(fwd.status, 200);
    const ev = await call('GET', `${C}/rooms/${encodeURIComponent(rid)}/event/${encodeURIComponent(fwd.body.event_id)}`, { token: bob.accessToken });
    assert.equal(ev.body.type, 'm.room.member', 'his own join');
  });
});
