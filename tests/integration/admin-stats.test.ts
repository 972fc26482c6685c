// Issue 12 (adminui12): the admin dashboard's read-only endpoints. GET /_super/admin/v1/stats counts
// the messages persisted and the requests refused with 429 per minute (summed in Redis across
// workers), lists the workers by their heartbeats, reports PostgreSQL and Redis health; GET /server
// gives the configuration without a secret. Both need a permission (403 names it) and a token.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rawApi } from '../helpers/client.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { adminCli, createUser, loginToken } from '../helpers/admin.ts';

const S = '/_super/admin/v1';
let server: TestServer;
let second: TestServer | undefined;
let base: string;
let owner: string;

before(async () => {
  server = await startServer({ redis: true, env: { AUTO_JOIN_ROOMS: '', MAX_LONG_POLLS_PER_USER: '1', REGISTRATION_SHARED_SECRET: 'stats shared secret' } });
  base = server.baseUrl;
  const made = await adminCli(server, ['create-user', 'boss', '--role', 'owner'], 'owner password 123\n');
  assert.equal(made.code, 0, made.stderr);
  owner = await loginToken(base, 'boss', 'owner password 123');
});
after(async () => {
  await second?.stop();
  await server?.stop();
});

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** The figures read after `since` (answers are shared for a second: an older one is asked again). */
async function statsAfter(since: number): Promise<any> {
  for (;;) {
    const r = await rawApi(base, 'GET', `${S}/stats`, owner);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    if (r.body.ts >= since) return r.body;
    await new Promise((res) => setTimeout(res, 100));
  }
}

test('no token: 401; a role without users.read: 403 naming it; support reads the figures but not the server page', async () => {
  assert.equal((await rawApi(base, 'GET', `${S}/stats`)).status, 401);
  const plain = await createUser(base, owner, 'plain');
  const denied = await rawApi(base, 'GET', `${S}/stats`, plain.token);
  assert.equal(denied.status, 403);
  assert.equal(denied.body.errcode, 'M_FORBIDDEN');
  assert.match(denied.body.error, /users\.read/);
  const support = await createUser(base, owner, 'helper');
  assert.equal((await rawApi(base, 'PUT', `${S}/users/${encodeURIComponent(support.userId)}/role`, owner, { role: 'support' })).status, 200);
  assert.equal((await rawApi(base, 'GET', `${S}/stats`, support.token)).status, 200);
  const server403 = await rawApi(base, 'GET', `${S}/server`, support.token);
  assert.equal(server403.status, 403);
  assert.match(server403.body.error, /server\.manage/);
});

test('messages and 429 refusals are counted per minute; accounts, rooms, online users, health', async () => {
  const start = await rawApi(base, 'GET', `${S}/stats`, owner);
  assert.equal(start.status, 200, JSON.stringify(start.body));
  assert.equal(start.body.messages_per_minute.length, 30);
  assert.equal(start.body.registrations_per_hour.length, 24);
  assert.deepEqual([start.body.postgres.ok, start.body.redis.ok, start.body.redis.configured], [true, true, true]);
  assert.equal(typeof start.body.postgres.latency_ms, 'number');
  const alice = await createUser(base, owner, 'alice');
  const room = await rawApi(base, 'POST', '/_matrix/client/v3/createRoom', alice.token, { name: 'counted' });
  for (let i = 0; i < 3; i++) {
    const sent = await rawApi(base, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/t${i}`, alice.token, { msgtype: 'm.text', body: `hello ${i}` });
    assert.equal(sent.status, 200);
  }
  // A state event is not a message.
  await rawApi(base, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/state/m.room.topic/`, alice.token, { topic: 'no message' });
  // Two long-polls of one user with MAX_LONG_POLLS_PER_USER=1: the second is refused with 429.
  const since = (await rawApi(base, 'GET', '/_matrix/client/v3/sync', alice.token)).body.next_batch;
  const first = rawApi(base, 'GET', `/_matrix/client/v3/sync?timeout=3000&since=${since}`, alice.token);
  await new Promise((r) => setTimeout(r, 300));
  const refused = await rawApi(base, 'GET', `/_matrix/client/v3/sync?timeout=3000&since=${since}`, alice.token);
  assert.equal(refused.status, 429);
  await first;
  const now = { body: await statsAfter(Date.now()) };
  assert.equal(sum(now.body.messages_per_minute) - sum(start.body.messages_per_minute), 3);
  assert.equal(sum(now.body.refusals_per_minute) - sum(start.body.refusals_per_minute), 1);
  assert.equal(now.body.users_total, start.body.users_total + 1);
  assert.equal(now.body.rooms_total, start.body.rooms_total + 1);
  assert.ok(sum(now.body.registrations_per_hour) >= 1 && now.body.registrations_per_hour.at(-1) >= 1, 'the new account is in the current hour');
  assert.ok(now.body.users_online >= 2, 'the owner and alice logged in just now');
});

test('a second worker on the same Redis: both listed, their counts summed', async () => {
  second = await startServer({ env: { AUTO_JOIN_ROOMS: '', DATABASE_URL: server.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: server.env.REDIS_URL!, REDIS_PREFIX: server.env.REDIS_PREFIX! } });
  const other = second.baseUrl;
  const token = await loginToken(other, 'alice', `secret password ${'alice'.length}x`);
  const before = { body: await statsAfter(Date.now()) };
  const room = await rawApi(other, 'POST', '/_matrix/client/v3/createRoom', token, {});
  const sent = await rawApi(other, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/w2`, token, { msgtype: 'm.text', body: 'from the other worker' });
  assert.equal(sent.status, 200);
  const sentAt = Date.now();
  let stats: any;
  for (const end = Date.now() + 10_000; ;) {
    stats = await statsAfter(sentAt);
    if (stats.workers.length === 2 || Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(stats.workers.length, 2, JSON.stringify(stats.workers));
  assert.ok(stats.workers.every((w: any) => w.pid > 0 && w.rss_bytes > 0));
  assert.equal(sum(stats.messages_per_minute) - sum(before.body.messages_per_minute), 1, 'a message persisted by the other worker is counted here');
  // Stopped: its heartbeat is gone at once.
  await second.stop();
  second = undefined;
  assert.equal((await statsAfter(Date.now())).workers.length, 1);
});

test('the server page: version and configuration, never a secret; described in the OpenAPI document', async () => {
  const r = await rawApi(base, 'GET', `${S}/server`, owner);
  assert.equal(r.status, 200);
  assert.match(r.body.server_version, /^super-server \d/);
  assert.equal(r.body.config.server_name, 'localhost');
  const text = JSON.stringify(r.body);
  assert.doesNotMatch(text, /postgres:\/\/|redis:\/\/|stats shared secret/);
  assert.equal(r.body.config.registration_shared_secret, 'set');
  const doc = await rawApi(base, 'GET', `${S}/openapi.json`);
  for (const path of ['/stats', '/server']) assert.ok(doc.body.paths[path]?.get['x-permission'], `${path} described`);
});
