// Accounts over raw HTTP: registration flows, login, devices, password change, deactivation, profiles.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('accounts', () => {
  let server: TestServer;
  const { call } = roomApi(() => server.baseUrl);
  const login = (user: string, password: string, extra: Record<string, unknown> = {}) =>
    call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, ...extra } });

  before(async () => {
    server = await startServer({ env: { REGISTRATION_SHARED_SECRET: 'sekrit' } });
  });
  after(() => server?.stop());

  test('register: UIA 401 with flows and session, then dummy completes', async () => {
    const first = await call('POST', `${C}/register`, { body: { username: 'dana', password: 'staple-battery-1' } });
    assert.equal(first.status, 401);
    assert.deepEqual(first.body.flows, [{ stages: ['m.login.dummy'] }]);
    assert.equal(typeof first.body.session, 'string');
    const done = await call('POST', `${C}/register`, { body: { username: 'Dana', password: 'staple-battery-1', auth: { type: 'm.login.dummy', session: first.body.session } } });
    assert.equal(done.status, 200);
    assert.equal(done.body.user_id, '@dana:localhost', 'username lowercased');
    assert.ok(done.body.access_token.length >= 43, '256-bit token');
    const who = await call('GET', `${C}/account/whoami`, { token: done.body.access_token });
    assert.deepEqual(who.body, { user_id: '@dana:localhost', device_id: done.body.device_id, is_guest: false });
    const profile = await call('GET', `${C}/profile/${encodeURIComponent('@dana:localhost')}`);
    assert.equal(profile.body.displayname, 'dana');
  });

  test('login flows, login by localpart and by user id, case-insensitive', async () => {
    const flows = await call('GET', `${C}/login`);
    assert.ok(flows.body.flows.some((f: { type: string }) => f.type === 'm.login.password'));
    const u = await registerUser(server.baseUrl, 'erin', 'staple-battery-2');
    for (const who of ['erin', 'ERIN', '@erin:localhost']) {
      const res = await login(who, 'staple-battery-2');
      assert.equal(res.status, 200, who);
      assert.equal(res.body.user_id, u.userId);
    }
    const bad = await call('POST', `${C}/login`, { body: { type: 'm.login.fancy' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, 'M_UNKNOWN');
  });

  test('devices: list, rename, delete with UIA; logout and logout/all', async () => {
    const u = await registerUser(server.baseUrl, 'frank', 'staple-battery-3');
    const second = await login('frank', 'staple-battery-3', { device_id: 'PHONE', initial_device_display_name: 'Phone' });
    assert.equal(second.body.device_id, 'PHONE');
    const list = await call('GET', `${C}/devices`, { token: u.accessToken });
    assert.deepEqual(list.body.devices.map((d: { device_id: string }) => d.device_id).sort(), [u.deviceId, 'PHONE'].sort());
    assert.equal((await call('PUT', `${C}/devices/PHONE`, { token: u.accessToken, body: { display_name: 'My phone' } })).status, 200);
    assert.equal((await call('GET', `${C}/devices/PHONE`, { token: u.accessToken })).body.display_name, 'My phone');
    assert.equal((await call('GET', `${C}/devices/NOPE`, { token: u.accessToken })).status, 404);
    const needAuth = await call('DELETE', `${C}/devices/PHONE`, { token: u.accessToken, body: {} });
    assert.equal(needAuth.status, 401);
    assert.deepEqual(needAuth.body.flows, [{ stages: ['m.login.password'] }]);
    const wrong = await call('DELETE', `${C}/devices/PHONE`, { token: u.accessToken, body: { auth: { type: 'm.login.password', session: needAuth.body.session, identifier: { type: 'm.id.user', user: u.userId }, password: 'nope' } } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.errcode, 'M_FORBIDDEN');
    assert.equal((await call('GET', `${C}/account/whoami`, { token: second.body.access_token })).status, 200, 'failed UIA deletes nothing');
    const ok = await call('DELETE', `${C}/devices/PHONE`, { token: u.accessToken, body: { auth: { type: 'm.login.password', session: needAuth.body.session, identifier: { type: 'm.id.user', user: u.userId }, password: 'staple-battery-3' } } });
    assert.equal(ok.status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: second.body.access_token })).body.errcode, 'M_UNKNOWN_TOKEN');

    const third = await login('frank', 'staple-battery-3');
    assert.equal((await call('POST', `${C}/logout`, { token: third.body.access_token })).status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: third.body.access_token })).status, 401);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: u.accessToken })).status, 200, 'other sessions stay');
    const fourth = await login('frank', 'staple-battery-3');
    assert.equal((await call('POST', `${C}/logout/all`, { token: fourth.body.access_token })).status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: u.accessToken })).status, 401);
  });

  test('password change needs the old password and logs out other sessions', async () => {
    const u = await registerUser(server.baseUrl, 'gina', 'old-password-4');
    const other = await login('gina', 'old-password-4');
    const first = await call('POST', `${C}/account/password`, { token: u.accessToken, body: { new_password: 'new-password-4' } });
    assert.equal(first.status, 401);
    const done = await call('POST', `${C}/account/password`, { token: u.accessToken, body: { new_password: 'new-password-4', auth: { type: 'm.login.password', session: first.body.session, identifier: { type: 'm.id.user', user: 'gina' }, password: 'old-password-4' } } });
    assert.equal(done.status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: u.accessToken })).status, 200, 'this session stays');
    assert.equal((await call('GET', `${C}/account/whoami`, { token: other.body.access_token })).status, 401, 'others are logged out');
    assert.equal((await login('gina', 'old-password-4')).status, 403);
    assert.equal((await login('gina', 'new-password-4')).status, 200);
  });

  test('deactivation: UIA, then no login, tokens dead, rooms left', async () => {
    const u = await registerUser(server.baseUrl, 'hank', 'staple-battery-5');
    const first = await call('POST', `${C}/account/deactivate`, { token: u.accessToken, body: {} });
    assert.equal(first.status, 401);
    const done = await call('POST', `${C}/account/deactivate`, { token: u.accessToken, body: { auth: { type: 'm.login.password', session: first.body.session, user: 'hank', password: 'staple-battery-5' } } });
    assert.equal(done.status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token: u.accessToken })).status, 401);
    assert.equal((await login('hank', 'staple-battery-5')).status, 403);
    const global = (await call('GET', `${C}/directory/room/${encodeURIComponent('#global:localhost')}`)).body.room_id;
    const watcher = await registerUser(server.baseUrl);
    const members = await call('GET', `${C}/rooms/${encodeURIComponent(global)}/joined_members`, { token: watcher.accessToken });
    assert.equal(members.body.joined[u.userId], undefined);
    assert.equal((await call('GET', `${C}/register/available?username=hank`)).body.errcode, 'M_USER_IN_USE', 'the name stays taken');
  });

  test('profile: set displayname and avatar, member events follow, others cannot set it', async () => {
    const u = await registerUser(server.baseUrl, 'ivy', 'staple-battery-6');
    const other = await registerUser(server.baseUrl);
    const path = `${C}/profile/${encodeURIComponent(u.userId)}`;
    assert.equal((await call('PUT', `${path}/displayname`, { token: u.accessToken, body: { displayname: 'Ivy Green' } })).status, 200);
    assert.equal((await call('PUT', `${path}/avatar_url`, { token: u.accessToken, body: { avatar_url: 'mxc://localhost/abc' } })).status, 200);
    assert.deepEqual((await call('GET', path)).body, { displayname: 'Ivy Green', avatar_url: 'mxc://localhost/abc' });
    assert.equal((await call('GET', `${path}/displayname`)).body.displayname, 'Ivy Green');
    const denied = await call('PUT', `${path}/displayname`, { token: other.accessToken, body: { displayname: 'hacked' } });
    assert.equal(denied.status, 403);
    assert.equal((await call('GET', `${path}/displayname`)).body.displayname, 'Ivy Green');
    const global = (await call('GET', `${C}/directory/room/${encodeURIComponent('#global:localhost')}`)).body.room_id;
    // The member events follow off the request path: poll until the latest change shows.
    const memberPath = `${C}/rooms/${encodeURIComponent(global)}/state/m.room.member/${encodeURIComponent(u.userId)}`;
    let member = await call('GET', memberPath, { token: other.accessToken });
    for (const end = Date.now() + 10_000; member.body.avatar_url !== 'mxc://localhost/abc' && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 50));
      member = await call('GET', memberPath, { token: other.accessToken });
    }
    assert.equal(member.body.displayname, 'Ivy Green');
    assert.equal(member.body.avatar_url, 'mxc://localhost/abc');
    const search = await call('POST', `${C}/user_directory/search`, { token: other.accessToken, body: { search_term: 'ivy gr' } });
    assert.ok(search.body.results.some((r: { user_id: string }) => r.user_id === u.userId));
  });

  test('shared-secret registration (Synapse-compatible) creates an admin', async () => {
    const { nonce } = (await call('GET', '/_synapse/admin/v1/register')).body;
    const mac = createHmac('sha1', 'sekrit').update(`${nonce}\x00boss\x00staple-battery-7\x00admin`).digest('hex');
    const bad = await call('POST', '/_synapse/admin/v1/register', { body: { nonce, username: 'boss', password: 'staple-battery-7', admin: true, mac: '00' } });
    assert.equal(bad.status, 403);
    const { nonce: nonce2 } = (await call('GET', '/_synapse/admin/v1/register')).body;
    const mac2 = createHmac('sha1', 'sekrit').update(`${nonce2}\x00boss\x00staple-battery-7\x00admin`).digest('hex');
    const ok = await call('POST', '/_synapse/admin/v1/register', { body: { nonce: nonce2, username: 'boss', password: 'staple-battery-7', admin: true, mac: mac2 } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.user_id, '@boss:localhost');
    assert.ok(mac.length === 40);
  });

  test('registration token mode requires a valid token', async () => {
    const tokenServer = await startServer({ env: { REGISTRATION: 'token' } });
    try {
      const first = await api(tokenServer.baseUrl, 'POST', `${C}/register`, { body: { username: 'tok', password: 'staple-battery-8' } });
      assert.equal(first.status, 401);
      assert.deepEqual(first.body.flows, [{ stages: ['m.login.registration_token'] }]);
      const bad = await api(tokenServer.baseUrl, 'POST', `${C}/register`, { body: { username: 'tok', password: 'staple-battery-8', auth: { type: 'm.login.registration_token', token: 'nope', session: first.body.session } } });
      assert.equal(bad.status, 401);
      assert.equal(bad.body.errcode, 'M_FORBIDDEN');
      const validity = await api(tokenServer.baseUrl, 'GET', '/_matrix/client/v1/register/m.login.registration_token/validity?token=nope');
      assert.deepEqual(validity.body, { valid: false });
    } finally {
      await tokenServer.stop();
    }
    const closed = await startServer({ env: { REGISTRATION: 'closed' } });
    try {
      const res = await api(closed.baseUrl, 'POST', `${C}/register`, { body: { username: 'x', password: 'staple-battery-8', auth: { type: 'm.login.dummy' } } });
      assert.equal(res.status, 403);
      assert.equal(res.body.errcode, 'M_FORBIDDEN');
    } finally {
      await closed.stop();
    }
  });
});
