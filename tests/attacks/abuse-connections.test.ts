// Attack tests (issue 7, deliverable 2): clients that hold connections. 5,000 idle sockets,
// slow-header and slow-body clients (slowloris), a flood of /sync long-polls from one user and from
// one address, WebSockets past the per-address cap. Each is refused or closed as configured, the
// server's memory stays bounded, and a normal user on another loopback address (127.0.0.2) keeps
// its send → sync round trip (printed; loosely asserted).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser } from '../helpers/client.ts';
import { connectDatabase, seedUsers } from '../helpers/database.ts';
import { LoopbackClient, NormalUser, reportLatency, rssMb, watchRss } from '../helpers/attack.ts';

const C = '/_matrix/client/v3';
const PER_ADDRESS = 200;
const HEADERS_TIMEOUT_MS = 2_000;
const BODY_TIMEOUT_MS = 2_000;
/** Node checks its timeouts every second; a busy machine adds a little. */
const SLACK_MS = 3_000;

interface Probe { socket: net.Socket; openedAt: number; closedAt?: number; data: string }

/** A raw TCP connection from 127.0.0.1 that records what it gets and when it is closed. */
function open(port: number, onConnect?: (s: net.Socket) => void): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const probe: Probe = { socket, openedAt: Date.now(), data: '' };
    socket.on('data', (d) => { probe.data += d.toString('latin1'); });
    socket.on('error', () => {});
    socket.on('close', () => { probe.closedAt ??= Date.now(); });
    socket.once('connect', () => { onConnect?.(socket); resolve(probe); });
    socket.once('close', () => resolve(probe));
  });
}

/** Samples the number of files the server process holds open every 20 ms. */
function watchFds(server: TestServer): { stop(): { before: number; peak: number } } {
  const count = () => fs.readdirSync(`/proc/${server.pid()}/fd`).length;
  const before = count();
  let peak = before;
  const timer = setInterval(() => { try { peak = Math.max(peak, count()); } catch { /* exited */ } }, 20);
  return { stop: () => { clearInterval(timer); return { before, peak }; } };
}

async function until(what: string, f: () => boolean, ms: number): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (f()) return;
  assert.fail(`timed out after ${ms} ms waiting for ${what}`);
}

