// The production edge, for real: Caddy (the Debian package, installed when absent) runs the repo's
// Caddyfile with TLS_MODE=internal on high ports in front of a real homeserver; the test trusts
// Caddy's local CA and talks HTTPS to it from chosen loopback addresses (127.0.0.0/8), so the
// address the homeserver sees can be told from Caddy's own. Register, a DM, sync, WebSocket sync,
// admin login and the admin API go through it; the admin API is refused from addresses outside
// ADMIN_ALLOW — by Caddy, and by the homeserver itself behind Caddy (the real client's address,
// not Caddy's, and never one the client wrote into X-Forwarded-For or Forwarded).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { WebSocket } from 'ws';
import { launchChromium } from '../helpers/browser.ts';
import { repoRoot, startServer, type TestServer } from '../helpers/server.ts';
import { buildApps } from '../../homeserver/webui/build-ui.mjs';

const C = '/_matrix/client/v3';
const SECRET = 'caddy-test-shared-secret';
const OPERATOR = '127.0.0.1'; // allowed by Caddy and by the homeserver
const EDGE_ONLY = '127.0.0.7'; // allowed by Caddy's ADMIN_ALLOW only: the homeserver must refuse it
const STRANGER = '127.0.0.8'; // allowed by neither
const HTML = { accept: 'text/html' };

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-caddy-'));
let server: TestServer;
let caddy: ChildProcess | undefined;
let caddyLog = '';
let ports: { http: number; https: number; federation: number };
let deadUpstream: number;
let ca: Buffer;
const agents = new Map<string, https.Agent>();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

