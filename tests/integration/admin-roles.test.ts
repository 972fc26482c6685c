// Issue 9 (roles9): server roles and permissions, rank rules, the audit log, the admin CLI, the
// server commands, the OpenAPI document and the server's rooms moderated by server moderators.
// One server for the file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rawApi } from '../helpers/client.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { adminCli, audit, createUser, login, loginToken } from '../helpers/admin.ts';

const S = '/_super/admin/v1';
const A = '/_synapse/admin';
const C = '/_matrix/client/v3';
const enc = encodeURIComponent;

let server: TestServer;
let base: string;
let owner: string; // token
const OWNER_PW = 'owner password 123';

before(async () => {
  server = await startServer({ env: { AUTO_JOIN_ROOMS: '#global:localhost', LOG_LEVEL: 'info' } });
  base = server.baseUrl;
  const made = await adminCli(server, ['create-user', 'boss', '--role', 'owner'], `${OWNER_PW}\n`);
  assert.equal(made.code, 0, made.stderr);
  assert.match(made.stdout, /created @boss:localhost with the role owner/);
  owner = await loginToken(base, 'boss', OWNER_PW);
});
after(async () => { await server?.stop(); });

/** Exactly one new audit entry since `before` (by id), with these fields. */
async function oneNewEntry(since: number, fields: Record<string, unknown>): Promise<any> {
  const entries = (await audit(base, owner)).filter((e) => e.id > since);
  assert.equal(entries.length, 1, `one audit entry expected, got ${JSON.stringify(entries)}`);
  for (const [k, v] of Object.entries(fields)) assert.deepEqual(entries[0][k], v, `audit ${k}`);
  assert.equal(typeof entries[0].ip, 'string');
  assert.ok(entries[0].ts > Date.now() - 60_000 && entries[0].ts <= Date.now());
  return entries[0];
}
const lastId = async () => (await audit(base, owner, 'limit=1'))[0]?.id ?? 0;

describe('the CLI', () => {
  test('create-user --role owner made an owner who can log in; the CLI action is audited', async () => {
    const me = await rawApi(base, 'GET', `${S}/me`, owner);
    assert.equal(me.status, 200);
    assert.equal(me.body.role, 'owner');
    assert.equal(me.body.rank, 100);
    assert.ok(me.body.permissions.includes('server.shutdown'));
    const entry = (await audit(base, owner, 'action=user.create&target=' + enc('@boss:localhost')))[0];
    assert.match(entry.actor, /^cli:/);
    assert.equal(entry.outcome, 'ok');
    // Synapse's admin flag follows the role.
    assert.equal((await rawApi(base, 'GET', `${A}/v1/users/${enc('@boss:localhost')}/admin`, owner)).body.admin, true);
  });

  test('create-token makes a registration token usable at once; bad arguments are refused', async () => {
    const r = await adminCli(server, ['create-token', '--uses', '2', '--expires', '7d']);
    assert.equal(r.code, 0, r.stderr);
    const token = r.stdout.trim();
    assert.match(token, /^[A-Za-z0-9._~-]{16}$/);
    const got = await rawApi(base, 'GET', `${A}/v1/registration_tokens/${token}`, owner);
    assert.equal(got.status, 200);
    assert.equal(got.body.uses_allowed, 2);
    assert.ok(got.body.expiry_time > Date.now() + 6 * 86_400_000);
    const named = await adminCli(server, ['create-token', '--token', 'hello-there']);
    assert.equal(named.stdout.trim(), 'hello-there');
    const again = await adminCli(server, ['create-token', '--token', 'hello-there']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /exists already/);
    const bad = await adminCli(server, ['create-token', '--uses', 'many']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--uses/);
    const noPassword = await adminCli(server, ['create-user', 'nopw'], '');
    assert.notEqual(noPassword.code, 0);
    assert.equal((await login(base, 'nopw', 'x')).status, 403);
  });
});

