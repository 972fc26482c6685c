// The homeserver serves the built UIs (chat-ui at /, admin-ui at /admin/) without shadowing any API
// path, and answers admin paths (/_synapse/admin, /_super/admin, /admin/) only to clients whose
// address is in ADMIN_ALLOW — the client's real address behind a trusted proxy, never one a client
// writes into X-Forwarded-For itself. Requests come from chosen loopback addresses (127.0.0.0/8).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot, startServer, type TestServer } from '../helpers/server.ts';
import { closeAgents, request } from '../helpers/addressed.ts';
import { buildApps } from '../../homeserver/webui/build-ui.mjs';

const ADMIN = '127.0.0.2'; // in ADMIN_ALLOW
const OUTSIDER = '127.0.0.1'; // not in ADMIN_ALLOW
const PROXY = '127.0.0.3'; // TRUSTED_PROXIES
const SECRET = 'web-ui-test-shared-secret';
const HTML = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };

let server: TestServer;
let base: string;

before(async () => {
  await buildApps(); // dist/ is built by `npm install`; a fresh checkout under test builds it here
  server = await startServer({ env: { ADMIN_ALLOW: `${ADMIN}/32`, TRUSTED_PROXIES: `${PROXY}/32`, REGISTRATION_SHARED_SECRET: SECRET } });
  base = server.baseUrl;
});
after(async () => {
  closeAgents();
  await server?.stop();
});

function assetOf(html: string): string {
  const m = /src="([^"]+\.js)"/.exec(html);
  assert.ok(m, `index.html names its script: ${html}`);
  return m[1]!;
}

test('the chat app at / and the admin app at /admin/: pages, hashed assets, SPA fallback', async () => {
  const chat = await request(base, 'GET', '/', { from: ADMIN, headers: HTML });
  assert.equal(chat.status, 200);
  assert.match(chat.headers['content-type']!, /^text\/html; charset=utf-8/);
  assert.equal(chat.headers['cache-control'], 'no-cache', 'index.html is revalidated, so a deploy shows at once');
  assert.match(chat.body, /<title>super-server<\/title>/);
  assert.match(String(chat.headers['content-security-policy']), /frame-ancestors 'none'/);
  assert.match(String(chat.headers['content-security-policy']), new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${server.port} wss://127\\.0\\.0\\.1:${server.port};`));
  // A Host header that is not a host name is not written into the policy.
  const odd = await request(base, 'GET', '/', { from: ADMIN, headers: { ...HTML, host: 'a b;script-src *' } });
  assert.doesNotMatch(String(odd.headers['content-security-policy'] ?? ''), /script-src \*/);
  assert.equal(chat.headers['x-frame-options'], 'DENY');
  assert.equal(chat.headers['x-content-type-options'], 'nosniff');
  assert.equal(chat.headers['access-control-allow-origin'], undefined, 'the API\'s CORS is not the UI\'s');

  const script = assetOf(chat.body);
  assert.match(script, /^\/assets\/index-[\w-]+\.js$/);
  const js = await request(base, 'GET', script, { from: ADMIN });
  assert.equal(js.status, 200);
  assert.match(js.headers['content-type']!, /^text\/javascript/);
  assert.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.equal(Number(js.headers['content-length']), fs.statSync(path.join(repoRoot, 'chat-ui', 'dist', script)).size);
  // Revalidation: the ETag comes back as 304 with no body.
  const again = await request(base, 'GET', script, { from: ADMIN, headers: { 'if-none-match': js.headers.etag! } });
  assert.equal(again.status, 304);
  const head = await request(base, 'HEAD', script, { from: ADMIN });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], js.headers['content-length']);

  // A page of the app's own router: index.html, for a browser.
  const deep = await request(base, 'GET', '/rooms/!abc:localhost', { from: ADMIN, headers: HTML });
  assert.equal(deep.status, 200);
  assert.match(deep.body, /<title>super-server<\/title>/);

  const admin = await request(base, 'GET', '/admin/', { from: ADMIN, headers: HTML });
  assert.equal(admin.status, 200);
  assert.match(admin.body, /<title>super-server admin<\/title>/);
  const adminScript = assetOf(admin.body);
  assert.match(adminScript, /^\/admin\/assets\/index-[\w-]+\.js$/, 'built with base /admin/');
  assert.equal((await request(base, 'GET', adminScript, { from: ADMIN })).status, 200);
  const adminDeep = await request(base, 'GET', '/admin/users/@alice:localhost', { from: ADMIN, headers: HTML });
  assert.equal(adminDeep.status, 200);
  assert.match(adminDeep.body, /super-server admin/);
  const bare = await request(base, 'GET', '/admin?x=1', { from: ADMIN, headers: HTML });
  assert.equal(bare.status, 301);
  assert.equal(bare.headers.location, '/admin/?x=1');
});