/** Caddy from Debian, installed when absent (the lead's machine has it; a fresh CI host may not). */
function ensureCaddy(): void {
  if (spawnSync('caddy', ['version']).status === 0) return;
  const r = spawnSync('bash', ['-c', 'apt-get install -y caddy || (apt-get update && apt-get install -y caddy)'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  assert.equal(r.status, 0, 'apt-get install caddy failed');
}

interface EdgeResponse { status: number; body: any; text: string; headers: http.IncomingHttpHeaders }

/** One HTTPS request to Caddy from `from`, as a browser at https://localhost:PORT would make it. */
function edge(method: string, p: string, opts: { from?: string; port?: number; token?: string; body?: unknown; rawBody?: Buffer; headers?: Record<string, string> } = {}): Promise<EdgeResponse> {
  const from = opts.from ?? OPERATOR;
  let agent = agents.get(from);
  if (!agent) agents.set(from, (agent = new https.Agent({ ca, localAddress: from, keepAlive: true, servername: 'localhost' })));
  const port = opts.port ?? ports.https;
  const payload = opts.rawBody ?? (opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body)));
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', servername: 'localhost', port, path: p, method, agent,
      headers: {
        host: `localhost:${port}`,
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        ...opts.headers,
      },
      timeout: 30_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try { body = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body, text, headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${p} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try { const v = await fn(); if (v !== undefined) return v; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not happen in ${ms} ms (${String(last ?? '')})\nCaddy log tail:\n${caddyLog.slice(-3000)}`);
}

before(async () => {
  ensureCaddy();
  await buildApps(); // Caddy serves admin-ui/dist and chat-ui/dist itself
  ports = { http: await freePort(), https: await freePort(), federation: await freePort() };
  deadUpstream = await freePort(); // nothing listens: health checks take it out
  server = await startServer({ env: {
    BIND_ADDRESS: '127.0.0.1',
    PUBLIC_BASEURL: `https://localhost:${ports.https}`,
    TRUSTED_PROXIES: '127.0.0.1/32',
    ADMIN_ALLOW: `${OPERATOR}/32 ::1`, // space-separated, the Caddyfile's form
    REGISTRATION_SHARED_SECRET: SECRET,
  } });
  const home = path.join(tmp, 'home');
  fs.mkdirSync(home);
  caddy = spawn('caddy', ['run', '--config', path.join(repoRoot, 'Caddyfile'), '--adapter', 'caddyfile'], {
    cwd: tmp,
    env: {
      PATH: process.env.PATH, HOME: home, XDG_DATA_HOME: path.join(tmp, 'data'), XDG_CONFIG_HOME: path.join(tmp, 'config'),
      DOMAIN: 'localhost', TLS_MODE: 'internal', CADDY_ADMIN: 'off',
      HTTP_PORT: String(ports.http), HTTPS_PORT: String(ports.https), FEDERATION_PORT: String(ports.federation),
      UPSTREAMS: `127.0.0.1:${deadUpstream} 127.0.0.1:${server.port}`,
      ADMIN_ALLOW: `${OPERATOR}/32 ${EDGE_ONLY}/32 ::1`,
      UI_DIR: repoRoot,
      MAX_REQUEST_BYTES: '1048576',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  caddy.stdout!.on('data', (d) => (caddyLog += d));
  caddy.stderr!.on('data', (d) => (caddyLog += d));
  const root = path.join(tmp, 'data', 'caddy', 'pki', 'authorities', 'local', 'root.crt');
  ca = await waitFor('Caddy\'s local CA', async () => {
    if (caddy!.exitCode !== null) throw new Error(`caddy exited ${caddy!.exitCode}: ${caddyLog.slice(-2000)}`);
    return fs.existsSync(root) ? fs.readFileSync(root) : undefined;
  });
  await waitFor('Caddy serving HTTPS', async () => ((await edge('GET', '/_matrix/client/versions')).status === 200 ? true : undefined));
});

after(async () => {
  for (const a of agents.values()) a.destroy();
  if (caddy && caddy.exitCode === null) {
    caddy.kill('SIGTERM');
    await new Promise((r) => caddy!.once('exit', r));
  }
  await server?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function register(from: string, localpart: string): Promise<{ userId: string; token: string; deviceId: string }> {
  const body = { username: localpart, password: 'correct horse battery staple' };
  let r = await edge('POST', `${C}/register`, { from, body });
  if (r.status === 401) r = await edge('POST', `${C}/register`, { from, body: { ...body, auth: { type: 'm.login.dummy', session: r.body.session } } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { userId: r.body.user_id, token: r.body.access_token, deviceId: r.body.device_id };
}

test('HTTPS with the local CA, HTTP redirected, security headers, discovery, the UIs', async () => {
  const plain = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: ports.http, path: '/_matrix/client/versions?x=1', headers: { host: 'localhost' } }, resolve).on('error', reject);
  });
  plain.resume();
  assert.ok([301, 302, 307, 308].includes(plain.statusCode!), `HTTP redirects (${plain.statusCode})`);
  // Caddy 2.6 leaves a non-standard HTTPS port out of the redirect (production: 443).
  assert.match(String(plain.headers.location), /^https:\/\/localhost(:\d+)?\/_matrix\/client\/versions\?x=1$/);

  const versions = await edge('GET', '/_matrix/client/versions');
  assert.equal(versions.status, 200);
  assert.ok(versions.body.versions.includes('v1.11'));
  assert.match(String(versions.headers['strict-transport-security']), /max-age=\d+/);
  assert.equal(versions.headers['x-content-type-options'], 'nosniff');
  assert.equal(versions.headers['x-frame-options'], 'DENY');
  assert.equal(versions.headers['referrer-policy'], 'strict-origin-when-cross-origin');
  assert.equal(versions.headers.server, undefined);
  assert.equal(versions.headers['access-control-allow-origin'], '*', 'the API\'s CORS passes through');

  const client = await edge('GET', '/.well-known/matrix/client');
  assert.equal(client.status, 200);
  assert.equal(client.body['m.homeserver'].base_url, `https://localhost:${ports.https}`);
  const serverWk = await edge('GET', '/.well-known/matrix/server');
  assert.equal(serverWk.body['m.server'], `localhost:${ports.https}`);

  // The chat app at /, its pages falling back to index.html, under a CSP.
  const chat = await edge('GET', '/rooms/somewhere', { from: STRANGER, headers: HTML });
  assert.equal(chat.status, 200);
  assert.match(chat.text, /<title>super-server<\/title>/);
  const csp = String(chat.headers['content-security-policy']);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.match(csp, /connect-src 'self' wss:\/\/localhost:\d+/);
  assert.equal(chat.headers['cache-control'], 'no-cache');
  const script = /src="([^"]+\.js)"/.exec(chat.text)![1]!;
  const js = await edge('GET', script, { from: STRANGER });
  assert.equal(js.status, 200);
  assert.match(String(js.headers['content-type']), /javascript/);
  assert.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.equal((await edge('GET', '/assets/missing-0000.js', { from: STRANGER })).status, 404, 'a missing asset is not index.html');

  // The admin dashboard at /admin/ for an allowed address.
  const admin = await edge('GET', '/admin/users', { headers: HTML });
  assert.equal(admin.status, 200);
  assert.match(admin.text, /<title>super-server admin<\/title>/);
  const adminScript = /src="([^"]+\.js)"/.exec(admin.text)![1]!;
  assert.match(adminScript, /^\/admin\/assets\//);
  assert.equal((await edge('GET', adminScript)).status, 200);
  const bare = await edge('GET', '/admin');
  assert.equal(bare.status, 301);
  assert.equal(bare.headers.location, '/admin/');

  assert.equal((await edge('GET', '/_synapse/metrics', { headers: HTML })).status, 404, 'only /_synapse/client and /_synapse/admin are passed on');

  // The federation port serves the Matrix API, not the UIs.
  assert.equal((await edge('GET', '/_matrix/client/versions', { port: ports.federation })).status, 200);
  assert.equal((await edge('GET', '/', { port: ports.federation, headers: HTML })).status, 404);
});