describe('attacks on connections', () => {
  let server: TestServer;
  let normal: NormalUser;

  before(async () => {
    server = await startServer({
      env: {
        MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS), HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS), REQUEST_TIMEOUT_MS: '4000',
        BODY_TIMEOUT_MS: String(BODY_TIMEOUT_MS), KEEP_ALIVE_TIMEOUT_MS: '2000',
        MAX_LONG_POLLS_PER_USER: '5', MAX_LONG_POLLS_PER_ADDRESS: '50', MAX_SYNCS_PER_TOKEN: '100', WS_MAX_SOCKETS_PER_ADDRESS: '3', WS_MAX_SOCKETS_PER_USER: '100',
        // Presence off: a user's own presence going online would answer its next long-poll at once.
        RATE_LIMITS: 'off', PRESENCE: 'off',
        // The server faces its clients directly: loopback is not a proxy here (it is by default).
        TRUSTED_PROXIES: '',
      },
    });
    normal = await NormalUser.create(server);
    await normal.roundTrip(); // warm
  });
  after(async () => {
    normal?.close();
    await server?.stop();
  });

  test('5,000 idle sockets: past the per-address cap closed at once, the rest after the header timeout', async () => {
    const rssBefore = rssMb(server);
    const rss = watchRss(server);
    const fdPeak = watchFds(server);
    const probes: Probe[] = [];
    const attack = (async () => {
      for (let i = 0; i < 5_000; i += 250) probes.push(...(await Promise.all(Array.from({ length: 250 }, () => open(server.port)))));
      // Every socket is gone by the header timeout (node answers 408 to a socket that never sent a request).
      await until('every idle socket closed', () => probes.every((p) => p.closedAt !== undefined), HEADERS_TIMEOUT_MS + SLACK_MS + 10_000);
    })();
    const latencies = await normal.roundTripsUntil(attack);
    await attack;
    const peak = rss.stop();
    // The server's own count of open files: at no moment more sockets than the per-address cap
    // (plus the normal user's few and sockets accepted but not yet closed).
    const fds = fdPeak.stop();
    assert.ok(fds.peak - fds.before <= PER_ADDRESS + 50, `server sockets held at once: ${fds.peak - fds.before} (cap ${PER_ADDRESS})`);
    assert.ok(fds.peak - fds.before >= PER_ADDRESS / 2, `the sockets under the cap were kept until the timeout: ${fds.peak - fds.before}`);
    for (const p of probes) assert.ok(p.closedAt! - p.openedAt < HEADERS_TIMEOUT_MS + SLACK_MS + 10_000, 'closed within the header timeout');
    reportLatency('5,000 idle sockets', latencies, { 'RSS MiB before/peak': `${rssBefore.toFixed(0)}/${peak.toFixed(0)}`, 'server sockets at once': fds.peak - fds.before });
    assert.ok(peak - rssBefore < 200, `memory stays bounded: RSS grew ${(peak - rssBefore).toFixed(0)} MiB`);
  });

  test('slow headers (slowloris): 408 and closed after the header timeout, however steadily they trickle', async () => {
    const rss = watchRss(server);
    const probes = await Promise.all(Array.from({ length: 150 }, () => open(server.port, (s) => s.write('GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n'))));
    let n = 0;
    const trickle = setInterval(() => { for (const p of probes) if (!p.socket.destroyed) p.socket.write(`X-Slow-${n}: ${n}\r\n`); n++; }, 300);
    const attack = until('every slow-header socket closed', () => probes.every((p) => p.closedAt !== undefined), HEADERS_TIMEOUT_MS + SLACK_MS + 5_000);
    const latencies = await normal.roundTripsUntil(attack);
    await attack.finally(() => clearInterval(trickle));
    for (const p of probes) {
      assert.match(p.data, /^HTTP\/1\.1 408/, 'answered 408 Request Timeout');
      assert.ok(p.closedAt! - p.openedAt < HEADERS_TIMEOUT_MS + SLACK_MS, `closed ${p.closedAt! - p.openedAt} ms after opening`);
    }
    reportLatency('slow headers', latencies, { 'peak RSS MiB': rss.stop().toFixed(0) });
  });

  test('slow bodies: 408 M_UNKNOWN and closed after the body timeout (unauthenticated /login included)', async () => {
    const rss = watchRss(server);
    const start = (s: net.Socket) => s.write(`POST ${C}/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type":`);
    const probes = await Promise.all(Array.from({ length: 150 }, () => open(server.port, start)));
    const trickle = setInterval(() => { for (const p of probes) if (!p.socket.destroyed) p.socket.write(' '); }, 200);
    const attack = until('every slow-body socket closed', () => probes.every((p) => p.closedAt !== undefined), BODY_TIMEOUT_MS + SLACK_MS + 5_000);
    const latencies = await normal.roundTripsUntil(attack);
    await attack.finally(() => clearInterval(trickle));
    for (const p of probes) {
      assert.match(p.data, /^HTTP\/1\.1 408/, `answered 408: ${p.data.slice(0, 80)}`);
      assert.match(p.data, /"errcode":"M_UNKNOWN"/);
      assert.ok(p.closedAt! - p.openedAt < BODY_TIMEOUT_MS + SLACK_MS, `closed ${p.closedAt! - p.openedAt} ms after opening`);
    }
    reportLatency('slow bodies', latencies, { 'peak RSS MiB': rss.stop().toFixed(0) });
  });

  test('a flood of /sync long-polls: past 5 per user and 50 per address refused with 429 M_LIMIT_EXCEEDED', async () => {
    const attacker = await registerUser(server.baseUrl);
    const client = new LoopbackClient(server.baseUrl, '127.0.0.1', 300);
    const since = (await client.request('GET', `${C}/sync?timeout=0`, { token: attacker.accessToken })).body.next_batch as string;
    const poll = (token: string) => client.request('GET', `${C}/sync?timeout=8000&since=${encodeURIComponent(since)}`, { token, timeoutMs: 20_000 });
    const rss = watchRss(server);
    const flood = Array.from({ length: 100 }, () => poll(attacker.accessToken));
    const settled = Promise.all(flood);
    const latencies = await normal.roundTripsUntil(settled);
    const results = await settled;
    const refused = results.filter((r) => r.status === 429);
    assert.equal(results.filter((r) => r.status === 200).length, 5, 'five long-polls of the user were served');
    assert.equal(refused.length, 95);
    for (const r of refused) {
      assert.equal(r.body.errcode, 'M_LIMIT_EXCEEDED');
      assert.ok(r.body.retry_after_ms > 0);
      assert.ok(Number(r.headers['retry-after']) > 0, 'Retry-After header');
    }
    reportLatency('/sync long-poll flood', latencies, { 'peak RSS MiB': rss.stop().toFixed(0) });

    // Per address: eleven users of one address, five long-polls each, 55 > 50.
    const db = await connectDatabase(server);
    const users = await seedUsers(db, server.serverName, 'poller', 11).finally(() => db.end());
    const perAddress = await Promise.all(users.flatMap((u) => Array.from({ length: 5 }, () => poll(u.accessToken))));
    assert.equal(perAddress.filter((r) => r.status === 429).length, 5, 'five refused past the address cap');
    assert.match(perAddress.find((r) => r.status === 429)!.body.error, /per address/);
    client.close();
  });

  test('WebSockets past the per-address cap: 429 on the upgrade', async () => {
    const me = await registerUser(server.baseUrl);
    const url = `ws://127.0.0.1:${server.port}/_matrix/client/unstable/io.superserver/sync?access_token=${encodeURIComponent(me.accessToken)}`;
    const connect = () => new Promise<{ ws: WebSocket; status: number }>((resolve) => {
      const ws = new WebSocket(url);
      ws.once('open', () => resolve({ ws, status: 101 }));
      ws.once('unexpected-response', (_req, res) => resolve({ ws, status: res.statusCode ?? 0 }));
      ws.once('error', () => resolve({ ws, status: 0 }));
    });
    const sockets = [];
    for (let i = 0; i < 4; i++) sockets.push(await connect());
    assert.deepEqual(sockets.map((s) => s.status), [101, 101, 101, 429]);
    for (const s of sockets) s.ws.terminate();
    // Closed sockets no longer count.
    await new Promise((r) => setTimeout(r, 300));
    const again = await connect();
    assert.equal(again.status, 101);
    again.ws.terminate();
  });
});

