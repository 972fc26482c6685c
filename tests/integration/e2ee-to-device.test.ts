// Send-to-device over raw HTTP: unknown recipients are dropped, `*` reaches every device, a
// transaction id sends once, a flood is paged 100 at a time with none lost or repeated (each page
// deleted only once the device syncs past it), and a message sent on one worker reaches a device
// syncing on another.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, rawApi, registerUser, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import WebSocket from 'ws';

const C = '/_matrix/client/v3';
const skipWorkers = process.env.TEST_BACKEND === 'embedded' ? 'needs an external database and Redis' : false;

let txn = 0;
const nextTxn = () => `t${Date.now()}-${txn++}`;

/** Syncs until a response carries to-device events (or the time is up); returns it. */
async function syncToDevice(base: string, who: Credentials, since: string | undefined, ms = 15_000): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await rawApi(base, 'GET', `${C}/sync?timeout=3000${since ? `&since=${encodeURIComponent(since)}` : ''}`, who.accessToken);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    if (r.body.to_device?.events?.length || Date.now() > end) return r.body;
    since = r.body.next_batch;
  }
}

describe('send-to-device over HTTP', () => {
  let server: TestServer;
  before(async () => { server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } }); });
  after(async () => { await server?.stop(); });

  const send = (from: Credentials, type: string, messages: unknown, txnId = nextTxn()) =>
    api(server.baseUrl, 'PUT', `${C}/sendToDevice/${encodeURIComponent(type)}/${encodeURIComponent(txnId)}`, { token: from.accessToken, body: { messages } });

  test('unknown users and devices, and other servers\' users, are accepted and dropped; the known device gets its message', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const start = (await api(server.baseUrl, 'GET', `${C}/sync?timeout=0`, { token: bob.accessToken })).body.next_batch;
    const r = await send(alice, 'm.test', {
      [bob.userId]: { [bob.deviceId]: { hello: 'bob' }, NOSUCHDEVICE: { hello: 'nobody' } },
      [`@nosuchuser:${server.serverName}`]: { ANY: { hello: 'nobody' } },
      '@someone:remote.example': { DEV: { hello: 'far' } },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, {});
    const got = await syncToDevice(server.baseUrl, bob, start);
    assert.deepEqual(got.to_device.events, [{ sender: alice.userId, type: 'm.test', content: { hello: 'bob' } }]);
    const db = await connectDatabase(server);
    try {
      const rows = await db.query('SELECT user_id, device_id FROM e2ee_to_device WHERE sender = $1', [alice.userId]);
      assert.deepEqual(rows.rows, [{ user_id: bob.userId, device_id: bob.deviceId }], 'only the known device has a message stored');
    } finally { await db.end(); }
    // Bad bodies change nothing.
    assert.equal((await send(alice, 'm.test', 'not an object')).status, 400);
    assert.equal((await send(alice, 'm.test', { [bob.userId]: { [bob.deviceId]: 'not an object' } })).status, 400);
  });

  test('`*` reaches every device of the user; a transaction id sends once per sending device', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const login = await api(server.baseUrl, 'POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: bob.userId }, password: bob.password } });
    const bob2 = { userId: bob.userId, accessToken: login.body.access_token, deviceId: login.body.device_id };
    const starts = await Promise.all([bob, bob2].map(async (b) => (await api(server.baseUrl, 'GET', `${C}/sync?timeout=0`, { token: b.accessToken })).body.next_batch));
    assert.equal((await send(alice, 'm.star', { [bob.userId]: { '*': { to: 'all' } } }, 'same-txn')).status, 200);
    assert.equal((await send(alice, 'm.star', { [bob.userId]: { '*': { to: 'all' } } }, 'same-txn')).status, 200, 'a retry is answered');
    for (const [i, b] of [bob, bob2].entries()) {
      const got = await syncToDevice(server.baseUrl, b, starts[i]);
      assert.deepEqual(got.to_device.events, [{ sender: alice.userId, type: 'm.star', content: { to: 'all' } }], `device ${b.deviceId} gets it once`);
      const later = await api(server.baseUrl, 'GET', `${C}/sync?timeout=500&since=${encodeURIComponent(got.next_batch)}`, { token: b.accessToken });
      assert.deepEqual(later.body.to_device.events, [], 'and not again');
    }
  });

  test('a flood of 1,000 messages comes 100 per sync, none lost, none repeated; a page stays until the device syncs past it', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const start = (await api(server.baseUrl, 'GET', `${C}/sync?timeout=0`, { token: bob.accessToken })).body.next_batch;
    const TOTAL = 1000;
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = next++; i < TOTAL; i = next++) {
        const r = await rawApi(server.baseUrl, 'PUT', `${C}/sendToDevice/m.flood/flood-${i}`, alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { n: i } } } });
        assert.equal(r.status, 200);
      }
    }));
    const seen: number[] = [];
    let since = start;
    let pages = 0;
    let retried = false;
    while (seen.length < TOTAL) {
      const r = await api(server.baseUrl, 'GET', `${C}/sync?timeout=0&since=${encodeURIComponent(since)}`, { token: bob.accessToken });
      assert.equal(r.status, 200);
      const events = r.body.to_device.events as Array<{ content: { n: number } }>;
      assert.ok(events.length <= 100, `a page of ${events.length}`);
      assert.ok(events.length > 0, `a sync with nothing after ${seen.length} messages`);
      if (!retried && pages === 3) {
        // The response was lost: the same since gives the same page (nothing deleted yet).
        const again = await api(server.baseUrl, 'GET', `${C}/sync?timeout=0&since=${encodeURIComponent(since)}`, { token: bob.accessToken });
        assert.deepEqual(again.body.to_device.events, events);
        retried = true;
      }
      seen.push(...events.map((e) => e.content.n));
      since = r.body.next_batch;
      pages++;
    }
    assert.equal(pages, 10);
    assert.equal(new Set(seen).size, TOTAL, 'none repeated');
    assert.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: TOTAL }, (_, i) => i), 'none lost');
    const last = await api(server.baseUrl, 'GET', `${C}/sync?timeout=0&since=${encodeURIComponent(since)}`, { token: bob.accessToken });
    assert.deepEqual(last.body.to_device.events, []);
    const db = await connectDatabase(server);
    try {
      const rows = await db.query('SELECT count(*)::int AS n FROM e2ee_to_device WHERE user_id = $1', [bob.userId]);
      assert.equal(rows.rows[0].n, 0, 'every message delivered and synced past is deleted');
    } finally { await db.end(); }
  });
});

