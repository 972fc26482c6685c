// Abuse limits on accounts (issue 7, deliverable 2): the password policy, devices per user capped
// (evict or refuse), user-interactive-auth sessions and shared-secret nonces that expire and are
// capped so that unauthenticated requests cannot grow a table or a map without bound (the nonces'
// cap: tests/unit/shared-state-nonces.test.ts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, rawApi, registerUser, roomApi } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';

const C = '/_matrix/client/v3';

/** Runs `n` calls of `f`, `concurrency` at a time. */
async function pool<T>(n: number, concurrency: number, f: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) { const i = next++; out[i] = await f(i); }
  }));
  return out;
}

describe('abuse limits: accounts (devices evicted)', () => {
  let server: TestServer;
  const { call } = roomApi(() => server.baseUrl);
  const login = (user: string, password: string, extra: Record<string, unknown> = {}) =>
    call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, ...extra } });

  before(async () => {
    server = await startServer({ env: { MAX_DEVICES_PER_USER: '3', PASSWORD_MIN_LENGTH: '10', REGISTRATION_SHARED_SECRET: 'sekrit', RATE_LIMITS: 'off' } });
  });
  after(() => server?.stop());

  test('password policy on registration: empty, short, the username, containing it → 400 M_WEAK_PASSWORD, nothing stored', async () => {
    const cases: Array<[string, string]> = [
      ['', 'empty'], ['abcdefghi', 'nine characters'], ['Weak.Walter', 'the username, another case'], ['my-weak.walter-password', 'containing the username'],
    ];
    for (const [password, why] of cases) {
      const res = await call('POST', `${C}/register`, { body: { username: 'weak.walter', password, auth: { type: 'm.login.dummy' } } });
      assert.equal(res.status, 400, why);
      assert.equal(res.body.errcode, 'M_WEAK_PASSWORD', why);
    }
    assert.equal((await call('GET', `${C}/register/available?username=weak.walter`)).status, 200, 'no account was made');
    // The policy comes before the UIA session: a refused password starts none.
    const ok = await call('POST', `${C}/register`, { body: { username: 'weak.walter', password: 'a strong enough one', auth: { type: 'm.login.dummy' } } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    // Shared-secret registration follows the same policy.
    const nonce = (await call('GET', '/_synapse/admin/v1/register')).body.nonce as string;
    const mac = createHmac('sha1', 'sekrit').update(`${nonce}\x00shorty\x00short\x00notadmin`).digest('hex');
    const admin = await call('POST', '/_synapse/admin/v1/register', { body: { nonce, username: 'shorty', password: 'short', mac } });
    assert.equal(admin.body.errcode, 'M_WEAK_PASSWORD');
  });

  test('password policy on /account/password: refused before the UIA, the old password still works', async () => {
    const u = await registerUser(server.baseUrl, 'pat', 'the first password');
    for (const weak of ['', 'tiny', 'pat-and-more-pat']) {
      const res = await call('POST', `${C}/account/password`, {
        token: u.accessToken, body: { new_password: weak, auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.userId }, password: 'the first password' } },
      });
      assert.equal(res.status, 400, weak);
      assert.equal(res.body.errcode, 'M_WEAK_PASSWORD', weak);
    }
    assert.equal((await login('pat', 'the first password')).status, 200);
    // Short names are not looked for inside passwords (almost any would contain them), only equality.
    const al = await registerUser(server.baseUrl, 'al', 'totally alright pass');
    assert.ok(al.accessToken);
  });

  test('devices capped at 3: the least recently seen is logged out (tokens revoked), the newest kept', async () => {
    const u = await registerUser(server.baseUrl, 'dev.user', 'device user password');
    const tokens = [u.accessToken];
    for (let i = 0; i < 4; i++) {
      const res = await login('dev.user', 'device user password', { device_id: `D${i}` });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      tokens.push(res.body.access_token);
      await new Promise((r) => setTimeout(r, 5)); // distinct last-seen times
    }
    const devices = (await call('GET', `${C}/devices`, { token: tokens[4] })).body.devices.map((d: { device_id: string }) => d.device_id).sort();
    assert.deepEqual(devices, ['D1', 'D2', 'D3']);
    for (const t of tokens.slice(0, 2)) {
      const who = await call('GET', `${C}/account/whoami`, { token: t });
      assert.equal(who.status, 401, 'an evicted device token is revoked');
      assert.equal(who.body.errcode, 'M_UNKNOWN_TOKEN');
    }
    for (const t of tokens.slice(2)) assert.equal((await call('GET', `${C}/account/whoami`, { token: t })).status, 200);
    // Logging in again on a device the user still has makes no new device: nothing is evicted.
    const again = await login('dev.user', 'device user password', { device_id: 'D1' });
    assert.equal(again.status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: tokens[3] })).status, 200);
  });
});

