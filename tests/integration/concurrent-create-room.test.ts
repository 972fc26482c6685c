// Many createRoom calls at once must not exhaust the connection pool: each holds one connection
// for its transaction, and interning a new event type or state key used to ask the pool for a
// second one while holding the first (with 20 connections, ~40 creations at once stalled until the
// pool's timeout and answered 500).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, roomApi, type Credentials } from '../helpers/client.ts';

describe('concurrent createRoom', () => {
  let server: TestServer;
  let alice: Credentials;
  const { call, create } = roomApi(() => server.baseUrl);

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl, 'alice');
  });
  after(() => server?.stop());

  test('60 creations at once, each with state keys never seen before, all succeed within seconds', async () => {
    const started = Date.now();
    const tag = Date.now().toString(36);
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) =>
      call('POST', '/_matrix/client/v3/createRoom', {
        token: alice.accessToken,
        body: { name: `room ${i}`, initial_state: [{ type: `org.example.new_type_${tag}_${i}`, state_key: `new-key-${tag}-${i}`, content: { i } }] },
      })));
    const elapsed = Date.now() - started;
    assert.deepEqual(results.filter((r) => r.status !== 200).map((r) => [r.status, r.body]), []);
    assert.equal(new Set(results.map((r) => r.body.room_id)).size, 60);
    assert.ok(elapsed < 20_000, `60 creations took ${elapsed} ms`);
    // Each room carries its own state event.
    const i = 37;
    const state = await call('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(results[i]!.body.room_id)}/state/org.example.new_type_${tag}_${i}/new-key-${tag}-${i}`, { token: alice.accessToken });
    assert.deepEqual(state.body, { i });
    // And the server still answers other requests normally.
    const roomId = await create(alice, { name: "after" });
    assert.match(roomId, /^!/);
  });
});
