// Issue 9 (roles9): the Synapse-compatible users admin API (shapes, paging, ordering, errors),
// registration tokens, the approval queue, what account states forbid (deactivated, suspended,
// locked, shadow-banned, awaiting approval), and synadm driving the server unchanged.
// One server for the file (REGISTRATION_APPROVAL=on).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rawApi } from '../helpers/client.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { adminCli, audit, createUser, login, loginToken } from '../helpers/admin.ts';

const S = '/_super/admin/v1';
const A = '/_synapse/admin';
const C = '/_matrix/client/v3';
const enc = encodeURIComponent;

let server: TestServer;
let base: string;
let owner: string;
let mod: { userId: string; token: string };

before(async () => {
  server = await startServer({ env: { AUTO_JOIN_ROOMS: '', REGISTRATION_APPROVAL: 'on' } });
  base = server.baseUrl;
  const made = await adminCli(server, ['create-user', '@root:localhost', '--role', 'owner'], 'the boss password 99\n');
  assert.equal(made.code, 0, made.stderr);
  owner = await loginToken(base, 'root', 'the boss password 99');
  mod = await createUser(base, owner, 'mod');
  assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(mod.userId)}/role`, owner, { role: 'moderator' })).status, 200);
});
after(async () => { await server?.stop(); });

describe('Synapse users admin API', () => {
  test('server_version; unknown admin paths answer 404 M_UNRECOGNIZED', async () => {
    const v = await rawApi(base, 'GET', `${A}/v1/server_version`);
    assert.equal(v.status, 200);
    assert.match(v.body.server_version, /^super-server /);
    for (const p of [`${A}/v1/no_such_thing`, `${A}/v3/users`, `${A}/v1/background_updates/status`]) {
      const r = await rawApi(base, 'GET', p, owner);
      assert.equal(r.status, 404, p);
      assert.equal(r.body.errcode, 'M_UNRECOGNIZED', p);
    }
  });

  test('PUT v2 users creates (201) and modifies (200); details have the Synapse shape; the admin flag is a role', async () => {
    const id = '@zed:localhost';
    const made = await rawApi(base, 'PUT', `${A}/v2/users/${enc(id)}`, owner, { password: 'a long secret 1', displayname: 'Zed', admin: false, threepids: [] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    for (const k of ['name', 'displayname', 'avatar_url', 'is_guest', 'admin', 'deactivated', 'erased', 'shadow_banned', 'locked', 'creation_ts', 'threepids', 'external_ids', 'user_type', 'last_seen_ts']) {
      assert.ok(k in made.body, `details have ${k}`);
    }
    assert.equal(made.body.name, id);
    assert.equal(made.body.displayname, 'Zed');
    const changed = await rawApi(base, 'PUT', `${A}/v2/users/${enc(id)}`, owner, { displayname: 'Zed Z', admin: true });
    assert.equal(changed.status, 200);
    assert.equal(changed.body.admin, true);
    assert.equal((await rawApi(base, 'GET', `${S}/users/${enc(id)}/role`, owner)).body.role, 'admin');
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc(id)}`, owner, { admin: false })).body.admin, false);
    const got = await rawApi(base, 'GET', `${A}/v2/users/${enc(id)}`, mod.token);
    assert.equal(got.body.displayname, 'Zed Z');
    // Errors: unknown user, bad body naming the field, remote user, weak password, moderator without users.write.
    const missing = await rawApi(base, 'GET', `${A}/v2/users/${enc('@nobody:localhost')}`, owner);
    assert.deepEqual([missing.status, missing.body.errcode], [404, 'M_NOT_FOUND']);
    const bad = await rawApi(base, 'PUT', `${A}/v2/users/${enc(id)}`, owner, { admin: 'yes' });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /admin/);
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc(id)}`, owner, { colour: 'red' })).status, 400);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc('@x:elsewhere.org')}`, owner)).body.errcode, 'M_INVALID_PARAM');
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc('@weak:localhost')}`, owner, { password: 'weak' })).body.errcode, 'M_WEAK_PASSWORD');
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc('@weak:localhost')}`, owner)).status, 404, 'nothing was created');
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc(id)}`, mod.token, { displayname: 'x' })).status, 403);
    // A moderator may not hand out admin either (users.write and roles.assign).
    assert.equal((await rawApi(base, 'PUT', `${A}/v1/users/${enc(id)}/admin`, mod.token, { admin: true })).status, 403);
  });

  test('users list: filters, ordering, from / limit / next_token, total', async () => {
    for (const n of ['list-a', 'list-b', 'list-c']) await createUser(base, owner, n);
    const all = await rawApi(base, 'GET', `${A}/v2/users?name=list-`, mod.token);
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.users.map((u: any) => u.name), ['@list-a:localhost', '@list-b:localhost', '@list-c:localhost']);
    assert.equal(all.body.total, 3);
    assert.equal(all.body.next_token, undefined);
    const page1 = await rawApi(base, 'GET', `${A}/v2/users?name=list-&limit=2&dir=b`, mod.token);
    assert.deepEqual(page1.body.users.map((u: any) => u.name), ['@list-c:localhost', '@list-b:localhost']);
    assert.equal(page1.body.next_token, '2');
    const page2 = await rawApi(base, 'GET', `${A}/v2/users?name=list-&limit=2&dir=b&from=${page1.body.next_token}`, mod.token);
    assert.deepEqual(page2.body.users.map((u: any) => u.name), ['@list-a:localhost']);
    const byCreation = await rawApi(base, 'GET', `${A}/v2/users?name=list-&order_by=creation_ts&dir=b`, mod.token);
    assert.equal(byCreation.body.users[0].name, '@list-c:localhost');
    const admins = await rawApi(base, 'GET', `${A}/v2/users?admins=true`, mod.token);
    assert.deepEqual(admins.body.users.map((u: any) => u.name).filter((n: string) => n !== '@_server:localhost'), ['@root:localhost']);
    const byUserId = await rawApi(base, 'GET', `${A}/v2/users?user_id=list-b`, mod.token);
    assert.deepEqual(byUserId.body.users.map((u: any) => u.name), ['@list-b:localhost']);
    // name: the localpart or the display name (not the server name); user_id is ignored with name (as Synapse).
    // (only the server's own account, whose display name is the server name)
    assert.deepEqual((await rawApi(base, 'GET', `${A}/v2/users?name=localhost`, mod.token)).body.users.map((u: any) => u.name), ['@_server:localhost']);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users?name=list-&user_id=list-b`, mod.token)).body.total, 3);
    await rawApi(base, 'PUT', `${A}/v2/users/${enc('@list-c:localhost')}`, owner, { displayname: 'Cecilia Quux' });
    assert.deepEqual((await rawApi(base, 'GET', `${A}/v2/users?name=ecilia%20qu`, mod.token)).body.users.map((u: any) => u.name), ['@list-c:localhost']);
    for (const q of ['from=-1', 'limit=x', 'order_by=password', 'dir=up', 'guests=maybe']) {
      const r = await rawApi(base, 'GET', `${A}/v2/users?${q}`, mod.token);
      assert.deepEqual([r.status, r.body.errcode], [400, 'M_INVALID_PARAM'], q);
      assert.match(r.body.error, new RegExp(q.split('=')[0]!), q);
    }
  });

  test('whois, joined_rooms, devices (list, read, delete), login as user', async () => {
    const u = await createUser(base, owner, 'dev-user');
    const room = (await rawApi(base, 'POST', `${C}/createRoom`, u.token, {})).body.room_id;
    const whois = await rawApi(base, 'GET', `${A}/v1/whois/${enc(u.userId)}`, mod.token);
    assert.equal(whois.body.user_id, u.userId);
    const [deviceId] = Object.keys(whois.body.devices);
    assert.ok(deviceId);
    assert.ok(Array.isArray(whois.body.devices[deviceId!].sessions[0].connections));
    assert.deepEqual((await rawApi(base, 'GET', `${A}/v1/users/${enc(u.userId)}/joined_rooms`, mod.token)).body, { joined_rooms: [room], total: 1 });
    const devices = await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}/devices`, mod.token);
    assert.equal(devices.body.total, 1);
    assert.equal(devices.body.devices[0].device_id, deviceId);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}/devices/${deviceId}`, mod.token)).body.user_id, u.userId);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}/devices/NOPE`, mod.token)).status, 404);
    // login as: users.impersonate (an admin's, not a moderator's)
    assert.equal((await rawApi(base, 'POST', `${A}/v1/users/${enc(u.userId)}/login`, mod.token, {})).status, 403);
    const as = await rawApi(base, 'POST', `${A}/v1/users/${enc(u.userId)}/login`, owner, { valid_until_ms: Date.now() + 60_000 });
    assert.equal(as.status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, as.body.access_token)).body.user_id, u.userId);
    const entry = (await audit(base, owner, `action=user.login_as&target=${enc(u.userId)}`))[0];
    assert.equal(entry.actor, '@root:localhost');
    // delete a device: its token dies
    assert.equal((await rawApi(base, 'DELETE', `${A}/v2/users/${enc(u.userId)}/devices/${deviceId}`, owner)).status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, u.token)).status, 401);
    assert.equal((await rawApi(base, 'POST', `${A}/v2/users/${enc(u.userId)}/delete_devices`, owner, { devices: 'all' })).status, 400);
    assert.equal((await rawApi(base, 'POST', `${A}/v2/users/${enc(u.userId)}/delete_devices`, owner, { devices: [] })).status, 200);
  });

  test('reset_password; deactivate (tokens die, login refused, erase empties the profile)', async () => {
    const u = await createUser(base, owner, 'leaver');
    const reset = await rawApi(base, 'POST', `${A}/v1/reset_password/${enc(u.userId)}`, owner, { new_password: 'brand new secret 1', logout_devices: true });
    assert.equal(reset.status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, u.token)).status, 401);
    assert.equal((await login(base, 'leaver', u.password)).status, 403);
    const token = await loginToken(base, 'leaver', 'brand new secret 1');
    assert.equal((await rawApi(base, 'POST', `${A}/v1/reset_password/${enc(u.userId)}`, owner, {})).body.errcode, 'M_MISSING_PARAM');
    const since = (await audit(base, owner, 'limit=1'))[0].id;
    const d = await rawApi(base, 'POST', `${A}/v1/deactivate/${enc(u.userId)}`, mod.token, { erase: true });
    assert.deepEqual([d.status, d.body], [200, { id_server_unbind_result: 'success' }]);
    const entries = (await audit(base, owner)).filter((e) => e.id > since);
    assert.equal(entries.length, 1);
    assert.deepEqual([entries[0].actor, entries[0].action, entries[0].target, entries[0].outcome, entries[0].details], [mod.userId, 'user.deactivate', u.userId, 'ok', { erase: true }]);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, token)).status, 401);
    assert.equal((await login(base, 'leaver', 'brand new secret 1')).status, 403);
    const details = (await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}`, owner)).body;
    assert.deepEqual([details.deactivated, details.erased, details.displayname], [true, true, null]);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users?name=leaver`, owner)).body.total, 0, 'hidden by default');
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users?name=leaver&deactivated=true`, owner)).body.total, 1);
    assert.equal((await rawApi(base, 'POST', `${A}/v1/deactivate/${enc('@ghost:localhost')}`, owner, {})).status, 404);
  });

  test('registration tokens: create, list, read, update, delete; errors', async () => {
    const T = `${A}/v1/registration_tokens`;
    const made = await rawApi(base, 'POST', `${T}/new`, mod.token, { token: 'abc-123', uses_allowed: 3 });
    assert.deepEqual(made.body, { token: 'abc-123', uses_allowed: 3, pending: 0, completed: 0, expiry_time: null });
    const gen = await rawApi(base, 'POST', `${T}/new`, mod.token, { length: 10 });
    assert.match(gen.body.token, /^[A-Za-z0-9._~-]{10}$/);
    assert.equal((await rawApi(base, 'POST', `${T}/new`, mod.token, { token: 'abc-123' })).body.errcode, 'M_INVALID_PARAM');
    assert.equal((await rawApi(base, 'POST', `${T}/new`, mod.token, { token: 'bad token!' })).status, 400);
    assert.equal((await rawApi(base, 'POST', `${T}/new`, mod.token, { uses_allowed: -1 })).status, 400);
    assert.equal((await rawApi(base, 'POST', `${T}/new`, mod.token, { expiry_time: 1 })).status, 400);
    const list = await rawApi(base, 'GET', T, mod.token);
    assert.ok(list.body.registration_tokens.some((t: any) => t.token === 'abc-123'));
    const upd = await rawApi(base, 'PUT', `${T}/abc-123`, mod.token, { uses_allowed: 0 });
    assert.equal(upd.body.uses_allowed, 0);
    const invalid = await rawApi(base, 'GET', `${T}?valid=false`, mod.token);
    assert.ok(invalid.body.registration_tokens.some((t: any) => t.token === 'abc-123'));
    assert.ok(!(await rawApi(base, 'GET', `${T}?valid=true`, mod.token)).body.registration_tokens.some((t: any) => t.token === 'abc-123'));
    assert.equal((await rawApi(base, 'DELETE', `${T}/abc-123`, mod.token)).status, 200);
    assert.equal((await rawApi(base, 'GET', `${T}/abc-123`, mod.token)).status, 404);
    assert.equal((await rawApi(base, 'DELETE', `${T}/abc-123`, mod.token)).status, 404);
    const plain = await createUser(base, owner, 'tok-plain');
    assert.equal((await rawApi(base, 'GET', T, plain.token)).status, 403);
  });

  test('override_ratelimit needs users.write and is audited', async () => {
    const u = await createUser(base, owner, 'limited');
    const path = `${A}/v1/users/${enc(u.userId)}/override_ratelimit`;
    assert.equal((await rawApi(base, 'POST', path, mod.token, { messages_per_second: 0 })).status, 403);
    assert.equal((await rawApi(base, 'POST', path, owner, { messages_per_second: 0, burst_count: 0 })).status, 200);
    assert.equal((await audit(base, owner, `action=user.override_ratelimit&target=${enc(u.userId)}`)).length, 1);
    assert.deepEqual((await rawApi(base, 'GET', path, mod.token)).body, { messages_per_second: 0, burst_count: 0 });
  });
});

