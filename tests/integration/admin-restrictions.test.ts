// Issue 12 (userbans12): user restrictions with a reason and an expiry under
// /_super/admin/v1/users/{userId}/restrictions and /_super/admin/v1/restrictions — each kind
// enforced, an expired one stops applying at once and is swept, a ban (lock + logout), the rank
// rules, 403 without users.ban (nothing changes), 404 for an unknown user, 400 naming the field,
// Synapse's endpoints listed beside them, one audit entry per change. One server for the file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rawApi } from '../helpers/client.ts';
import { startServer, type TestServer } from '../helpers/server.ts';
import { adminCli, audit, createUser, login, loginToken } from '../helpers/admin.ts';
import { eventually } from '../helpers/moderation.ts';

const S = '/_super/admin/v1';
const A = '/_synapse/admin';
const C = '/_matrix/client/v3';
const enc = encodeURIComponent;

let server: TestServer;
let base: string;
let owner: string;
let ownerId: string;
let mod: { userId: string; token: string };
let room: string;

const restrictionsPath = (userId: string, kind?: string) => `${S}/users/${enc(userId)}/restrictions${kind ? `/${kind}` : ''}`;
const put = (token: string, userId: string, kind: string, body: unknown) => rawApi(base, 'PUT', restrictionsPath(userId, kind), token, body);
const lift = (token: string, userId: string, kind: string) => rawApi(base, 'DELETE', restrictionsPath(userId, kind), token);
const ofUser = async (userId: string) => {
  const r = await rawApi(base, 'GET', restrictionsPath(userId), owner);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.restrictions as any[];
};
const say = (token: string, txn: string) => rawApi(base, 'PUT', `${C}/rooms/${enc(room)}/send/m.room.message/${txn}`, token, { msgtype: 'm.text', body: txn });
/** The audit entries of restriction changes on a user (its creation etc. left out). */
const restrictionEntries = async (userId: string) =>
  (await audit(base, owner, `target=${enc(userId)}&outcome=ok`)).filter((e) => /^user\.(un)?(suspend|lock|shadow_ban|shadow_unban)$/.test(e.action));
/** A new account that joined the test room. */
async function member(localpart: string) {
  const u = await createUser(base, owner, localpart);
  assert.equal((await rawApi(base, 'POST', `${C}/join/${enc(room)}`, u.token, {})).status, 200);
  return u;
}