describe('abuse limits: accounts (devices refused; UIA flood)', () => {
  let server: TestServer;
  const { call } = roomApi(() => server.baseUrl);

  before(async () => {
    server = await startServer({
      env: { MAX_DEVICES_PER_USER: '2', DEVICE_LIMIT_POLICY: 'refuse', UIA_SESSION_LIFETIME_MS: '2000', UIA_MAX_SESSIONS: '100', RATE_LIMITS: 'off' },
    });
  });
  after(() => server?.stop());

  test('DEVICE_LIMIT_POLICY=refuse: a login past the cap is refused with a clear error; known devices still log in', async () => {
    const u = await registerUser(server.baseUrl, 'refused.user', 'refused user password');
    const login = (extra: Record<string, unknown> = {}) =>
      call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'refused.user' }, password: 'refused user password', ...extra } });
    assert.equal((await login({ device_id: 'SECOND' })).status, 200);
    const third = await login();
    assert.equal(third.status, 403);
    assert.equal(third.body.errcode, 'M_FORBIDDEN');
    assert.match(third.body.error, /Too many sessions/);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: u.accessToken })).status, 200, 'nobody was logged out');
    assert.equal((await login({ device_id: 'SECOND' })).status, 200, 'an existing device may log in again');
  });

  test('2,000 unauthenticated POST /register: uia_sessions stays at the cap; sessions expire', async () => {
    const db = await connectDatabase(server);
    try {
      const statuses = await pool(2_000, 20, async () => (await rawApi(server.baseUrl, 'POST', `${C}/register`, undefined, { username: `flood${Math.random().toString(36).slice(2, 10)}`, password: 'flooding password' })).status);
      assert.ok(statuses.every((s) => s === 401), 'each got its UIA challenge');
      const rows = (await db.query('SELECT count(*)::int AS n FROM uia_sessions')).rows[0].n as number;
      // Exact up to the inserts in flight at once (20 here): each trims what it sees committed.
      assert.ok(rows <= 100 + 20, `uia_sessions holds ${rows} rows (cap 100)`);
      // A real client still registers during (right after) the flood.
      const legit = await registerUser(server.baseUrl, 'after.flood', 'after the flood pw');
      assert.ok(legit.accessToken);

      // Past its lifetime a session is unknown, and the next new session deletes the expired ones.
      const challenge = await api(server.baseUrl, 'POST', `${C}/register`, { body: { username: 'slowpoke', password: 'patient password!' } });
      await new Promise((r) => setTimeout(r, 2_500));
      const late = await api(server.baseUrl, 'POST', `${C}/register`, {
        body: { username: 'slowpoke', password: 'patient password!', auth: { type: 'm.login.dummy', session: challenge.body.session } },
      });
      assert.equal(late.status, 400);
      assert.match(late.body.error, /Unknown UIA session/);
      await api(server.baseUrl, 'POST', `${C}/register`, { body: { username: 'fresh', password: 'a new password 1' } });
      const left = (await db.query('SELECT count(*)::int AS n FROM uia_sessions')).rows[0].n as number;
      assert.equal(left, 1, 'expired sessions were deleted');
    } finally {
      await db.end();
    }
  });
});
