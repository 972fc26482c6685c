// Moderation tools (issue 9, mod9): reports (client, admin triage with a resolved state), server
// notices (a notices room per user, message_user), media admin (quarantine, delete, usage), IP /
// CIDR bans (refused before any work, with expiry), invite-spam controls (young accounts and
// strangers dropped, a per-user daily cap), policy lists (globs, applied to registrations, invites
// and joins) and "redact all recent events of a user". Each admin action: 403 without the
// permission (nothing changes), 404 for unknown ids, 400 naming the field, one audit entry.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import http from 'node:http';
import { closeAgents, request } from '../helpers/addressed.ts';
import { downloadPath, mediaRequest, uploadMedia } from '../helpers/media.ts';
import { auditEntries, eventually, userWithRole } from '../helpers/moderation.ts';

const C = '/_matrix/client/v3';
const A = '/_synapse/admin/v1';
const S = '/_super/admin/v1';
let server: TestServer;
let db: pg.Client;
let base: string;
let admin: Credentials;
let moderator: Credentials;
let support: Credentials;
let alice: Credentials;
let bob: Credentials;
let room: string;

const get = (path: string, who: Credentials) => api(base, 'GET', path, { token: who.accessToken });
const send = (method: string, path: string, who: Credentials, body?: unknown) => api(base, method, path, { token: who.accessToken, body });
const enc = encodeURIComponent;
/** The status a WebSocket upgrade of the sync socket gets from `from` (101 when upgraded). */
function upgradeStatus(from: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/_matrix/client/unstable/io.superserver/sync?access_token=${token}`, {
      localAddress: from,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode ?? 0); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', reject);
    req.end();
  });
}

/** Makes an account look a day old (the invite controls spare it). */
const age = (u: Credentials) => db.query('UPDATE users SET created_ts = created_ts - 86400000 WHERE user_id = $1', [u.userId]);

before(async () => {
  server = await startServer({
    env: {
      AUTO_JOIN_ROOMS: '', INVITE_MIN_ACCOUNT_AGE_HOURS: '1', INVITE_REQUIRE_SHARED_ROOM: 'on', INVITE_SPAM_ACTION: 'drop',
      INVITE_MAX_PER_DAY: '3', POLICY_ROOMS: '#policies:localhost',
    },
  });
  base = server.baseUrl;
  db = await connectDatabase(server);
  admin = await userWithRole(base, db, 'admin');
  moderator = await userWithRole(base, db, 'moderator');
  support = await userWithRole(base, db, 'support');
  alice = await registerUser(base);
  bob = await registerUser(base);
  const r = await send('POST', `${C}/createRoom`, alice, { name: 'Lobby', preset: 'public_chat' });
  room = r.body.room_id;
  assert.equal((await send('POST', `${C}/join/${enc(room)}`, bob, {})).status, 200);
});

after(async () => {
  closeAgents();
  await db?.end();
  await server?.stop();
});

describe('reports', () => {
  let eventId: string;
  test('users report events, rooms and users; bad bodies 400, unknown ids 404', async () => {
    eventId = (await send('PUT', `${C}/rooms/${enc(room)}/send/m.room.message/r1`, bob, { msgtype: 'm.text', body: 'spam spam' })).body.event_id;
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/report/${enc(eventId)}`, alice, { reason: 'spam', score: -100 })).status, 200);
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/report`, alice, { reason: 'bad room' })).status, 200);
    assert.equal((await send('POST', `${C}/users/${enc(bob.userId)}/report`, alice, { reason: 'spammer' })).status, 200);
    const bad = await send('POST', `${C}/rooms/${enc(room)}/report`, alice, {});
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /reason/);
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/report/${enc('$nope')}`, alice, {})).status, 404);
    assert.equal((await send('POST', `${C}/rooms/${enc(`!no:${server.serverName}`)}/report`, alice, { reason: 'x' })).status, 404);
    assert.equal((await send('POST', `${C}/users/${enc(`@ghost:${server.serverName}`)}/report`, alice, { reason: 'x' })).status, 404);
    // Not joined: the event is "not found".
    const outsider = await registerUser(base);
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/report/${enc(eventId)}`, outsider, { reason: 'x' })).status, 404);
  });

  test('admins list, read, resolve and delete reports; 403 without reports.handle', async () => {
    assert.equal((await get(`${A}/event_reports`, alice)).status, 403);
    const list = await get(`${A}/event_reports`, support);
    assert.equal(list.status, 200);
    assert.equal(list.body.total, 1);
    const report = list.body.event_reports[0];
    assert.equal(report.event_id, eventId);
    assert.equal(report.user_id, alice.userId);
    assert.equal(report.sender, bob.userId);
    assert.equal(report.name, 'Lobby');
    assert.equal(report.resolved, false);
    const one = await get(`${A}/event_reports/${report.id}`, support);
    assert.equal(one.body.event_json.content.body, 'spam spam');
    assert.equal((await get(`${A}/event_reports/999999`, support)).status, 404);
    assert.equal((await get(`${A}/event_reports/abc`, support)).status, 400);
    const queue = await get(`${S}/reports?resolved=false`, support);
    assert.equal(queue.body.total, 3);
    assert.deepEqual(queue.body.reports.map((r: { kind: string }) => r.kind).sort(), ['event', 'room', 'user']);
    const badResolve = await send('PUT', `${S}/reports/${report.id}/resolved`, support, { resolved: 'yes' });
    assert.equal(badResolve.status, 400);
    assert.match(badResolve.body.error, /resolved/);
    assert.equal((await send('PUT', `${S}/reports/${report.id}/resolved`, support, { resolved: true })).status, 200);
    assert.equal((await get(`${S}/reports?resolved=false`, support)).body.total, 2);
    const resolved = (await get(`${S}/reports/${report.id}`, support)).body;
    assert.equal(resolved.resolved_by, support.userId);
    assert.equal((await auditEntries(db, 'report.resolve', String(report.id))).length, 1);
    assert.equal((await send('DELETE', `${A}/event_reports/${report.id}`, alice)).status, 403);
    assert.equal((await get(`${A}/event_reports`, support)).body.total, 1);
    assert.equal((await send('DELETE', `${A}/event_reports/${report.id}`, support)).status, 200);
    assert.equal((await get(`${A}/event_reports`, support)).body.total, 0);
    assert.equal((await auditEntries(db, 'report.delete', String(report.id))).length, 1);
  });
});

describe('server notices', () => {
  test('a notice lands in the user\'s notices room (one per user), tagged, sent by the notices account; message_user too', async () => {
    assert.equal((await send('POST', `${A}/send_server_notice`, support, { user_id: bob.userId, content: { msgtype: 'm.text', body: 'x' } })).status, 403);
    const bad = await send('POST', `${A}/send_server_notice`, moderator, { user_id: bob.userId });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /content/);
    assert.equal((await send('POST', `${A}/send_server_notice`, moderator, { user_id: `@ghost:${server.serverName}`, content: { body: 'x' } })).status, 404);
    const first = await send('POST', `${A}/send_server_notice`, moderator, { user_id: bob.userId, content: { msgtype: 'm.text', body: 'Maintenance tonight' } });
    assert.equal(first.status, 200);
    assert.match(first.body.event_id, /^\$/);
    const second = await send('POST', `${S}/commands/message_user`, moderator, { user_id: bob.userId, message: 'Please read the rules' });
    assert.equal(second.status, 200);
    const noticeRoom = second.body.room_id as string;
    const sync = await get(`${C}/sync`, bob);
    assert.ok(sync.body.rooms.invite[noticeRoom], 'bob is invited to the notices room');
    assert.equal((await send('POST', `${C}/join/${enc(noticeRoom)}`, bob, {})).status, 200);
    const msgs = await get(`${C}/rooms/${enc(noticeRoom)}/messages?dir=b&limit=10`, bob);
    const bodies = msgs.body.chunk.filter((e: { type: string }) => e.type === 'm.room.message').map((e: { content: { body: string; msgtype: string }; sender: string }) => [e.content.body, e.content.msgtype, e.sender]);
    assert.deepEqual(bodies, [['Please read the rules', 'm.server_notice', `@_notices:${server.serverName}`], ['Maintenance tonight', 'm.text', `@_notices:${server.serverName}`]]);
    const tags = await get(`${C}/user/${enc(bob.userId)}/rooms/${enc(noticeRoom)}/tags`, bob);
    assert.ok(tags.body.tags['m.server_notice']);
    // bob cannot answer in it.
    assert.equal((await send('PUT', `${C}/rooms/${enc(noticeRoom)}/send/m.room.message/n1`, bob, { msgtype: 'm.text', body: 'hi' })).status, 403);
    assert.equal((await auditEntries(db, 'notice.send', bob.userId)).length, 1);
    assert.equal((await auditEntries(db, 'command.message_user', bob.userId)).length, 1);
  });
});

describe('media admin', () => {
  test('quarantine (by id, by user) stops serving; delete by id; usage statistics; 403 and 404', async () => {
    const a = await uploadMedia(base, alice.accessToken, 'first file');
    const b = await uploadMedia(base, alice.accessToken, 'second file, longer');
    const c = await uploadMedia(base, bob.accessToken, 'bob file');
    assert.equal((await mediaRequest(base, 'GET', downloadPath(a.serverName, a.mediaId), { token: bob.accessToken })).status, 200);
    assert.equal((await send('POST', `${A}/media/quarantine/${a.serverName}/${a.mediaId}`, support)).status, 403);
    assert.equal((await mediaRequest(base, 'GET', downloadPath(a.serverName, a.mediaId), { token: bob.accessToken })).status, 200);
    assert.equal((await send('POST', `${A}/media/quarantine/${a.serverName}/nosuchmedia`, moderator)).status, 404);
    assert.equal((await send('POST', `${A}/media/quarantine/${a.serverName}/${a.mediaId}`, moderator)).status, 200);
    assert.equal((await mediaRequest(base, 'GET', downloadPath(a.serverName, a.mediaId), { token: bob.accessToken })).status, 404);
    assert.equal((await auditEntries(db, 'media.quarantine', a.uri)).length, 1);
    const byUser = await send('POST', `${A}/user/${enc(alice.userId)}/media/quarantine`, moderator);
    assert.deepEqual(byUser.body, { num_quarantined: 1 });
    assert.equal((await mediaRequest(base, 'GET', downloadPath(b.serverName, b.mediaId), { token: bob.accessToken })).status, 404);
    assert.equal((await send('POST', `${A}/media/unquarantine/${b.serverName}/${b.mediaId}`, moderator)).status, 200);
    assert.equal((await mediaRequest(base, 'GET', downloadPath(b.serverName, b.mediaId), { token: bob.accessToken })).status, 200);
    const stats = await get(`${A}/statistics/users/media?order_by=media_length&dir=b`, admin);
    assert.equal(stats.status, 200);
    const aliceStats = stats.body.users.find((u: { user_id: string }) => u.user_id === alice.userId);
    assert.deepEqual([aliceStats.media_count, aliceStats.media_length], [2, 'first file'.length + 'second file, longer'.length]);
    assert.equal(stats.body.users[0].user_id, alice.userId);
    assert.equal((await get(`${A}/statistics/users/media?order_by=size`, admin)).status, 400);
    assert.equal((await get(`${A}/statistics/users/media`, moderator)).status, 403);
    const list = await get(`${A}/users/${enc(alice.userId)}/media`, admin);
    assert.equal(list.body.total, 2);
    const del = await send('DELETE', `${A}/media/${c.serverName}/${c.mediaId}`, moderator);
    assert.deepEqual(del.body, { deleted_media: [c.mediaId], total: 1 });
    assert.equal((await mediaRequest(base, 'GET', downloadPath(c.serverName, c.mediaId), { token: alice.accessToken })).status, 404);
    const gone = await db.query('SELECT count(*)::int AS n FROM media WHERE media_id = $1', [c.mediaId]);
    assert.equal(gone.rows[0].n, 0);
    assert.equal((await send('POST', `${A}/media/delete`, moderator)).status, 400);
    const rooms = await get(`${A}/statistics/database/rooms`, admin);
    assert.ok(rooms.body.rooms.some((r: { room_id: string }) => r.room_id === room));
  });
});

describe('IP / CIDR bans', () => {
  test('a banned range is refused before any work; expiry and removal lift it; one audit entry each', async () => {
    const from = '127.0.0.23';
    assert.equal((await request(base, 'GET', `${C}/versions`.replace('/v3', ''), { from })).status, 200);
    assert.equal((await send('POST', `${S}/bans`, moderator, { cidr: '127.0.0.16/28' })).status, 403);
    for (const [body, field] of [[{ cidr: 'not-an-ip' }, 'cidr'], [{ cidr: '10.0.0.0/33' }, 'cidr'], [{ cidr: '10.0.0.1', expires_ts: 1 }, 'expires_ts'], [{}, 'cidr']] as const) {
      const r = await send('POST', `${S}/bans`, admin, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.error, new RegExp(field));
    }
    // Its own address: refused, so an admin does not lock themselves out.
    assert.equal((await send('POST', `${S}/bans`, admin, { cidr: '127.0.0.1/32' })).status, 400);
    const ban = await send('POST', `${S}/bans`, admin, { cidr: '127.0.0.16/28', reason: 'spam wave' });
    assert.equal(ban.status, 200);
    assert.equal(ban.body.cidr, '127.0.0.16/28');
    const refused = await request(base, 'GET', '/_matrix/client/versions', { from });
    assert.equal(refused.status, 403);
    assert.equal(await upgradeStatus(from, alice.accessToken), 403);
    assert.equal(await upgradeStatus('127.0.0.40', alice.accessToken), 101);
    assert.equal(refused.body.errcode, 'M_FORBIDDEN');
    // Even a login or registration attempt from there (no work done: no account made).
    const reg = await request(base, 'POST', `${C}/register`, { from, body: { username: 'fromban', password: 'x'.repeat(12), auth: { type: 'm.login.dummy' } } });
    assert.equal(reg.status, 403);
    assert.equal((await db.query("SELECT count(*)::int AS n FROM users WHERE localpart = 'fromban'")).rows[0].n, 0);
    assert.equal((await request(base, 'GET', '/_matrix/client/versions', { from: '127.0.0.40' })).status, 200);
    const list = await get(`${S}/bans`, admin);
    assert.equal(list.body.bans.length, 1);
    assert.equal((await get(`${S}/bans/999`, admin)).status, 404);
    assert.equal((await send('DELETE', `${S}/bans/${ban.body.id}`, admin)).status, 200);
    assert.equal((await request(base, 'GET', '/_matrix/client/versions', { from })).status, 200);
    assert.equal((await auditEntries(db, 'ban.add', '127.0.0.16/28')).length, 1);
    assert.equal((await auditEntries(db, 'ban.remove', '127.0.0.16/28')).length, 1);
    // A ban with an expiry stops applying by itself.
    const short = await send('POST', `${S}/bans`, admin, { cidr: from, duration_ms: 1500 });
    assert.equal(short.status, 200);
    assert.equal((await request(base, 'GET', '/_matrix/client/versions', { from })).status, 403);
    await eventually(async () => (await request(base, 'GET', '/_matrix/client/versions', { from })).status === 200, 5_000, 'the ban to expire');
  });
});

describe('invite-spam controls', () => {
  test('young accounts and strangers are dropped silently; old, sharing accounts invite; a daily cap', async () => {
    const carol = await registerUser(base);
    const dave = await registerUser(base);
    // alice is young: her invite is answered 200 but never arrives.
    const young = await send('POST', `${C}/rooms/${enc(room)}/invite`, alice, { user_id: carol.userId });
    assert.equal(young.status, 200);
    await age(alice);
    // alice is old now, but shares no room with carol: dropped too.
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/invite`, alice, { user_id: carol.userId })).status, 200);
    const carolSync = await get(`${C}/sync`, carol);
    assert.equal(carolSync.body.rooms?.invite?.[room], undefined);
    // bob shares the room with alice: invited.
    const priv = (await send('POST', `${C}/createRoom`, alice, { preset: 'private_chat' })).body.room_id;
    assert.equal((await send('POST', `${C}/rooms/${enc(priv)}/invite`, alice, { user_id: bob.userId })).status, 200);
    assert.ok((await get(`${C}/sync`, bob)).body.rooms.invite[priv]);
    // A moderator is exempt (young, sharing nothing).
    const modRoom = (await send('POST', `${C}/createRoom`, moderator, { preset: 'private_chat' })).body.room_id;
    assert.equal((await send('POST', `${C}/rooms/${enc(modRoom)}/invite`, moderator, { user_id: dave.userId })).status, 200);
    assert.ok((await get(`${C}/sync`, dave)).body.rooms.invite[modRoom]);
    // The cap: 3 a day (the invite to bob was the first).
    const targets = await Promise.all([1, 2, 3].map(() => registerUser(base)));
    for (const t of targets) assert.equal((await send('POST', `${C}/join/${enc(room)}`, t, {})).status, 200);
    assert.equal((await send('POST', `${C}/rooms/${enc(priv)}/invite`, alice, { user_id: targets[0]!.userId })).status, 200);
    assert.equal((await send('POST', `${C}/rooms/${enc(priv)}/invite`, alice, { user_id: targets[1]!.userId })).status, 200);
    const capped = await send('POST', `${C}/rooms/${enc(priv)}/invite`, alice, { user_id: targets[2]!.userId });
    assert.equal(capped.status, 429);
    assert.equal(capped.body.errcode, 'M_LIMIT_EXCEEDED');
  });
});