test('the Caddyfile\'s other mode (UI_FROM=homeserver) and ACME mode are valid configurations', () => {
  for (const env of [{ UI_FROM: 'homeserver' }, { DOMAIN: 'chat.example.org', UPSTREAMS: '10.0.0.1:8008 10.0.0.2:8008', ADMIN_ALLOW: '10.1.0.0/16 2001:db8::/32' }]) {
    const r = spawnSync('caddy', ['adapt', '--config', path.join(repoRoot, 'Caddyfile'), '--adapter', 'caddyfile'], {
      env: { PATH: process.env.PATH, HOME: tmp, XDG_DATA_HOME: path.join(tmp, 'data'), XDG_CONFIG_HOME: path.join(tmp, 'config'), ...env }, encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    const json = JSON.parse(r.stdout);
    const text = JSON.stringify(json);
    if (env.UPSTREAMS) {
      assert.match(text, /"dial":"10\.0\.0\.1:8008"/);
      assert.match(text, /"dial":"10\.0\.0\.2:8008"/);
      assert.match(text, /"ranges":\["10\.1\.0\.0\/16","2001:db8::\/32"\]/);
      assert.doesNotMatch(text, /"internal"/, 'ACME, not the local CA');
    } else {
      assert.doesNotMatch(text, /"file_server"/, 'the UIs come from the homeserver');
    }
  }
});

test('register, a DM, sync and WebSocket sync through Caddy; the server sees each client\'s own address', async () => {
  const stamp = Date.now().toString(36);
  const alice = await register(EDGE_ONLY, `alice${stamp}`);
  const bob = await register(STRANGER, `bob${stamp}`);
  const created = await edge('POST', `${C}/createRoom`, { from: EDGE_ONLY, token: alice.token, body: { is_direct: true, invite: [bob.userId], preset: 'trusted_private_chat' } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const roomId = created.body.room_id as string;
  const room = encodeURIComponent(roomId);
  assert.equal((await edge('POST', `${C}/rooms/${room}/join`, { from: STRANGER, token: bob.token, body: {} })).status, 200);
  const sent = await edge('PUT', `${C}/rooms/${room}/send/m.room.message/t1`, { from: EDGE_ONLY, token: alice.token, body: { msgtype: 'm.text', body: 'hello over TLS' } });
  assert.equal(sent.status, 200);

  const sync = await edge('GET', `${C}/sync?timeout=0`, { from: STRANGER, token: bob.token });
  assert.equal(sync.status, 200);
  const bodies = sync.body.rooms.join[roomId].timeline.events.map((e: { content: { body?: string } }) => e.content.body);
  assert.ok(bodies.includes('hello over TLS'), JSON.stringify(bodies));

  // A long-poll woken by a message sent while it waits.
  const poll = edge('GET', `${C}/sync?timeout=20000&since=${encodeURIComponent(sync.body.next_batch)}`, { from: STRANGER, token: bob.token });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await edge('PUT', `${C}/rooms/${room}/send/m.room.message/t2`, { from: EDGE_ONLY, token: alice.token, body: { msgtype: 'm.text', body: 'second' } })).status, 200);
  // The long-poll answers with the message (or with an earlier change, presence say: then the next one does).
  let woken = await poll;
  const seen: string[] = [];
  for (let i = 0; i < 5; i++) {
    assert.equal(woken.status, 200);
    seen.push(...(woken.body.rooms?.join?.[roomId]?.timeline.events ?? []).map((e: { content: { body?: string } }) => e.content.body));
    if (seen.includes('second')) break;
    woken = await edge('GET', `${C}/sync?timeout=10000&since=${encodeURIComponent(woken.body.next_batch)}`, { from: STRANGER, token: bob.token });
  }
  assert.deepEqual(seen, ['second']);

  // WebSocket sync through Caddy's reverse proxy (wss://).
  const frame = await new Promise<any>((resolve, reject) => {
    const ws = new WebSocket(`wss://localhost:${ports.https}/_matrix/client/unstable/io.superserver/sync?since=${encodeURIComponent(woken.body.next_batch)}`, {
      ca, headers: { authorization: `Bearer ${bob.token}` }, localAddress: STRANGER,
    } as ConstructorParameters<typeof WebSocket>[2]);
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('no WebSocket frame')); }, 15_000);
    ws.once('message', (data) => { clearTimeout(timer); ws.close(); resolve(JSON.parse(String(data))); });
    ws.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
  assert.equal(typeof frame.next_batch, 'string');

  // A client's own X-Forwarded-For and Forwarded do not reach the server as its address.
  const forged = { 'x-forwarded-for': '10.9.9.9', forwarded: 'for=10.9.9.9', 'x-real-ip': '10.9.9.9' };
  assert.equal((await edge('GET', `${C}/account/whoami`, { from: STRANGER, token: bob.token, headers: forged })).status, 200);

  // The server noted each device's address: the client's, not Caddy's (127.0.0.1) nor a forged one.
  for (const [who, from] of [[alice, EDGE_ONLY], [bob, STRANGER]] as const) {
    const ip = await waitFor(`${from}'s last_seen_ip`, async () => {
      const devices = await edge('GET', `${C}/devices`, { from, token: who.token });
      const mine = (devices.body.devices as Array<{ device_id: string; last_seen_ip?: string }>).find((d) => d.device_id === who.deviceId);
      return mine?.last_seen_ip ?? undefined;
    });
    assert.equal(ip, from);
  }
});

async function sharedSecretRegister(from: string, headers: Record<string, string> = {}): Promise<EdgeResponse> {
  const nonce = await edge('GET', '/_synapse/admin/v1/register', { from, headers });
  if (nonce.status !== 200) return nonce;
  const username = `admin${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
  const mac = createHmac('sha1', SECRET).update(`${nonce.body.nonce}\0${username}\0correct horse battery staple\0admin`).digest('hex');
  return edge('POST', '/_synapse/admin/v1/register', { from, headers, body: { nonce: nonce.body.nonce, username, password: 'correct horse battery staple', admin: true, mac } });
}

test('admin login and the admin API from ADMIN_ALLOW only, refused by Caddy and by the homeserver behind it', async () => {
  const made = await sharedSecretRegister(OPERATOR);
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const login = await edge('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: made.body.user_id }, password: 'correct horse battery staple' } });
  assert.equal(login.status, 200);
  const token = login.body.access_token as string;
  const override = `/_synapse/admin/v1/users/${encodeURIComponent(made.body.user_id)}/override_ratelimit`;
  const allowed = await edge('GET', override, { token });
  assert.equal(allowed.status, 200, JSON.stringify(allowed.body));

  // A stranger: Caddy refuses at the edge, whatever headers it sends.
  for (const headers of [{}, { 'x-forwarded-for': OPERATOR }, { forwarded: `for=${OPERATOR}` }] as Array<Record<string, string>>) {
    for (const p of [override, '/_synapse/admin/v1/register', '/_super/admin/v1/x', '/admin/', '/admin/users']) {
      const r = await edge('GET', p, { from: STRANGER, token, headers: { ...HTML, ...headers } });
      assert.equal(r.status, 403, `${p} ${JSON.stringify(headers)}`);
      assert.equal(r.body.errcode, 'M_FORBIDDEN');
    }
  }
  // Path tricks Caddy's matcher may not see still meet the homeserver's lock (the real address).
  for (const p of ['/_synapse//admin/v1/register', '/_synapse/%61dmin/v1/register']) {
    const r = await edge('GET', p, { from: STRANGER, token });
    assert.equal(r.status, 403, p);
    assert.equal(r.body.errcode, 'M_FORBIDDEN', p);
  }

  // Allowed by Caddy's list but not by the homeserver's: the homeserver sees the client's address
  // (not Caddy's loopback, which it allows) and refuses — also when the client claims the operator's.
  for (const headers of [{}, { 'x-forwarded-for': OPERATOR }, { forwarded: `for=${OPERATOR}` }, { 'x-forwarded-for': `${OPERATOR}, ${OPERATOR}` }] as Array<Record<string, string>>) {
    const r = await edge('GET', override, { from: EDGE_ONLY, token, headers });
    assert.equal(r.status, 403, JSON.stringify(headers));
    assert.equal(r.body.errcode, 'M_FORBIDDEN');
    assert.doesNotMatch(r.body.error, /Caddy/, 'refused by the homeserver, not at the edge');
  }
  assert.equal((await sharedSecretRegister(EDGE_ONLY)).status, 403);
});

test('request bodies over the server\'s limit are refused at the edge', async () => {
  const alice = await register(EDGE_ONLY, `big${Date.now().toString(36)}`);
  const big = Buffer.from(JSON.stringify({ msgtype: 'm.text', body: 'x'.repeat(1_100_000) }));
  const r = await edge('PUT', `${C}/rooms/${encodeURIComponent('!nowhere:localhost')}/send/m.room.message/big`, { from: EDGE_ONLY, token: alice.token, rawBody: big });
  assert.equal(r.status, 413);
  assert.equal(r.body.errcode, 'M_TOO_LARGE');
  // Just under the limit passes the edge (and the homeserver answers for the unknown room).
  const fits = Buffer.from(JSON.stringify({ msgtype: 'm.text', body: 'x'.repeat(1_000_000) }));
  const ok = await edge('PUT', `${C}/rooms/${encodeURIComponent('!nowhere:localhost')}/send/m.room.message/fits`, { from: EDGE_ONLY, token: alice.token, rawBody: fits });
  assert.notEqual(ok.status, 413);
  assert.notEqual(ok.status, 502);
  // Uploads have their own, larger limit (MAX_UPLOAD_BYTES): 1.1 MB of media is fine.
  const upload = await edge('POST', '/_matrix/media/v3/upload?filename=a.bin', { from: EDGE_ONLY, token: alice.token, rawBody: Buffer.alloc(1_100_000, 7), headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(upload.status, 200, JSON.stringify(upload.body));
  assert.match(upload.body.content_uri, /^mxc:\/\/localhost\//);
});

test('load balancing with health checks: a dead upstream in UPSTREAMS costs no request', async () => {
  // Every request of the tests above went through a rotation of two upstreams, one of them dead.
  const results = await Promise.all(Array.from({ length: 20 }, () => edge('GET', '/_matrix/client/versions')));
  assert.deepEqual(results.map((r) => r.status), Array(20).fill(200));
  // Caddy's active health check found it down (and says so in its log).
  assert.match(caddyLog, new RegExp(`127\\.0\\.0\\.1:${deadUpstream}`), 'the health checker probed the dead upstream');
});

test('both apps run in Chromium through Caddy under its CSP, and talk to the homeserver', async () => {
  // The test's own CA is not in Chromium's store; the certificate itself was checked above.
  const browser = await launchChromium(['--ignore-certificate-errors']);
  try {
    const page = await browser.newPage();
    const violations: string[] = [];
    page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text()); });
    page.on('pageerror', (e) => violations.push(e.message));
    for (const [url, title] of [['/admin/', 'super-server admin'], ['/rooms/x', 'super-server chat']] as const) {
      await page.goto(`https://localhost:${ports.https}${url}`);
      await page.getByRole('heading', { name: title }).waitFor({ timeout: 15_000 });
      // The app fetched /_matrix/client/versions (connect-src 'self') and shows the newest version.
      const version = await page.getByTestId('server-version').textContent({ timeout: 15_000 });
      assert.match(version ?? '', /^v1\.\d+$/);
    }
    assert.deepEqual(violations, [], 'no CSP violation, no script error');
  } finally {
    await browser.close();
  }
});