before(async () => {
  server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } });
  base = server.baseUrl;
  const made = await adminCli(server, ['create-user', '@root:localhost', '--role', 'owner'], 'the boss password 99\n');
  assert.equal(made.code, 0, made.stderr);
  owner = await loginToken(base, 'root', 'the boss password 99');
  ownerId = '@root:localhost';
  mod = await createUser(base, owner, 'mod');
  assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(mod.userId)}/role`, owner, { role: 'moderator' })).status, 200);
  room = (await rawApi(base, 'POST', `${C}/createRoom`, owner, { preset: 'public_chat' })).body.room_id;
});
after(async () => { await server?.stop(); });

describe('user restrictions', () => {
  test('each kind with a reason and an expiry: listed with who and when, and enforced', async () => {
    const u = await member('kinds');
    const t0 = Date.now();
    const s = await put(mod.token, u.userId, 'suspended', { reason: 'spam links', duration_ms: 3_600_000 });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    assert.deepEqual({ ...s.body, created_ts: 0, expires_ts: 0 }, { user_id: u.userId, kind: 'suspended', reason: 'spam links', created_by: mod.userId, created_ts: 0, expires_ts: 0, logout_devices: false });
    assert.ok(s.body.created_ts >= t0 && s.body.expires_ts >= t0 + 3_600_000 && s.body.expires_ts <= Date.now() + 3_600_000);
    assert.deepEqual([(await say(u.token, 's1')).status, (await say(u.token, 's2')).body.errcode], [403, 'M_USER_SUSPENDED']);
    assert.equal((await rawApi(base, 'GET', `${C}/sync?timeout=0`, u.token)).status, 200, 'a suspended user still reads');

    const expires = Date.now() + 86_400_000;
    const sb = await put(mod.token, u.userId, 'shadow_banned', { reason: 'troll', expires_ts: expires });
    assert.deepEqual([sb.status, sb.body.expires_ts, sb.body.reason], [200, expires, 'troll']);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}`, owner)).body.shadow_banned, true);

    const l = await put(mod.token, u.userId, 'locked', {}); // no reason, no expiry: until lifted
    assert.deepEqual([l.status, l.body.reason, l.body.expires_ts], [200, null, null]);
    const who = await rawApi(base, 'GET', `${C}/account/whoami`, u.token);
    assert.deepEqual([who.status, who.body.errcode, who.body.soft_logout], [401, 'M_USER_LOCKED', true]);

    const mine = await ofUser(u.userId);
    assert.deepEqual(mine.map((r) => [r.kind, r.reason, r.created_by]).sort(), [['locked', null, mod.userId], ['shadow_banned', 'troll', mod.userId], ['suspended', 'spam links', mod.userId]]);
    const page = await rawApi(base, 'GET', `${S}/restrictions?kind=suspended&user_id=${enc(u.userId)}`, mod.token);
    assert.deepEqual([page.status, page.body.total, page.body.restrictions[0]?.reason], [200, 1, 'spam links']);

    // Putting a kind again replaces its reason and expiry; lifting one leaves the others.
    const again = await put(mod.token, u.userId, 'suspended', { reason: 'second offence' });
    assert.deepEqual([again.body.reason, again.body.expires_ts], ['second offence', null]);
    assert.equal((await lift(mod.token, u.userId, 'locked')).status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, u.token)).status, 200, 'unlocked at once');
    assert.equal((await say(u.token, 's3')).body.errcode, 'M_USER_SUSPENDED', 'still suspended');
    assert.deepEqual((await ofUser(u.userId)).map((r) => r.kind).sort(), ['shadow_banned', 'suspended']);
    const gone = await lift(mod.token, u.userId, 'suspended');
    assert.deepEqual([gone.status, gone.body.lifted.reason], [200, 'second offence']);
    await lift(mod.token, u.userId, 'shadow_banned');
    assert.equal((await say(u.token, 's4')).status, 200);
    assert.deepEqual(await ofUser(u.userId), []);
    // Lifting what is not there: 404, nothing to record as a change.
    const none = await lift(mod.token, u.userId, 'suspended');
    assert.deepEqual([none.status, none.body.errcode], [404, 'M_NOT_FOUND']);
  });

  test('an expired restriction stops applying at once, then is swept (one audit entry by the server)', async () => {
    const [susp, locked] = await Promise.all([member('brief-s'), member('brief-l')]);
    const [a, b] = await Promise.all([
      put(mod.token, susp.userId, 'suspended', { reason: 'cool off', duration_ms: 1_500 }),
      put(mod.token, locked.userId, 'locked', { reason: 'cool off', duration_ms: 1_500 }),
    ]);
    assert.deepEqual([a.status, b.status], [200, 200]);
    assert.equal((await say(susp.token, 'e1')).body.errcode, 'M_USER_SUSPENDED');
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, locked.token)).body.errcode, 'M_USER_LOCKED');
    assert.equal((await login(base, 'brief-l', locked.password)).body.errcode, 'M_USER_LOCKED');
    const listed = await rawApi(base, 'GET', `${S}/restrictions`, owner);
    assert.ok(listed.body.restrictions.some((r: any) => r.user_id === susp.userId));
    // Past the expiry: in force no more, on the very next request (the cached token included).
    await new Promise((r) => setTimeout(r, Math.max(a.body.expires_ts, b.body.expires_ts) - Date.now() + 20));
    assert.equal((await say(susp.token, 'e2')).status, 200);
    assert.equal((await rawApi(base, 'GET', `${C}/account/whoami`, locked.token)).status, 200);
    assert.equal((await login(base, 'brief-l', locked.password)).status, 200);
    const after = await rawApi(base, 'GET', `${S}/restrictions`, owner);
    assert.ok(!after.body.restrictions.some((r: any) => r.user_id === susp.userId || r.user_id === locked.userId), 'expired ones are not listed');
    // The sweep clears the flags too (what Synapse's endpoints and the user list show).
    await eventually(async () => {
      const d = await rawApi(base, 'GET', `${A}/v2/users/${enc(susp.userId)}`, owner);
      const l = await rawApi(base, 'GET', `/_matrix/client/v1/admin/lock/${enc(locked.userId)}`, owner);
      return d.body.suspended === false && l.body.locked === false;
    }, 5_000, 'the sweep');
    const swept = await audit(base, owner, `target=${enc(susp.userId)}&action=user.unsuspend`);
    assert.equal(swept.length, 1);
    assert.deepEqual([swept[0].actor, swept[0].outcome, swept[0].details.expired, swept[0].details.reason], ['server', 'ok', true, 'cool off']);
  });

  test('a ban: the lock with every session ended; lifted, the user logs in again', async () => {
    const u = await member('banned');
    const ban = await put(owner, u.userId, 'locked', { reason: 'abuse', duration_ms: 7 * 86_400_000, logout_devices: true });
    assert.deepEqual([ban.status, ban.body.logout_devices], [200, true]);
    const old = await rawApi(base, 'GET', `${C}/account/whoami`, u.token);
    assert.deepEqual([old.status, old.body.errcode], [401, 'M_UNKNOWN_TOKEN'], 'the session is gone');
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}/devices`, owner)).body.total, 0);
    assert.equal((await login(base, 'banned', u.password)).body.errcode, 'M_USER_LOCKED');
    // Only a lock ends sessions.
    const bad = await put(owner, u.userId, 'suspended', { logout_devices: true });
    assert.deepEqual([bad.status, bad.body.errcode], [400, 'M_INVALID_PARAM']);
    assert.match(bad.body.error, /logout_devices/);
    assert.equal((await lift(owner, u.userId, 'locked')).status, 200);
    assert.equal((await login(base, 'banned', u.password)).status, 200);
  });

  test('rank rules: nobody restricts or restores an equal or higher rank, nor themselves; nothing changes', async () => {
    const boss = await createUser(base, owner, 'boss');
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(boss.userId)}/role`, owner, { role: 'admin' })).status, 200);
    const peer = await createUser(base, owner, 'peer');
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(peer.userId)}/role`, owner, { role: 'moderator' })).status, 200);
    for (const target of [boss.userId, peer.userId, mod.userId]) {
      const r = await put(mod.token, target, 'suspended', { reason: 'coup' });
      assert.deepEqual([r.status, r.body.errcode], [403, 'M_FORBIDDEN'], target);
      assert.deepEqual(await ofUser(target), [], `${target} unchanged`);
    }
    assert.match((await put(mod.token, boss.userId, 'locked', {})).body.error, /rank/);
    // The owner may; then the moderator may not lift it either.
    assert.equal((await put(owner, boss.userId, 'shadow_banned', { reason: 'test' })).status, 200);
    assert.equal((await lift(mod.token, boss.userId, 'shadow_banned')).status, 403);
    assert.equal((await ofUser(boss.userId)).length, 1);
    assert.equal((await lift(owner, boss.userId, 'shadow_banned')).status, 200);
    // Not even the owner on their own account.
    assert.equal((await put(owner, ownerId, 'locked', {})).status, 403);
    assert.deepEqual(await ofUser(ownerId), []);
    const denied = await audit(base, owner, `actor=${enc(mod.userId)}&outcome=denied`);
    assert.ok(denied.some((e) => e.target === boss.userId), 'a refusal is recorded');
  });

  test('403 without users.ban (the permission named), and nothing changes; reads need users.read', async () => {
    const target = await member('target');
    const support = await createUser(base, owner, 'helper');
    assert.equal((await rawApi(base, 'PUT', `${S}/users/${enc(support.userId)}/role`, owner, { role: 'support' })).status, 200);
    const r = await put(support.token, target.userId, 'suspended', { reason: 'x', duration_ms: 60_000 });
    assert.deepEqual([r.status, r.body.errcode], [403, 'M_FORBIDDEN']);
    assert.match(r.body.error, /users\.ban/);
    assert.equal((await say(target.token, 'p1')).status, 200);
    assert.deepEqual(await ofUser(target.userId), []);
    assert.equal((await restrictionEntries(target.userId)).length, 0);
    assert.equal((await put(owner, target.userId, 'suspended', { reason: 'x' })).status, 200);
    const del = await lift(support.token, target.userId, 'suspended');
    assert.deepEqual([del.status, del.body.errcode], [403, 'M_FORBIDDEN']);
    assert.equal((await ofUser(target.userId)).length, 1, 'still suspended');
    assert.equal((await rawApi(base, 'GET', `${S}/restrictions`, support.token)).status, 200, 'support reads (users.read)');
    const plain = await rawApi(base, 'GET', `${S}/restrictions`, target.token);
    assert.deepEqual([plain.status, plain.body.errcode], [403, 'M_FORBIDDEN']);
    assert.equal((await rawApi(base, 'GET', `${S}/restrictions`)).status, 401);
    await lift(owner, target.userId, 'suspended');
  });

  test('404 for an unknown user; 400 naming the field for a bad kind, expiry or body; nothing changes', async () => {
    const nobody = '@nobody:localhost';
    for (const r of [await put(owner, nobody, 'locked', { reason: 'x' }), await lift(owner, nobody, 'locked'), await rawApi(base, 'GET', restrictionsPath(nobody), owner)]) {
      assert.deepEqual([r.status, r.body.errcode], [404, 'M_NOT_FOUND']);
    }
    const u = await member('careless');
    const cases: Array<[string, unknown, RegExp]> = [
      ['banned', {}, /kind/],
      ['suspended', { expires_ts: Date.now() - 1_000 }, /expires_ts/],
      ['suspended', { expires_ts: Date.now() + 60_000, duration_ms: 60_000 }, /expires_ts/],
      ['suspended', { duration_ms: -5 }, /duration_ms/],
      ['suspended', { duration_ms: 1e15 }, /duration_ms/],
      ['suspended', { duration_ms: 'a day' }, /duration_ms/],
      ['suspended', { reason: 42 }, /reason/],
      ['suspended', { reason: 'x'.repeat(1001) }, /reason/],
      ['suspended', { colour: 'red' }, /colour|unrecognized/i],
    ];
    for (const [kind, body, field] of cases) {
      const r = await put(owner, u.userId, kind, body);
      assert.equal(r.status, 400, `${kind} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error, field, `${JSON.stringify(body)} → ${r.body.error}`);
    }
    assert.equal((await lift(owner, u.userId, 'banned')).status, 400);
    assert.equal((await rawApi(base, 'GET', `${S}/restrictions?kind=banned`, owner)).status, 400);
    assert.equal((await put(owner, '@x:elsewhere.org', 'locked', {})).body.errcode, 'M_INVALID_PARAM');
    assert.deepEqual(await ofUser(u.userId), []);
    assert.equal((await say(u.token, 'c1')).status, 200);
    assert.equal((await restrictionEntries(u.userId)).length, 0);
  });

  test("Synapse's endpoints keep working and are listed (no reason, no expiry); either API lifts either", async () => {
    const u = await member('synapsed');
    assert.equal((await rawApi(base, 'POST', `${A}/v1/users/${enc(u.userId)}/shadow_ban`, mod.token)).status, 200);
    assert.equal((await rawApi(base, 'PUT', `${A}/v1/suspend/${enc(u.userId)}`, mod.token, { suspend: true })).status, 200);
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc(u.userId)}`, owner, { locked: true })).status, 200);
    const listed = await ofUser(u.userId);
    assert.deepEqual(listed.map((r) => [r.kind, r.reason, r.expires_ts, r.created_by]).sort(),
      [['locked', null, null, ownerId], ['shadow_banned', null, null, mod.userId], ['suspended', null, null, mod.userId]]);
    // Ours lifts what Synapse's set, and the other way round.
    assert.equal((await lift(mod.token, u.userId, 'shadow_banned')).status, 200);
    assert.equal((await rawApi(base, 'GET', `${A}/v2/users/${enc(u.userId)}`, owner)).body.shadow_banned, false);
    assert.equal((await rawApi(base, 'PUT', `/_matrix/client/v1/admin/lock/${enc(u.userId)}`, mod.token, { locked: false })).status, 200);
    assert.deepEqual((await ofUser(u.userId)).map((r) => r.kind), ['suspended']);
    // A tool that sends `suspended: true` back with the rest of the user keeps a timed one as it is.
    assert.equal((await put(mod.token, u.userId, 'suspended', { reason: 'timed', duration_ms: 3_600_000 })).status, 200);
    assert.equal((await rawApi(base, 'PUT', `${A}/v2/users/${enc(u.userId)}`, owner, { suspended: true, displayname: 'Renamed' })).status, 200);
    assert.equal((await ofUser(u.userId))[0].reason, 'timed');
    assert.equal((await rawApi(base, 'PUT', `${A}/v1/suspend/${enc(u.userId)}`, mod.token, { suspend: false })).status, 200);
    assert.deepEqual(await ofUser(u.userId), []);
    assert.equal((await say(u.token, 'y1')).status, 200);
  });

  test('one audit entry per change, with the reason and the expiry', async () => {
    const u = await member('audited');
    const since = Date.now();
    const p = await put(mod.token, u.userId, 'locked', { reason: 'raid', duration_ms: 600_000 });
    await put(mod.token, u.userId, 'shadow_banned', {});
    await lift(mod.token, u.userId, 'locked');
    await lift(mod.token, u.userId, 'shadow_banned');
    const entries = (await audit(base, owner, `target=${enc(u.userId)}&since=${since}`)).reverse();
    assert.deepEqual(entries.map((e) => [e.action, e.actor, e.outcome]), [
      ['user.lock', mod.userId, 'ok'], ['user.shadow_ban', mod.userId, 'ok'], ['user.unlock', mod.userId, 'ok'], ['user.shadow_unban', mod.userId, 'ok'],
    ]);
    assert.deepEqual([entries[0].details.reason, entries[0].details.expires_ts, entries[0].details.via], ['raid', p.body.expires_ts, 'restrictions']);
    assert.equal(entries[1].details.expires_ts, null);
    assert.ok(entries.every((e) => typeof e.ip === 'string' && e.ip.length > 0), 'with the address');
  });

  test('the OpenAPI document describes the endpoints; the list pages', async () => {
    const doc = (await rawApi(base, 'GET', `${S}/openapi.json`)).body;
    assert.equal(doc.paths['/users/{userId}/restrictions/{kind}'].put['x-permission'], 'users.ban');
    assert.equal(doc.paths['/users/{userId}/restrictions/{kind}'].delete['x-permission'], 'users.ban');
    assert.equal(doc.paths['/restrictions'].get['x-permission'], 'users.read');
    assert.ok(doc.components.schemas.Restriction.properties.expires_ts);
    const made = await Promise.all(['pg-a', 'pg-b', 'pg-c'].map((n) => createUser(base, owner, n)));
    for (const m of made) assert.equal((await put(owner, m.userId, 'shadow_banned', { reason: 'page' })).status, 200);
    const first = await rawApi(base, 'GET', `${S}/restrictions?kind=shadow_banned&limit=2`, owner);
    assert.deepEqual([first.status, first.body.restrictions.length, first.body.total, first.body.next_token], [200, 2, 3, '2']);
    const second = await rawApi(base, 'GET', `${S}/restrictions?kind=shadow_banned&limit=2&from=${first.body.next_token}`, owner);
    assert.deepEqual([second.body.restrictions.length, second.body.next_token], [1, undefined]);
    const all = [...first.body.restrictions, ...second.body.restrictions];
    assert.deepEqual(all.map((r) => r.user_id).sort(), made.map((m) => m.userId).sort());
    assert.ok(all.every((r, i) => i === 0 || all[i - 1].created_ts >= r.created_ts), 'newest first');
  });
});