describe('send-to-device over the WebSocket sync', () => {
  let server: TestServer;
  before(async () => { server = await startServer({ env: { AUTO_JOIN_ROOMS: '', PRESENCE: 'off' } }); });
  after(async () => { await server?.stop(); });

  test('a message is pushed to the device\'s socket at once, with its one-time key counts', async () => {
    const alice = await registerUser(server.baseUrl);
    const bob = await registerUser(server.baseUrl);
    const ws = new WebSocket(`${server.baseUrl.replace(/^http/, 'ws')}/_matrix/client/unstable/io.superserver/sync?access_token=${bob.accessToken}`);
    const frames: any[] = [];
    ws.on('message', (data) => frames.push(JSON.parse(String(data))));
    const waitFor = async (pred: (f: any) => boolean) => {
      const end = Date.now() + 15_000;
      for (;;) {
        const hit = frames.find(pred);
        if (hit) return hit;
        assert.ok(Date.now() < end, 'no such frame in 15 s');
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      const first = await waitFor(() => true);
      assert.deepEqual(first.device_one_time_keys_count, { signed_curve25519: 0 });
      const r = await rawApi(server.baseUrl, 'PUT', `${C}/sendToDevice/m.ws/${nextTxn()}`, alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { over: 'socket' } } } });
      assert.equal(r.status, 200);
      const pushed = await waitFor((f) => f.to_device?.events?.length > 0);
      assert.deepEqual(pushed.to_device.events, [{ sender: alice.userId, type: 'm.ws', content: { over: 'socket' } }]);
    } finally {
      ws.close();
    }
  });
});

describe('send-to-device across workers', { skip: skipWorkers }, () => {
  const servers: TestServer[] = [];
  after(async () => { for (const s of servers.reverse()) await s.stop().catch(() => {}); });

  test('a message sent on one worker wakes and reaches a device long-polling on another', async () => {
    const a = await startServer({ redis: true, env: { LOG_LEVEL: 'info', AUTO_JOIN_ROOMS: '' } });
    servers.push(a);
    const b = await startServer({ env: { LOG_LEVEL: 'info', AUTO_JOIN_ROOMS: '', DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    servers.unshift(b);
    const end = Date.now() + 15_000;
    while (![a, b].every((w) => w.logs().includes('stream positions shared through redis'))) {
      assert.ok(Date.now() < end, 'positions never shared through redis');
      await new Promise((r) => setTimeout(r, 50));
    }
    const alice = await registerUser(a.baseUrl);
    const bob = await registerUser(b.baseUrl);
    let since = (await rawApi(b.baseUrl, 'GET', `${C}/sync?timeout=0`, bob.accessToken)).body.next_batch as string;
    const got: number[] = [];
    for (let i = 0; i < 20; i++) {
      // Bob long-polls on B; the send goes through A once the poll is waiting.
      const poll = rawApi(b.baseUrl, 'GET', `${C}/sync?timeout=20000&since=${encodeURIComponent(since)}`, bob.accessToken);
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      const sent = await rawApi(a.baseUrl, 'PUT', `${C}/sendToDevice/m.cross/x${i}`, alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { i } } } });
      assert.equal(sent.status, 200);
      let r = await poll;
      // The poll may have answered for something else first (presence): keep syncing.
      while (!r.body.to_device.events.length) {
        assert.ok(Date.now() - t0 < 15_000, `message ${i} never reached worker B`);
        r = await rawApi(b.baseUrl, 'GET', `${C}/sync?timeout=5000&since=${encodeURIComponent(r.body.next_batch)}`, bob.accessToken);
      }
      got.push(...r.body.to_device.events.map((e: { content: { i: number } }) => e.content.i));
      since = r.body.next_batch;
    }
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i));
  });
});