describe('policy lists', () => {
  test('user, room and server rules with globs refuse registrations, invites and joins', async () => {
    const policy = await send('POST', `${C}/createRoom`, admin, { room_alias_name: 'policies', preset: 'private_chat' });
    assert.equal(policy.status, 200);
    const pr = policy.body.room_id as string;
    const rule = (type: string, key: string, entity: string) =>
      send('PUT', `${C}/rooms/${enc(pr)}/state/${type}/${enc(key)}`, admin, { entity, recommendation: 'm.ban', reason: 'spam' });
    assert.equal((await rule('m.policy.rule.user', 'r1', `@spam*:${server.serverName}`)).status, 200);
    const target = (await send('POST', `${C}/createRoom`, bob, { preset: 'public_chat' })).body.room_id as string;
    assert.equal((await rule('m.policy.rule.room', 'r2', target)).status, 200);
    await eventually(async () => {
      const r = await api(base, 'POST', `${C}/register`, { body: { username: 'spammer1', password: 'x'.repeat(14), auth: { type: 'm.login.dummy' } } });
      return r.status === 403 ? r : undefined;
    }, 5_000, 'the rules to apply');
    assert.equal((await db.query("SELECT count(*)::int AS n FROM users WHERE localpart = 'spammer1'")).rows[0].n, 0);
    const ok = await registerUser(base, 'goodname');
    const join = await send('POST', `${C}/join/${enc(target)}`, ok, {});
    assert.equal(join.status, 403);
    assert.match(join.body.error, /policy/);
    // An existing user matching a rule added later cannot join or be invited.
    const spamLater = await registerUser(base, 'later1');
    assert.equal((await rule('m.policy.rule.user', 'r3', `@later?:${server.serverName}`)).status, 200);
    await eventually(async () => (await send('POST', `${C}/join/${enc(room)}`, spamLater, {})).status === 403, 5_000, 'the new rule');
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/invite`, alice, { user_id: spamLater.userId })).status, 403);
  });
});

describe('redact a user', () => {
  test('redacts the user\'s recent events; status completed; 403 and 404', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await send('PUT', `${C}/rooms/${enc(room)}/send/m.room.message/sp${i}`, bob, { msgtype: 'm.text', body: `spam ${i}` })).body.event_id);
    assert.equal((await send('POST', `${A}/user/${enc(bob.userId)}/redact`, support, { rooms: [] })).status, 403);
    assert.equal((await send('POST', `${A}/user/${enc(`@ghost:${server.serverName}`)}/redact`, moderator, {})).status, 404);
    const bad = await send('POST', `${A}/user/${enc(bob.userId)}/redact`, moderator, { rooms: ['nope'] });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /rooms/);
    const r = await send('POST', `${A}/user/${enc(bob.userId)}/redact`, moderator, { rooms: [room], reason: 'spam' });
    assert.equal(r.status, 200);
    const status = await eventually(async () => {
      const s = await get(`${A}/user/redact_status/${r.body.redact_id}`, moderator);
      return s.body.status === 'completed' || s.body.status === 'failed' ? s.body : undefined;
    }, 10_000, 'the redactions');
    assert.equal(status.status, 'completed');
    assert.deepEqual(status.failed_redactions, {});
    for (const id of ids) {
      const ev = await get(`${C}/rooms/${enc(room)}/event/${enc(id)}`, alice);
      assert.deepEqual(ev.body.content, {}, `${id} redacted`);
    }
    assert.equal((await auditEntries(db, 'user.redact', bob.userId)).length, 1);
    assert.equal((await get(`${A}/user/redact_status/nope`, moderator)).status, 404);
  });
});