test('no API path is shadowed, no file outside dist is served', async () => {
  // API paths with a browser's Accept header are still the API's.
  const versions = await request(base, 'GET', '/_matrix/client/versions', { from: ADMIN, headers: HTML });
  assert.equal(versions.status, 200);
  assert.ok(Array.isArray(versions.body.versions));
  for (const p of ['/_matrix/client/v3/nonexistent', '/_synapse/client/nope', '/_super/nope', '/.well-known/nope', '/health/nope', '/metrics']) {
    const r = await request(base, 'GET', p, { from: ADMIN, headers: HTML });
    assert.equal(r.status, 404, p);
    assert.equal(r.body.errcode, 'M_UNRECOGNIZED', p);
  }
  assert.equal((await request(base, 'GET', '/health', { from: ADMIN, headers: HTML })).body.status, 'ok');
  assert.equal((await request(base, 'GET', '/.well-known/matrix/client', { from: ADMIN, headers: HTML })).status, 200);
  // Not a browser (no text/html): an unknown path is the API's 404, not the app.
  const api404 = await request(base, 'GET', '/no/such/endpoint', { from: ADMIN });
  assert.equal(api404.status, 404);
  assert.equal(api404.body.errcode, 'M_UNRECOGNIZED');
  // A missing asset is a 404, not index.html served as JavaScript.
  assert.equal((await request(base, 'GET', '/assets/missing-123.js', { from: ADMIN, headers: HTML })).status, 404);
  // Traversal and hidden files: never served.
  for (const p of ['/%2e%2e/package.json', '/..%2fpackage.json', '/assets/%2e%2e/%2e%2e/package.json', '/.env', '/%00', '/admin/%2e%2e/%2e%2e/package.json']) {
    const r = await request(base, 'GET', p, { from: ADMIN });
    assert.notEqual(r.status, 200, p);
    assert.doesNotMatch(typeof r.body === 'string' ? r.body : JSON.stringify(r.body), /"dependencies"/, p);
  }
  // Writes to UI paths are not the UI's business.
  assert.equal((await request(base, 'POST', '/admin/', { from: ADMIN, body: {} })).status, 404);
});

async function sharedSecretRegister(from: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const nonce = await request(base, 'GET', '/_synapse/admin/v1/register', { from, headers });
  if (nonce.status !== 200) return nonce;
  const username = `admin${Date.now()}${Math.floor(Math.random() * 1e6)}`;
  const password = 'correct horse battery staple';
  const mac = createHmac('sha1', SECRET).update(`${nonce.body.nonce}\0${username}\0${password}\0admin`).digest('hex');
  return request(base, 'POST', '/_synapse/admin/v1/register', { from, headers, body: { nonce: nonce.body.nonce, username, password, admin: true, mac } });
}

test('ADMIN_ALLOW: admin API and dashboard refused outside the ranges, with the real client address', async () => {
  // From an allowed address: the admin API works; the dashboard loads.
  const made = await sharedSecretRegister(ADMIN);
  assert.equal(made.status, 200, JSON.stringify(made.body));
  const token = made.body.access_token as string;
  const userId = made.body.user_id as string;
  const override = `/_synapse/admin/v1/users/${encodeURIComponent(userId)}/override_ratelimit`;
  assert.equal((await request(base, 'GET', override, { from: ADMIN, token })).status, 200);

  // From outside: 403 M_FORBIDDEN, even with a valid admin token, for every admin path.
  for (const [method, p] of [['GET', '/_synapse/admin/v1/register'], ['GET', override], ['GET', '/_super/admin/v1/anything'],
    ['GET', '/admin/'], ['GET', '/admin/assets/x.js'], ['GET', '/admin'], ['GET', '/_synapse//admin/v1/register'], ['GET', '/_synapse/%61dmin/v1/register']] as const) {
    const r = await request(base, method, p, { from: OUTSIDER, token, headers: HTML });
    assert.equal(r.status, 403, `${method} ${p}`);
    assert.equal(r.body.errcode, 'M_FORBIDDEN', `${method} ${p}`);
    assert.match(r.body.error, /ADMIN_ALLOW/);
  }
  // The client API still answers the outsider; the chat app too.
  assert.equal((await request(base, 'GET', '/_matrix/client/v3/account/whoami', { from: OUTSIDER, token })).status, 200);
  assert.equal((await request(base, 'GET', '/', { from: OUTSIDER, headers: HTML })).status, 200);

  // A client cannot claim an allowed address itself: X-Forwarded-For is believed only from TRUSTED_PROXIES.
  const forged = await request(base, 'GET', override, { from: OUTSIDER, token, headers: { 'x-forwarded-for': ADMIN, forwarded: `for=${ADMIN}` } });
  assert.equal(forged.status, 403);
  // Through the trusted proxy, the client it names counts — whichever way.
  assert.equal((await request(base, 'GET', override, { from: PROXY, token, headers: { 'x-forwarded-for': ADMIN } })).status, 200);
  assert.equal((await request(base, 'GET', override, { from: PROXY, token, headers: { 'x-forwarded-for': OUTSIDER } })).status, 403);
  // …and the proxy itself is not an admin address (it carries everyone's requests).
  assert.equal((await request(base, 'GET', override, { from: PROXY, token })).status, 403);
  // A forged hop to the left of the real one does not help either.
  assert.equal((await request(base, 'GET', override, { from: PROXY, token, headers: { 'x-forwarded-for': `${ADMIN}, ${OUTSIDER}` } })).status, 403);
  // Shared-secret registration is an admin path too: refused from outside.
  assert.equal((await sharedSecretRegister(OUTSIDER)).status, 403);
});