describe('enforcement', () => {
  let victim: { userId: string; token: string; password: string };
  let other: { userId: string; token: string };
  let room: string;

  before(async () => {
    victim = await createUser(base, owner, 'victim');
    other = await createUser(base, owner, 'other');
    room = (await rawApi(base, 'POST', `${C}/createRoom`, other.token, { preset: 'public_chat' })).body.room_id;
    assert.equal((await rawApi(base, 'POST', `${C}/join/${enc(room)}`, victim.token, {})).status, 200);
  });

  test('suspended: reads work; sending, joining, inviting, profile changes answer 403 M_USER_SUSPENDED', async () => {
    const ownEvent = (await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/s0`, victim.token, { msgtype: 'm.text', body: 'mine' })).body.event_id;
    assert.equal((await rawApi(base, 'PUT', `/_matrix/client/v1/admin/suspend/${enc(victim.userId)}`, mod.token, { suspended: true })).status, 200);
    assert.deepEqual((await rawApi(base, 'GET', `/_matrix/client/v1/admin/suspend/${enc(victim.userId)}`, mod.token)).body, { suspended: true });
    const refused = [
      await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/s1`, victim.token, { msgtype: 'm.text', body: 'hi' }),
      await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/state/m.room.topic/`, victim.token, { topic: 'x' }),
      await rawApi(base, 'POST', `${C}/createRoom`, victim.token, {}),
      await rawApi(base, 'POST', `${C}/rooms/${enc(room)}/invite`, victim.token, { user_id: mod.userId }),
      await rawApi(base, 'PUT', `${C}/profile/${enc(victim.userId)}/displayname`, victim.token, { displayname: 'x' }),
    ];
    for (const r of refused) assert.deepEqual([r.status, r.body.errcode], [403, 'M_USER_SUSPENDED']);
    // Redactions: their own events only.
    const others = (await rawApi(base, 'GET', `${C}/rooms/${enc(room)}/messages?dir=b&limit=20`, victim.token)).body.chunk.find((e: any) => e.sender === other.userId);
    const theirs = await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/redact/${enc(others.event_id)}/r1`, victim.token, {});
    assert.deepEqual([theirs.status, theirs.body.errcode], [403, 'M_USER_SUSPENDED'], "another's event");
    const viaSend = await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.redaction/r2`, victim.token, { redacts: others.event_id });
    assert.deepEqual([viaSend.status, viaSend.body.errcode], [403, 'M_USER_SUSPENDED'], "another's event, through /send");
    assert.equal((await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/redact/${enc(ownEvent)}/r3`, victim.token, {})).status, 200, 'their own event');
    assert.equal((await rawApi(base, 'GET', `${C}/rooms/${enc(room)}/messages?dir=b`, victim.token)).status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/sync?timeout=0`, victim.token)).status, 200);
    assert.equal((await rawApi(base, 'PUT', `/_matrix/client/v1/admin/suspend/${enc(victim.userId)}`, mod.token, { suspended: false })).status, 200);
    assert.equal((await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/s2`, victim.token, { msgtype: 'm.text', body: 'back' })).status, 200);
  });

  test('locked: 401 M_USER_LOCKED with soft_logout, except logout; login refused; unlocking restores the session', async () => {
    assert.equal((await rawApi(base, 'PUT', `/_matrix/client/v1/admin/lock/${enc(victim.userId)}`, mod.token, { locked: true })).status, 200);
    const r = await rawApi(base, 'GET', `${C}/account/whoami`, victim.token);
    assert.deepEqual([r.status, r.body.errcode, r.body.soft_logout], [401, 'M_USER_LOCKED', true]);
    const l = await login(base, 'victim', victim.password);
    assert.equal(l.body.errcode, 'M_USER_LOCKED');
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(victim.userId)}`, mod.token)).body.locked, true);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users?name=victim`, mod.token)).body.total, 0, 'locked users are listed with locked=true');
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users?name=victim&locked=true`, mod.token)).body.total, 1);
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc(victim.userId)}`, owner, { locked: false })).status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, victim.token)).status, 200);
    // Logout works while locked.
    const second = await loginToken(base, 'victim', victim.password);
    await rawApi(base, 'PUT', `/_matrix/client/v1/admin/lock/${enc(victim.userId)}`, mod.token, { locked: true });
    assert.equal((await rawApi(base, 'POST', `${C}/logout`, second, {})).status, 200);
    await rawApi(base, 'PUT', `/_matrix/client/v1/admin/lock/${enc(victim.userId)}`, mod.token, { locked: false });
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, second)).status, 401);
  });

  test('shadow-banned: sends answer 200 with real-looking ids; nobody else sees them', async () => {
    assert.equal((await rawApi(base, 'POST', `${A}/v1/users/${enc(victim.userId)}/shadow_ban`, mod.token)).status, 200);
    const sent = await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/sb1`, victim.token, { msgtype: 'm.text', body: 'invisible' });
    assert.equal(sent.status, 200);
    assert.match(sent.body.event_id, /^\$[A-Za-z0-9_-]{43}$/);
    const again = await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/sb1`, victim.token, { msgtype: 'm.text', body: 'invisible' });
    assert.equal(again.body.event_id, sent.body.event_id, 'a retried transaction gets the same id');
    const state = await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/state/m.room.topic/`, victim.token, { topic: 'nope' });
    assert.equal(state.status, 200);
    assert.notEqual((await rawApi(base, 'GET', `${C}/rooms/${enc(room)}/state/m.room.topic/`, other.token)).body.topic, 'nope');
    const invite = await rawApi(base, 'POST', `${C}/rooms/${enc(room)}/invite`, victim.token, { user_id: mod.userId });
    assert.equal(invite.status, 200);
    assert.equal((await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/typing/${enc(victim.userId)}`, victim.token, { typing: true, timeout: 30_000 })).status, 200);
    const typing = (await rawApi(base, 'GET', `${C}/sync?timeout=0`, other.token)).body.rooms?.join?.[room]?.ephemeral?.events ?? [];
    assert.ok(!typing.some((e: any) => e.type === 'm.typing' && e.content.user_ids.includes(victim.userId)), 'their typing is dropped');
    const seen = await rawApi(base, 'GET', `${C}/rooms/${enc(room)}/messages?dir=b&limit=50`, other.token);
    assert.ok(!JSON.stringify(seen.body).includes('invisible'));
    assert.ok(!seen.body.chunk.some((e: any) => e.type === 'm.room.member' && e.state_key === mod.userId), 'the invite was dropped');
    const made = await rawApi(base, 'POST', `${C}/createRoom`, victim.token, { invite: [other.userId] });
    assert.equal(made.status, 200);
    const invites = (await rawApi(base, 'GET', `${C}/sync?timeout=0`, other.token)).body.rooms?.invite ?? {};
    assert.ok(!(made.body.room_id in invites), 'createRoom invites were dropped');
    assert.equal((await rawApi(base, 'GET', `${C}/rooms/${enc(room)}/event/${enc(sent.body.event_id)}`, other.token)).status, 404);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(victim.userId)}`, mod.token)).body.shadow_banned, true);
    assert.equal((await rawApi(base, 'DELETE', `${A}/v1/users/${enc(victim.userId)}/shadow_ban`, mod.token)).status, 200);
    const visible = await rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/sb2`, victim.token, { msgtype: 'm.text', body: 'visible' });
    assert.equal((await rawApi(base, 'GET', `${C}/rooms/${enc(room)}/event/${enc(visible.body.event_id)}`, other.token)).status, 200);
  });

  test('approval queue: a new account waits (403 M_USER_AWAITING_APPROVAL) until a moderator approves it', async () => {
    const reg = async (username: string) => {
      const first = await rawApi(base, 'POST', `${C}/register`, undefined, { username, password: 'waiting password 1' });
      return rawApi(base, 'POST', `${C}/register`, undefined, { username, password: 'waiting password 1', auth: { type: 'm.login.dummy', session: first.body.session } });
    };
    const r = await reg('newbie');
    assert.deepEqual([r.status, r.body.errcode], [403, 'M_USER_AWAITING_APPROVAL']);
    assert.equal(r.body.access_token, undefined);
    assert.equal((await login(base, 'newbie', 'waiting password 1')).body.errcode, 'M_USER_AWAITING_APPROVAL');
    const queue = await rawApi(base, 'GET', `${S}/registration/queue`, mod.token);
    assert.deepEqual(queue.body.users.map((u: any) => u.name), ['@newbie:localhost']);
    assert.equal(queue.body.users[0].approved, false);
    assert.equal((await rawApi(base, 'GET', `${S}/registration/queue`, other.token)).status, 403);
    assert.equal((await rawApi(base, 'POST', `${S}/registration/queue/${enc('@newbie:localhost')}/approve`, other.token)).status, 403);
    assert.equal((await rawApi(base, 'POST', `${S}/registration/queue/${enc('@newbie:localhost')}/approve`, mod.token)).status, 200);
    assert.equal((await login(base, 'newbie', 'waiting password 1')).status, 200);
    assert.equal((await rawApi(base, 'POST', `${S}/registration/queue/${enc('@newbie:localhost')}/approve`, mod.token)).status, 400);
    // verify_user approves too; reject deactivates.
    await reg('second');
    await reg('third');
    assert.equal((await rawApi(base, 'POST', `${S}/commands/verify_user`, mod.token, { user_id: '@second:localhost' })).status, 200);
    assert.equal((await login(base, 'second', 'waiting password 1')).status, 200);
    assert.equal((await rawApi(base, 'POST', `${S}/registration/queue/${enc('@third:localhost')}/reject`, mod.token)).status, 200);
    assert.equal((await login(base, 'third', 'waiting password 1')).status, 403);
    assert.equal((await rawApi(base, 'GET', `${S}/registration/queue`, mod.token)).body.total, 0);
  });
});

