// Response shapes against the spec's OpenAPI schemas: every response the test helpers receive is checked
// (tests/helpers/openapi.ts), and this file reaches the served endpoints no other test file does, so their
// shapes are checked too.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { makeClient, registerUser, roomApi, type Credentials } from '../helpers/client.ts';
import { specChecker } from '../helpers/openapi.ts';

const C = '/_matrix/client/v3';

describe('response shapes', () => {
  let server: TestServer;
  let alice: Credentials & { password: string };
  let bob: Credentials;
  const { call, room, create } = roomApi(() => server.baseUrl);
  const user = (who: Credentials) => `${C}/user/${encodeURIComponent(who.userId)}`;

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test('api() checks every response of a spec endpoint; matrix-js-sdk clients are checked too', async () => {
    const checker = specChecker();
    const whoami = checker.validated.get('getTokenOwner') ?? 0;
    assert.equal((await call('GET', `${C}/account/whoami`, { token: alice.accessToken })).status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`)).status, 401); // the error shape is checked too
    assert.equal(checker.validated.get('getTokenOwner'), whoami + 2);

    const syncs = checker.validated.get('sync') ?? 0;
    const client = await makeClient(server.baseUrl, alice);
    client.stopClient();
    assert.ok((checker.validated.get('sync') ?? 0) > syncs, 'the sdk client\'s /sync responses were checked');
  });

  test('well-known, 3PIDs, per-room account data and tags', async () => {
    const wellKnown = await call('GET', '/.well-known/matrix/client');
    assert.equal(wellKnown.status, 200);
    assert.equal(new URL(wellKnown.body['m.homeserver'].base_url).port, String(server.port));
    assert.deepEqual((await call('GET', `${C}/account/3pid`, { token: alice.accessToken })).body, { threepids: [] });

    const roomId = await create(alice, {});
    const data = `${user(alice)}/rooms/${encodeURIComponent(roomId)}/account_data/org.example.note`;
    assert.equal((await call('PUT', data, { token: alice.accessToken, body: { text: 'hi' } })).status, 200);
    assert.deepEqual((await call('GET', data, { token: alice.accessToken })).body, { text: 'hi' });

    const tags = `${user(alice)}/rooms/${encodeURIComponent(roomId)}/tags`;
    assert.equal((await call('PUT', `${tags}/m.favourite`, { token: alice.accessToken, body: { order: 0.5 } })).status, 200);
    assert.deepEqual((await call('GET', tags, { token: alice.accessToken })).body, { tags: { 'm.favourite': { order: 0.5 } } });
    assert.equal((await call('DELETE', `${tags}/m.favourite`, { token: alice.accessToken })).status, 200);
    assert.deepEqual((await call('GET', tags, { token: alice.accessToken })).body, { tags: {} });
  });

  test('joining by room id; deleting devices through user-interactive auth', async () => {
    const roomId = await create(alice, { preset: 'public_chat' });
    const joined = await call('POST', `${room(roomId)}/join`, { token: bob.accessToken, body: {} });
    assert.equal(joined.status, 200, JSON.stringify(joined.body));
    assert.equal(joined.body.room_id, roomId);

    const second = await call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.userId }, password: alice.password } });
    assert.equal(second.status, 200);
    const challenge = await call('POST', `${C}/delete_devices`, { token: alice.accessToken, body: { devices: [second.body.device_id] } });
    assert.equal(challenge.status, 401); // checked against the spec's auth response: flows, session
    const auth = { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.userId }, password: alice.password, session: challenge.body.session };
    const deleted = await call('POST', `${C}/delete_devices`, { token: alice.accessToken, body: { devices: [second.body.device_id], auth } });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    assert.equal((await call('GET', `${C}/devices/${encodeURIComponent(second.body.device_id)}`, { token: alice.accessToken })).status, 404);
  });
});