test('the build: npm install / npm start rebuild an app whose sources are newer than its dist, and only then', async () => {
  const { isStale } = await import('../../homeserver/webui/build-ui.mjs');
  // A copy of the apps inside the repo (so Vite and Svelte resolve from node_modules), built there.
  const base = fs.mkdtempSync(path.join(repoRoot, '.tmp-ui-build-'));
  try {
    for (const app of ['admin-ui', 'chat-ui']) {
      fs.cpSync(path.join(repoRoot, app), path.join(base, app), { recursive: true, filter: (src) => !src.includes(`${path.sep}dist`) });
    }
    assert.equal(isStale('admin-ui', base), true, 'no dist: stale');
    const lines: string[] = [];
    assert.deepEqual(await buildApps({ base, log: (l: string) => lines.push(l) }), ['admin-ui', 'chat-ui']);
    assert.ok(fs.existsSync(path.join(base, 'admin-ui', 'dist', 'index.html')));
    assert.match(fs.readFileSync(path.join(base, 'admin-ui', 'dist', 'index.html'), 'utf8'), /src="\/admin\/assets\/index-[\w-]+\.js"/);
    assert.equal(isStale('admin-ui', base), false);
    assert.deepEqual(await buildApps({ base, log: () => {} }), [], 'nothing stale: nothing built');
    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(path.join(base, 'chat-ui', 'src', 'App.svelte'), later, later);
    assert.equal(isStale('chat-ui', base), true, 'a source newer than dist');
    assert.deepEqual(await buildApps({ base, log: () => {} }), ['chat-ui']);
    // A broken source fails the build with an error (npm install fails; npm start warns and serves the APIs).
    fs.writeFileSync(path.join(base, 'admin-ui', 'src', 'App.svelte'), '<script>let x = ;</script>');
    await assert.rejects(buildApps({ base, log: () => {} }));
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test('SERVE_ADMIN_UI=off / SERVE_CHAT_UI=off: that app\'s paths are the API\'s 404, not the other app\'s pages', async () => {
  const { default: Koa } = await import('koa');
  const { staticUi } = await import('../../homeserver/webui/static-ui.ts');
  const { webUiMounts } = await import('../../homeserver/webui/mounts.ts');
  const { loadConfig } = await import('../../homeserver/config.ts');
  for (const [env, adminStatus, chatStatus] of [[{ SERVE_ADMIN_UI: 'off' }, 404, 200], [{ SERVE_CHAT_UI: 'off' }, 200, 404], [{}, 200, 200]] as const) {
    const app = new Koa();
    app.use(staticUi(webUiMounts(loadConfig({ ...env, UI_DIR: repoRoot })), () => false));
    app.use((ctx) => { ctx.status = 404; ctx.body = { errcode: 'M_UNRECOGNIZED' }; });
    const srv = app.listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const at = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
    try {
      assert.equal((await request(at, 'GET', '/admin/users', { headers: HTML })).status, adminStatus, JSON.stringify(env));
      assert.equal((await request(at, 'GET', '/rooms', { headers: HTML })).status, chatStatus, JSON.stringify(env));
    } finally {
      closeAgents();
      await new Promise((r) => srv.close(r));
    }
  }
});