describe('synadm', () => {
  test('version, user list, user details and deactivate work unchanged', async () => {
    if (!fs.existsSync('/usr/bin/synadm')) execFileSync('apt-get', ['install', '-y', 'synadm'], { stdio: 'ignore' });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'synadm-'));
    const config = path.join(dir, 'synadm.yaml');
    fs.writeFileSync(config, [
      'user: "@root:localhost"', `token: ${owner}`, `base_url: ${base}`, 'admin_path: /_synapse/admin', 'matrix_path: /_matrix',
      'timeout: 10', 'server_discovery: well-known', 'homeserver: localhost', 'format: json', '',
    ].join('\n'));
    const synadm = (...args: string[]) => {
      const r = spawnSync('synadm', ['--batch', '-c', config, '-o', 'json', ...args], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, `synadm ${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /returned status code|Error/, `synadm ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    try {
      assert.match(JSON.parse(synadm('version')).server_version, /^super-server/);
      const list = JSON.parse(synadm('user', 'list', '-l', '500'));
      assert.ok(list.users.some((u: any) => u.name === '@root:localhost'));
      assert.equal(list.total, list.users.length);
      const target = await createUser(base, owner, 'synadm-victim');
      const details = JSON.parse(synadm('user', 'details', target.userId));
      assert.equal(details.name, target.userId);
      assert.equal(details.deactivated, false);
      const out = synadm('user', 'deactivate', target.userId);
      assert.match(out, /"id_server_unbind_result": "success"/);
      assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(target.userId)}`, owner)).body.deactivated, true);
      assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, target.token)).status, 401);
      // The room list (mod9's rooms admin API) as synadm reads it.
      const created = await rawApi(base, 'POST', `${C}/createRoom`, owner, { name: 'listed by synadm' });
      assert.equal(created.status, 200);
      const rooms = JSON.parse(synadm('room', 'list', '-l', '100'));
      const listed = rooms.rooms.find((r: any) => r.room_id === created.body.room_id);
      assert.ok(listed, 'synadm room list shows the new room');
      assert.equal(listed.name, 'listed by synadm');
      assert.equal(rooms.total_rooms, rooms.rooms.length);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