describe('behind a trusted proxy', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ env: { TRUSTED_PROXIES: '127.0.0.1', MAX_CONNECTIONS_PER_ADDRESS: '2', WS_MAX_SOCKETS_PER_ADDRESS: '1', RATE_LIMITS: 'off', PRESENCE: 'off' } });
  });
  after(async () => { await server?.stop(); });

  test("the proxy's own connections are not capped; its clients' WebSockets are counted per client", async () => {
    // Five connections at once from the proxy's address, over a cap of two: all answered.
    const probes = await Promise.all(Array.from({ length: 5 }, () => open(server.port, (s) => s.write('GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n'))));
    await until('five answers', () => probes.every((p) => p.data.includes('\r\n\r\n')), 10_000);
    assert.deepEqual(probes.map((p) => p.data.slice(0, 12)), Array(5).fill('HTTP/1.1 200'));
    for (const p of probes) p.socket.destroy();
    const me = await registerUser(server.baseUrl);
    const url = `ws://127.0.0.1:${server.port}/_matrix/client/unstable/io.superserver/sync?access_token=${encodeURIComponent(me.accessToken)}`;
    const connect = (client: string) => new Promise<{ ws: WebSocket; status: number }>((resolve) => {
      const ws = new WebSocket(url, { headers: { 'x-forwarded-for': client } });
      ws.once('open', () => resolve({ ws, status: 101 }));
      ws.once('unexpected-response', (_req, res) => resolve({ ws, status: res.statusCode ?? 0 }));
      ws.once('error', () => resolve({ ws, status: 0 }));
    });
    const sockets = [await connect('203.0.113.1'), await connect('203.0.113.2'), await connect('203.0.113.1')];
    assert.deepEqual(sockets.map((s) => s.status), [101, 101, 429]);
    for (const s of sockets) s.ws.terminate();
  });
});
