// Operating the server (findings 12, 13, 15; deliverable 4): health endpoints, honest /versions,
// authentication before the body, bounded waits on a database outage, a draining SIGTERM (to node
// and to npm), and no esbuild process after a start that rebuilt the bundle.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { externalDbAvailable, repoRoot, startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

/** A raw request whose body the test writes itself; resolves once the server has the headers (100-continue). */
function openUpload(baseUrl: string, pathname: string, headers: Record<string, string>): Promise<{ req: http.ClientRequest; response: Promise<{ status: number; body: any }> }> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: pathname, method: 'PUT', headers: { expect: '100-continue', ...headers }, agent: false });
    const response = new Promise<{ status: number; body: any }>((res, rej) => {
      req.on('response', (r) => {
        let text = '';
        r.on('data', (d) => (text += d));
        r.on('end', () => res({ status: r.statusCode!, body: text ? JSON.parse(text) : undefined }));
      });
      req.on('error', rej);
    });
    response.catch(() => {}); // observed by the caller
    req.on('continue', () => resolve({ req, response }));
    req.on('error', reject);
    req.flushHeaders();
  });
}

describe('health, versions, authentication before the body', () => {
  let server: TestServer;
  let alice: Credentials;
  before(async () => { server = await startServer(); alice = await registerUser(server.baseUrl); });
  after(() => server.stop());

  test('GET /health is live, GET /health/ready touches the database', async () => {
    const live = await api(server.baseUrl, 'GET', '/health');
    assert.equal(live.status, 200);
    assert.deepEqual(live.body, { status: 'ok' });
    const ready = await api(server.baseUrl, 'GET', '/health/ready');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { status: 'ready' });
  });

  test('/versions claims v1.11+ only while authenticated media is served', async () => {
    const versions = (await api(server.baseUrl, 'GET', '/_matrix/client/versions')).body.versions as string[];
    assert.ok(versions.includes('v1.1'), 'modern clients need v1.1');
    const media = await api(server.baseUrl, 'GET', '/_matrix/client/v1/media/config', { token: alice.accessToken });
    const late = versions.filter((v) => /^v1\.(\d+)$/.test(v) && Number(v.slice(3)) >= 11);
    if (media.status !== 200) assert.deepEqual(late, [], `claims ${late.join(', ')} without authenticated media (${media.status})`);
    // An unstable feature claimed as supported names endpoints that answer: private read receipts
    // (MSC2285) need the receipt endpoint, threads (MSC3440) the threads list.
    const features = (await api(server.baseUrl, 'GET', '/_matrix/client/versions')).body.unstable_features as Record<string, boolean>;
    const probes: Record<string, () => Promise<{ status: number; body: { errcode?: string } }>> = {
      'org.matrix.msc2285.stable': () => api(server.baseUrl, 'POST', `${C}/rooms/${encodeURIComponent('!nowhere:localhost')}/receipt/m.read.private/$e`, { token: alice.accessToken, body: {} }),
      'org.matrix.msc3440.stable': () => api(server.baseUrl, 'GET', `/_matrix/client/v1/rooms/${encodeURIComponent('!nowhere:localhost')}/threads`, { token: alice.accessToken }),
      'org.matrix.msc3916.stable': async () => media,
    };
    for (const [feature, claimed] of Object.entries(features)) {
      if (!claimed) continue;
      const probe = probes[feature];
      assert.ok(probe, `claims ${feature}, which this test does not know how to check`);
      const res = await probe();
      assert.notEqual(res.body.errcode, 'M_UNRECOGNIZED', `claims ${feature}, but its endpoint is not served (${res.status})`);
    }
    const caps = (await api(server.baseUrl, 'GET', `${C}/capabilities`, { token: alice.accessToken })).body.capabilities;
    // Each enabled capability names an endpoint that answers.
    if (caps['m.change_password']?.enabled) {
      assert.notEqual((await api(server.baseUrl, 'POST', `${C}/account/password`, { token: alice.accessToken, body: {} })).status, 404);
    }
    if (caps['m.set_displayname']?.enabled) {
      assert.equal((await api(server.baseUrl, 'PUT', `${C}/profile/${encodeURIComponent(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: 'A' } })).status, 200);
    }
  });

  test('an unauthenticated upload gets 401 at once, before its body is sent', async () => {
    const { req, response } = await openUpload(server.baseUrl, `${C}/rooms/!x:localhost/send/m.room.message/t1`, {
      'content-type': 'application/json', 'content-length': '500000',
    });
    req.write('{"body": "'); // and never the rest
    const res = await response;
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, 'M_MISSING_TOKEN');
    req.destroy();
    const badToken = await openUpload(server.baseUrl, `${C}/rooms/!x:localhost/send/m.room.message/t2`, {
      'content-type': 'application/json', 'content-length': '500000', authorization: 'Bearer nope',
    });
    assert.equal((await badToken.response).status, 401);
    badToken.req.destroy();
  });
});

// The external backend's outage (the embedded one's: tests/integration/startup.test.ts kills its PostgreSQL).
if (process.env.TEST_BACKEND !== 'embedded') describe('database outages answer 503 within a bounded wait', () => {
  test('through a proxy that goes away: 503 within seconds, then service again', async () => {
    assert.ok(await externalDbAvailable(), 'the external PostgreSQL of the suite');
    // A TCP proxy in front of the external PostgreSQL stands in for the database host going away.
    const sockets = new Set<net.Socket>();
    let listening = true;
    const proxy = net.createServer((client) => {
      if (!listening) { client.destroy(); return; }
      const upstream = net.connect(5432, '127.0.0.1');
      for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const proxyPort = (proxy.address() as net.AddressInfo).port;
    const direct = await startServer({ embedded: false, env: { KEEP_DB: '1' } });
    const dbName = new URL(direct.env.DATABASE_URL!).pathname.slice(1);
    await direct.stop(); // it made the database; the proxied server uses it
    const server = await startServer({ embedded: false, env: { DATABASE_URL: `postgres://postgres@127.0.0.1:${proxyPort}/${dbName}`, DATABASE_TIMEOUT_MS: '1000' } });
    try {
      const alice = await registerUser(server.baseUrl);
      listening = false;
      for (const s of sockets) s.destroy();
      const t0 = Date.now();
      const res = await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: {} });
      const ms = Date.now() - t0;
      assert.equal(res.status, 503);
      assert.equal(res.body.errcode, 'M_UNKNOWN');
      assert.ok(ms < 10_000, `answered in ${ms} ms`);
      assert.equal((await api(server.baseUrl, 'GET', '/health/ready')).status, 503);
      assert.equal((await api(server.baseUrl, 'GET', '/health')).status, 200, 'still alive');
      listening = true;
      let ok = false;
      for (const end = Date.now() + 20_000; !ok && Date.now() < end;) {
        ok = (await api(server.baseUrl, 'GET', '/health/ready')).status === 200;
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(ok, 'ready again');
      assert.equal((await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).status, 200);
    } finally {
      await server.stop();
      proxy.close();
      for (const s of sockets) s.destroy();
      execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-qc', `DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`], { stdio: 'ignore' });
    }
  });
});

describe('SIGTERM drains', () => {
  test('in-flight sends are answered and persisted, long-polls answered early, an aborted upload holds nothing', async () => {
    const server = await startServer({ env: { KEEP_DB: '1' } });
    try {
      const alice = await registerUser(server.baseUrl);
      const roomId = (await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id as string;
      const since = (await api(server.baseUrl, 'GET', `${C}/sync?timeout=0`, { token: alice.accessToken })).body.next_batch as string;

      // An upload the client gives up on: the server must not keep waiting for it.
      const aborted = await openUpload(server.baseUrl, `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/aborted`, {
        authorization: `Bearer ${alice.accessToken}`, 'content-type': 'application/json', 'content-length': '1000',
      });
      aborted.req.write('{"msgtype":');
      aborted.req.destroy();

      const longPoll = api(server.baseUrl, 'GET', `${C}/sync?timeout=60000&since=${since}&filter=${encodeURIComponent('{"room":{"rooms":[]}}')}`, { token: alice.accessToken });
      // Sends the server has received the headers of, whose bodies arrive after the SIGTERM.
      const uploads = await Promise.all(Array.from({ length: 10 }, (_, i) => openUpload(server.baseUrl, `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/drain${i}`, {
        authorization: `Bearer ${alice.accessToken}`, 'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(JSON.stringify({ msgtype: 'm.text', body: `drain ${i}` }))),
      })));
      const t0 = Date.now();
      const exited = server.stop().then(() => Date.now() - t0);
      // The server has the signal once it stops accepting connections; then the bodies arrive.
      for (let refused = false; !refused;) {
        refused = await new Promise<boolean>((resolve) => {
          const s = net.connect(server.port, '127.0.0.1');
          s.once('connect', () => { s.destroy(); resolve(false); });
          s.once('error', () => resolve(true));
        });
        if (!refused) await new Promise((r) => setTimeout(r, 20));
      }
      uploads.forEach((u, i) => u.req.end(JSON.stringify({ msgtype: 'm.text', body: `drain ${i}` })));
      const answers = await Promise.all(uploads.map((u) => u.response));
      for (const a of answers) assert.equal(a.status, 200, `in-flight send answered: ${JSON.stringify(a.body)}`);
      const poll = await longPoll;
      assert.equal(poll.status, 200, 'the long-poll is answered, not cut');
      const ms = await exited;
      assert.ok(ms < 8_000, `drained in ${ms} ms (an aborted upload must not hold the drain)`);
      assert.doesNotMatch(server.logs(), /still running after the drain timeout/);

      await server.restart();
      const page = await api(server.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, { token: alice.accessToken });
      const bodies = (page.body.chunk as Array<{ type: string; content: { body?: string } }>).filter((e) => e.type === 'm.room.message').map((e) => e.content.body);
      for (let i = 0; i < 10; i++) assert.ok(bodies.includes(`drain ${i}`), `drain ${i} persisted`);
    } finally {
      await server.restart().catch(() => {});
      server.env.KEEP_DB = '';
      await server.stop();
    }
  });
});

describe('npm start', () => {
  test('SIGTERM to the npm process stops the server; no esbuild process outlives the build', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-npm-'));
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    fs.rmSync(path.join(repoRoot, 'dist', 'homeserver.mjs'), { force: true }); // this start rebuilds the bundle
    const env: Record<string, string> = { ...process.env as Record<string, string>, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    delete env.NODE_TEST_CONTEXT;
    let database: string | undefined;
    if (process.env.TEST_BACKEND !== 'embedded' && await externalDbAvailable()) {
      database = `hs_npm_${process.pid}_${Date.now()}`;
      execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-qc', `CREATE DATABASE "${database}"`]);
      env.DATABASE_URL = `postgres://postgres@127.0.0.1:5432/${database}`;
    } else delete env.DATABASE_URL;
    const npm = spawn('npm', ['start'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    npm.stdout.on('data', (d) => (output += d));
    npm.stderr.on('data', (d) => (output += d));
    const npmExit = new Promise<number | null>((r) => npm.on('exit', (code) => r(code)));
    try {
      let up = false;
      for (const end = Date.now() + 120_000; !up && Date.now() < end && npm.exitCode === null;) {
        try { up = (await fetch(`http://127.0.0.1:${port}/health`)).ok; } catch { await new Promise((r) => setTimeout(r, 200)); }
      }
      assert.ok(up, `npm start serves:\n${output}`);
      const descendants = (pid: number): Array<{ pid: number; comm: string }> => {
        const out: Array<{ pid: number; comm: string }> = [];
        for (const line of execFileSync('ps', ['-eo', 'pid=,ppid=,comm='], { encoding: 'utf8' }).trim().split('\n')) {
          const [p, pp, comm] = line.trim().split(/\s+/);
          if (Number(pp) === pid) out.push({ pid: Number(p), comm: comm! }, ...descendants(Number(p)));
        }
        return out;
      };
      const tree = descendants(npm.pid!);
      assert.ok(tree.some((p) => p.comm === 'node'), `the server runs under npm: ${JSON.stringify(tree)}`);
      assert.deepEqual(tree.filter((p) => p.comm.includes('esbuild')), [], 'no esbuild process after the build');
      npm.kill('SIGTERM');
      const code = await Promise.race([npmExit, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000))]);
      assert.notEqual(code, 'hung', 'npm exits');
      for (const p of tree) assert.throws(() => process.kill(p.pid, 0), `pid ${p.pid} (${p.comm}) is gone`);
      await assert.rejects(fetch(`http://127.0.0.1:${port}/health`), 'nothing listens');
    } finally {
      if (npm.exitCode === null) npm.kill('SIGKILL');
      if (database) execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-qc', `DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`], { stdio: 'ignore' });
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