describe('roles and rank rules', () => {
  let admin: { userId: string; token: string };
  let mod: { userId: string; token: string };
  let support: { userId: string; token: string };
  let plain: { userId: string; token: string };

  before(async () => {
    admin = await createUser(base, owner, 'anna');
    mod = await createUser(base, owner, 'moritz');
    support = await createUser(base, owner, 'sue');
    plain = await createUser(base, owner, 'paul');
    for (const [u, role] of [[admin, 'admin'], [mod, 'moderator'], [support, 'support']] as const) {
      const r = await rawApi(base, 'PUT', `${S}/users/${enc(u.userId)}/role`, owner, { role });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.to, role);
    }
  });

  test('no token: 401; no permission: 403 naming it, and nothing changes', async () => {
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users`)).status, 401);
    const r = await rawApi(base, 'GET', `${A}/v2/users`, plain.token);
    assert.equal(r.status, 403);
    assert.equal(r.body.errcode, 'M_FORBIDDEN');
    assert.match(r.body.error, /users\.read/);
    const since = await lastId();
    const w = await rawApi(base, 'PUT', `${A}/v2/users/${enc(plain.userId)}`, support.token, { displayname: 'hacked' });
    assert.equal(w.status, 403);
    assert.match(w.body.error, /users\.write/);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(plain.userId)}`, support.token)).body.displayname, 'paul');
    await oneNewEntry(since, { actor: support.userId, outcome: 'denied', action: 'PUT /_synapse/admin/v2/users/:userId' });
  });

  test('a moderator cannot ban an admin; can suspend a user (one audit entry each)', async () => {
    let since = await lastId();
    const r = await rawApi(base, 'POST', `${A}/v1/deactivate/${enc(admin.userId)}`, mod.token, { erase: false });
    assert.equal(r.status, 403);
    assert.equal(r.body.errcode, 'M_FORBIDDEN');
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(admin.userId)}`, owner)).body.deactivated, false);
    assert.equal((await rawApi(base, 'GET', `${S}/me`, admin.token)).status, 200, 'the admin still works');
    await oneNewEntry(since, { actor: mod.userId, target: admin.userId, outcome: 'denied' });
    since = await lastId();
    const s = await rawApi(base, 'PUT', `${A}/v1/suspend/${enc(plain.userId)}`, mod.token, { suspend: true });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    assert.deepEqual(s.body, { [`user_${plain.userId}_suspended`]: true });
    await oneNewEntry(since, { actor: mod.userId, action: 'user.suspend', target: plain.userId, outcome: 'ok' });
    assert.equal((await rawApi(base, 'PUT', `${A}/v1/suspend/${enc(plain.userId)}`, mod.token, { suspend: false })).status, 200);
    // Equal rank: a moderator does not act on another moderator.
    const mod2 = await createUser(base, owner, 'mona');
    await rawApi(base, 'PUT', `${S}/users/${enc(mod2.userId)}/role`, owner, { role: 'moderator' });
    assert.equal((await rawApi(base, 'PUT', `${A}/v1/suspend/${enc(mod2.userId)}`, mod.token, { suspend: true })).status, 403);
  });

  test('an admin cannot grant server.shutdown (nor the owner role) without holding it', async () => {
    const since = await lastId();
    const r = await rawApi(base, 'POST', `${S}/roles`, admin.token, { name: 'ops', rank: 10, permissions: ['server.shutdown'] });
    assert.equal(r.status, 403);
    assert.match(r.body.error, /server\.shutdown/);
    await oneNewEntry(since, { actor: admin.userId, action: 'role.define', target: 'ops', outcome: 'denied' });
    assert.ok(!(await rawApi(base, 'GET', `${S}/roles`, owner)).body.roles.some((x: any) => x.name === 'ops'));
    const own = await rawApi(base, 'PUT', `${S}/users/${enc(plain.userId)}/role`, admin.token, { role: 'owner' });
    assert.equal(own.status, 403);
    assert.equal((await rawApi(base, 'GET', `${S}/users/${enc(plain.userId)}/role`, owner)).body.role, 'user');
    // Nor may anyone raise themselves.
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(mod.userId)}/role`, mod.token, { role: 'admin' })).status, 403);
  });

  test('an owner is demoted by another owner only', async () => {
    const second = await createUser(base, owner, 'olga');
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(second.userId)}/role`, owner, { role: 'owner' })).status, 200);
    const byAdmin = await rawApi(base, 'PUT', `${S}/users/${enc(second.userId)}/role`, admin.token, { role: 'user' });
    assert.equal(byAdmin.status, 403);
    const flag = await rawApi(base, 'PUT', `${A}/v1/users/${enc(second.userId)}/admin`, admin.token, { admin: false });
    assert.equal(flag.status, 403);
    assert.equal((await rawApi(base, 'GET', `${S}/users/${enc(second.userId)}/role`, owner)).body.role, 'owner');
    const since = await lastId();
    const byOwner = await rawApi(base, 'PUT', `${S}/users/${enc(second.userId)}/role`, owner, { role: 'admin' });
    assert.equal(byOwner.status, 200);
    assert.deepEqual(byOwner.body, { user_id: second.userId, from: 'owner', to: 'admin' });
    await oneNewEntry(since, { action: 'role.assign', target: second.userId, outcome: 'ok', details: { role: 'admin' } });
    // The server's own account is out of reach, even for an owner.
    assert.equal((await rawApi(base, 'POST', `${A}/v1/deactivate/${enc('@_server:localhost')}`, owner, {})).status, 403);
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc('@_server:localhost')}/role`, owner, { role: 'user' })).status, 403);
  });

  test('admins define roles below their rank with permissions they hold; a held role cannot be deleted', async () => {
    const bad = await rawApi(base, 'POST', `${S}/roles`, admin.token, { name: 'helpdesk', rank: 30, permissions: ['users.read', 'no.such'] });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /permissions/);
    assert.equal((await rawApi(base, 'POST', `${S}/roles`, admin.token, { name: 'helpdesk', rank: 90, permissions: ['users.read'] })).status, 403);
    assert.equal((await rawApi(base, 'POST', `${S}/roles`, admin.token, { name: 'helpdesk', permissions: ['users.read'] })).status, 400);
    const made = await rawApi(base, 'POST', `${S}/roles`, admin.token, { name: 'helpdesk', rank: 30, permissions: ['users.read', 'reports.handle'], description: 'first line' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const helper = await createUser(base, owner, 'hank');
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(helper.userId)}/role`, admin.token, { role: 'helpdesk' })).status, 200);
    const me = await rawApi(base, 'GET', `${S}/me`, helper.token);
    assert.deepEqual([me.body.role, me.body.rank, me.body.permissions], ['helpdesk', 30, ['users.read', 'reports.handle']]);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users?limit=1`, helper.token)).status, 200);
    assert.equal((await rawApi(base, 'PUT', `${A}/v1/suspend/${enc(plain.userId)}`, helper.token, { suspend: true })).status, 403);
    const held = await rawApi(base, 'DELETE', `${S}/roles/helpdesk`, admin.token);
    assert.equal(held.status, 409);
    const assignments = (await rawApi(base, 'GET', `${S}/roles/assignments?role=helpdesk`, admin.token)).body.assignments;
    assert.deepEqual(assignments.map((a: any) => a.user_id), [helper.userId]);
    assert.equal((await rawApi(base, 'PUT', `${S}/roles/helpdesk`, admin.token, { rank: 35, permissions: ['users.read'] })).status, 200);
    assert.deepEqual((await rawApi(base, 'GET', `${S}/me`, helper.token)).body.permissions, ['users.read']);
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(helper.userId)}/role`, admin.token, { role: 'user' })).status, 200);
    assert.equal((await rawApi(base, 'DELETE', `${S}/roles/helpdesk`, admin.token)).status, 200);
    assert.equal((await rawApi(base, 'DELETE', `${S}/roles/moderator`, owner)).status, 400, 'built-in roles stay');
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(helper.userId)}/role`, admin.token, { role: 'nope' })).status, 400);
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc('@ghost:localhost')}/role`, admin.token, { role: 'support' })).status, 404);
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(helper.userId)}/role`, admin.token, { rol: 'support' })).status, 400);
  });

  test('the audit log filters by actor, action, target, outcome and time, and pages', async () => {
    const byMod = await audit(base, owner, `actor=${enc(mod.userId)}`);
    assert.ok(byMod.length >= 3 && byMod.every((e) => e.actor === mod.userId));
    const roleActions = await audit(base, owner, 'action=role.');
    assert.ok(roleActions.length >= 3 && roleActions.every((e) => e.action.startsWith('role.')));
    const denied = await audit(base, owner, 'outcome=denied');
    assert.ok(denied.length >= 3 && denied.every((e) => e.outcome === 'denied'));
    const onPaul = await audit(base, owner, `target=${enc(plain.userId)}&action=user.suspend`);
    assert.equal(onPaul.length, 1);
    assert.equal((await audit(base, owner, `since=${Date.now() + 60_000}`)).length, 0);
    const page1 = await rawApi(base, 'GET', `${S}/audit?limit=2`, owner);
    assert.equal(page1.body.entries.length, 2);
    const page2 = await rawApi(base, 'GET', `${S}/audit?limit=2&from=${page1.body.next_token}`, owner);
    assert.ok(page2.body.entries[0].id < page1.body.entries[1].id);
    assert.equal((await rawApi(base, 'GET', `${S}/audit?outcome=maybe`, owner)).status, 400);
    assert.equal((await rawApi(base, 'GET', `${S}/audit`, mod.token)).status, 403, 'moderators do not read the audit log');
    assert.equal((await rawApi(base, 'GET', `${S}/audit`, admin.token)).status, 200);
  });

  test("server moderators moderate the global room through the client API", async () => {
    const globalId = (await rawApi(base, 'GET', `${C}/directory/room/${enc('#global:localhost')}`)).body.room_id;
    assert.ok(globalId);
    const pl = await rawApi(base, 'GET', `${C}/rooms/${enc(globalId)}/state/m.room.power_levels/`, mod.token);
    assert.equal(pl.body.users[mod.userId], 50);
    assert.equal(pl.body.users[plain.userId], undefined);
    const topic = await rawApi(base, 'PUT', `${C}/rooms/${enc(globalId)}/state/m.room.topic/`, mod.token, { topic: 'be nice' });
    assert.equal(topic.status, 200, JSON.stringify(topic.body));
    const msg = await rawApi(base, 'PUT', `${C}/rooms/${enc(globalId)}/send/m.room.message/t1`, plain.token, { msgtype: 'm.text', body: 'spam' });
    assert.equal(msg.status, 200);
    const redact = await rawApi(base, 'PUT', `${C}/rooms/${enc(globalId)}/redact/${enc(msg.body.event_id)}/r1`, mod.token, { reason: 'spam' });
    assert.equal(redact.status, 200, JSON.stringify(redact.body));
    const kick = await rawApi(base, 'POST', `${C}/rooms/${enc(globalId)}/kick`, mod.token, { user_id: plain.userId, reason: 'spam' });
    assert.equal(kick.status, 200, JSON.stringify(kick.body));
    // A plain user cannot; a demoted moderator loses the level.
    assert.equal((await rawApi(base, 'PUT', `${C}/rooms/${enc(globalId)}/state/m.room.topic/`, support.token, { topic: 'mine' })).status, 403);
    const demoted = await createUser(base, owner, 'dora');
    await rawApi(base, 'PUT', `${S}/users/${enc(demoted.userId)}/role`, owner, { role: 'moderator' });
    assert.equal((await rawApi(base, 'GET', `${C}/rooms/${enc(globalId)}/state/m.room.power_levels/`, mod.token)).body.users[demoted.userId], 50);
    await rawApi(base, 'PUT', `${S}/users/${enc(demoted.userId)}/role`, owner, { role: 'user' });
    assert.equal((await rawApi(base, 'GET', `${C}/rooms/${enc(globalId)}/state/m.room.power_levels/`, mod.token)).body.users[demoted.userId], undefined);
  });

  test('commands: ping, create_user, change_permission_level, set_user, show_online_users, verify_user', async () => {
    const ping = await rawApi(base, 'POST', `${S}/commands/ping`, support.token, {});
    assert.equal(ping.status, 200);
    assert.equal(ping.body.pong, true);
    assert.equal((await rawApi(base, 'POST', `${S}/commands/ping`, plain.token, {})).status, 403);
    let since = await lastId();
    const made = await rawApi(base, 'POST', `${S}/commands/create_user`, admin.token, { username: 'carl', password: 'secret words 1', role: 'support' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal(made.body.role, 'support');
    await oneNewEntry(since, { actor: admin.userId, action: 'user.create', target: '@carl:localhost', outcome: 'ok' });
    assert.equal((await login(base, 'carl', 'secret words 1')).status, 200);
    assert.equal((await rawApi(base, 'POST', `${S}/commands/create_user`, admin.token, { username: 'carl', password: 'secret words 1' })).status, 400);
    assert.equal((await rawApi(base, 'POST', `${S}/commands/create_user`, mod.token, { username: 'x1', password: 'xx password 1' })).status, 403);
    const bad = await rawApi(base, 'POST', `${S}/commands/create_user`, admin.token, { username: 'x2' });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /password/);
    since = await lastId();
    const up = await rawApi(base, 'POST', `${S}/commands/change_permission_level`, admin.token, { user_id: '@carl:localhost', role: 'moderator' });
    assert.deepEqual(up.body, { user_id: '@carl:localhost', from: 'support', to: 'moderator' });
    await oneNewEntry(since, { action: 'role.assign', target: '@carl:localhost' });
    since = await lastId();
    const set = await rawApi(base, 'POST', `${S}/commands/set_user`, admin.token, { user_id: plain.userId, displayname: 'Paul P.', locked: false });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.equal(set.body.displayname, 'Paul P.');
    await oneNewEntry(since, { action: 'user.set', target: plain.userId });
    assert.equal((await rawApi(base, 'POST', `${S}/commands/set_user`, admin.token, { user_id: '@nobody:localhost', displayname: 'x' })).status, 404);
    assert.equal((await rawApi(base, 'POST', `${S}/commands/set_user`, admin.token, { user_id: plain.userId, colour: 'red' })).status, 400);
    const online = await rawApi(base, 'POST', `${S}/commands/show_online_users`, support.token, {});
    assert.equal(online.status, 200);
    assert.ok(online.body.users.some((u: any) => u.user_id === plain.userId), JSON.stringify(online.body));
    assert.equal((await rawApi(base, 'GET', `${S}/online_users`, support.token)).body.total, online.body.total);
    const verify = await rawApi(base, 'POST', `${S}/commands/verify_user`, mod.token, { user_id: plain.userId });
    assert.equal(verify.status, 400, 'an approved account is not waiting');
    assert.equal((await rawApi(base, 'POST', `${S}/commands/nonsense`, owner, {})).body.errcode, 'M_UNRECOGNIZED');
  });

  test('the OpenAPI document describes every route of /_super/admin/v1', async () => {
    const doc = await rawApi(base, 'GET', `${S}/openapi.json`);
    assert.equal(doc.status, 200);
    assert.equal(doc.body.openapi, '3.1.0');
    for (const path of ['/roles', '/roles/{name}', '/roles/assignments', '/users/{userId}/role', '/audit', '/online_users', '/registration/queue',
      '/commands/ping', '/commands/verify_user', '/commands/set_user', '/commands/kill_server', '/commands/create_user', '/commands/change_permission_level', '/commands/show_online_users',
      '/bans', '/bans/{id}', '/reports', '/reports/{reportId}', '/reports/{reportId}/resolved', '/commands/message_user']) {
      assert.ok(doc.body.paths[path], `${path} described`);
      for (const op of Object.values(doc.body.paths[path]) as any[]) assert.ok('x-permission' in op && op.responses['403'], path);
    }
    assert.ok(doc.body.components.schemas.Permission.enum.includes('rooms.moderate'));
  });

  test('kill_server needs server.shutdown; the owner shuts the server down gracefully', async () => {
    const since = await lastId();
    const denied = await rawApi(base, 'POST', `${S}/commands/kill_server`, admin.token, {});
    assert.equal(denied.status, 403);
    assert.match(denied.body.error, /server\.shutdown/);
    await oneNewEntry(since, { actor: admin.userId, outcome: 'denied' });
    assert.equal((await rawApi(base, 'GET', `${S}/me`, admin.token)).status, 200, 'still running');
    const r = await rawApi(base, 'POST', `${S}/commands/kill_server`, owner, { reason: 'test' });
    assert.equal(r.status, 202);
    for (const end = Date.now() + 15_000; server.pid() !== undefined;) {
      assert.ok(Date.now() < end, 'the server exits');
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.match(server.logs(), /shutting down/);
  });
});
