// Rate limits (issue 7, deliverable 1), in process and in Redis: each limiter refuses at its
// threshold with 429 M_LIMIT_EXCEEDED, retry_after_ms and Retry-After; admins are exempt; a
// per-user override (Synapse's admin API) lifts or changes the limit; the log names the limiter;
// two workers on one Redis share the buckets (a client alternating workers is limited once).
// Clients come from distinct loopback addresses, so per-address limits meet only where meant to.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startServer, type TestServer } from '../helpers/server.ts';
import { closeAgents, registerFrom, request, type AddressedResponse } from '../helpers/addressed.ts';

const C = '/_matrix/client/v3';
const SECRET = 'rate-limit-test-secret';
const noRedis = process.env.TEST_BACKEND === 'embedded' ? 'needs an external database and Redis' : false;

/** Small limits that do not refill during a test (except the failed logins', which must). */
const LIMITS: Record<string, string> = {
  RATE_LIMITS: 'on',
  LOG_LEVEL: 'info',
  AUTO_JOIN_ROOMS: '',
  REGISTRATION_SHARED_SECRET: SECRET,
  RC_REGISTRATION_PER_SECOND: '0.001', RC_REGISTRATION_BURST: '3',
  RC_LOGIN_ADDRESS_PER_SECOND: '0.001', RC_LOGIN_ADDRESS_BURST: '3',
  RC_LOGIN_ACCOUNT_PER_SECOND: '0.001', RC_LOGIN_ACCOUNT_BURST: '2',
  RC_LOGIN_FAILED_ATTEMPTS_PER_SECOND: '0.5', RC_LOGIN_FAILED_ATTEMPTS_BURST: '3',
  RC_MESSAGE_PER_SECOND: '0.001', RC_MESSAGE_BURST: '5',
  RC_ADMIN_REDACTION_PER_SECOND: '0.001', RC_ADMIN_REDACTION_BURST: '3',
  RC_JOINS_LOCAL_PER_SECOND: '0.001', RC_JOINS_LOCAL_BURST: '2',
  RC_INVITES_PER_ISSUER_PER_SECOND: '0.001', RC_INVITES_PER_ISSUER_BURST: '3',
  RC_INVITES_PER_USER_PER_SECOND: '0.001', RC_INVITES_PER_USER_BURST: '2',
  RC_INVITES_PER_ROOM_PER_SECOND: '0.001', RC_INVITES_PER_ROOM_BURST: '4',
  RC_JOINS_REMOTE_PER_SECOND: '0.001', RC_JOINS_REMOTE_BURST: '1',
  ROOMS_PER_HOUR: '3',
  RC_MEDIA_UPLOAD_PER_SECOND: '0.001', RC_MEDIA_UPLOAD_BURST: '3',
};

const servers: TestServer[] = [];
after(async () => { closeAgents(); for (const s of servers.reverse()) await s.stop().catch(() => {}); });

/** 429 M_LIMIT_EXCEEDED with retry_after_ms and a Retry-After header in whole seconds, rounded up. */
function assertLimited(r: AddressedResponse, what: string): number {
  assert.equal(r.status, 429, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(r.body.errcode, 'M_LIMIT_EXCEEDED', what);
  assert.equal(typeof r.body.error, 'string');
  assert.ok(Number.isInteger(r.body.retry_after_ms) && r.body.retry_after_ms > 0, `${what}: retry_after_ms ${r.body.retry_after_ms}`);
  assert.equal(r.headers['retry-after'], String(Math.ceil(r.body.retry_after_ms / 1000)), `${what}: Retry-After`);
  return r.body.retry_after_ms;
}

/** The server's output reaches us through a pipe, a moment after its answer. */
async function logged(server: TestServer, line: RegExp): Promise<void> {
  for (const end = Date.now() + 5_000; !line.test(server.logs());) {
    if (Date.now() > end) assert.fail(`the log has no ${line}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function registerAdmin(base: string, username: string): Promise<{ userId: string; accessToken: string }> {
  const nonce = (await request(base, 'GET', '/_synapse/admin/v1/register')).body.nonce;
  const password = 'admin password 1';
  const mac = createHmac('sha1', SECRET).update(`${nonce}\x00${username}\x00${password}\x00admin`).digest('hex');
  const r = await request(base, 'POST', '/_synapse/admin/v1/register', { body: { nonce, username, password, admin: true, mac } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { userId: r.body.user_id, accessToken: r.body.access_token };
}

/** Registers users three per loopback address (the registration burst), from 127.0.<net>.x. */
function users(base: string, net: number) {
  let n = 0;
  return (name: string) => registerFrom(base, `127.0.${net}.${10 + Math.floor(n++ / 3)}`, name);
}

const send = (base: string, token: string, roomId: string, i: number | string, from = '127.0.0.1') =>
  request(base, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t${i}-${Math.random()}`, { token, from, body: { msgtype: 'm.text', body: `m${i}` } });

for (const backend of ['in process', 'redis'] as const) {
  describe(`rate limits (${backend})`, { skip: backend === 'redis' && noRedis }, () => {
    let s: TestServer;
    let base: string;
    let user: (name: string) => Promise<{ userId: string; accessToken: string; password: string }>;
    const net = backend === 'redis' ? 2 : 1;

    test('start', async () => {
      s = await startServer({ redis: backend === 'redis', env: LIMITS });
      servers.push(s);
      base = s.baseUrl;
      user = users(base, net);
      assert.doesNotMatch(s.logs(), /RATE_LIMITS=off/);
    });

    test('registrations per address: the fourth from one address is refused, another address is not', async () => {
      const from = `127.0.${net}.200`;
      for (let i = 0; i < 3; i++) await registerFrom(base, from, `reg${i}`);
      const r = await request(base, 'POST', `${C}/register`, { from, body: { username: 'reg3', password: 'a good password' } });
      assertLimited(r, 'fourth registration');
      await registerFrom(base, `127.0.${net}.201`, 'reg4');
      await logged(s, /"limiter":"registration"/);
    });

    test('media uploads per user: /upload and /create share one bucket; the PUT of a reserved id is not charged again', async () => {
      const u = await user('uploader');
      const upload = () => request(base, 'POST', '/_matrix/media/v3/upload', { token: u.accessToken, body: 'some bytes' });
      assert.equal((await upload()).status, 200);
      const created = await request(base, 'POST', '/_matrix/media/v1/create', { token: u.accessToken });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      assert.equal((await upload()).status, 200);
      assertLimited(await upload(), 'fourth upload');
      assertLimited(await request(base, 'POST', '/_matrix/media/v1/create', { token: u.accessToken }), 'create past the burst');
      const mediaId = String(created.body.content_uri).split('/').pop();
      const put = await request(base, 'PUT', `/_matrix/media/v3/upload/localhost/${mediaId}`, { token: u.accessToken, body: 'reserved bytes' });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      // Another user's bucket is their own.
      const other = await user('uploader2');
      assert.equal((await request(base, 'POST', '/_matrix/media/v3/upload', { token: other.accessToken, body: 'x' })).status, 200);
      await logged(s, /"limiter":"media_upload"/);
    });

    test('logins per address, per account, and failed logins escalating per account', async () => {
      const a = await user('loginalice');
      const b = await user('loginbob');
      const login = (from: string, who: string, password: string) =>
        request(base, 'POST', `${C}/login`, { from, body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: who }, password } });
      // Per address: three attempts from one address, whatever the accounts.
      const addr = `127.0.${net}.210`;
      assert.equal((await login(addr, 'loginalice', a.password)).status, 200);
      assert.equal((await login(addr, 'loginbob', b.password)).status, 200);
      assert.equal((await login(addr, 'nobody', 'x')).status, 403);
      assertLimited(await login(addr, 'loginbob', b.password), 'fourth login from one address');
      // Per account: alice has logged in once; one more success, then refused from anywhere.
      assert.equal((await login(`127.0.${net}.211`, '@loginalice:localhost', a.password)).status, 200);
      assertLimited(await login(`127.0.${net}.212`, 'LoginAlice', a.password), 'third login of one account');
      // Failed logins against one account: three 403s, then refusals whose wait grows after each failure.
      const c = await user('loginbrute');
      let k = 0;
      const from = () => `127.0.${net}.${220 + k++}`;
      for (let i = 0; i < 3; i++) assert.equal((await login(from(), 'loginbrute', 'wrong')).status, 403);
      const first = assertLimited(await login(from(), 'loginbrute', 'wrong'), 'fourth failed login');
      await new Promise((r) => setTimeout(r, first + 50));
      assert.equal((await login(from(), 'loginbrute', 'wrong')).status, 403);
      const second = assertLimited(await login(from(), 'loginbrute', 'wrong'), 'failed login after the wait');
      assert.ok(second > first * 1.5, `the wait grows: ${first} ms, then ${second} ms`);
      // The right password after the wait: a success clears the failures.
      await new Promise((r) => setTimeout(r, second + 50));
      assert.equal((await login(from(), 'loginbrute', c.password)).status, 200);
      for (let i = 0; i < 3; i++) assert.equal((await login(from(), 'loginbrute', 'wrong')).status, 403);
      await logged(s, /"limiter":"login_address"/);
      await logged(s, /"limiter":"login_account"/);
      await logged(s, /"limiter":"login_failed"/);
    });

    test('messages per user; admins exempt; overrides lift and change the limit', async () => {
      const alice = await user('msgalice');
      const admin = await registerAdmin(base, `msgadmin${net}`);
      const room = (await request(base, 'POST', `${C}/createRoom`, { token: admin.accessToken, body: { preset: 'public_chat' } })).body.room_id;
      assert.equal((await request(base, 'POST', `${C}/join/${encodeURIComponent(room)}`, { token: alice.accessToken })).status, 200);
      for (let i = 0; i < 5; i++) assert.equal((await send(base, alice.accessToken, room, i)).status, 200);
      assertLimited(await send(base, alice.accessToken, room, 5), 'sixth message');
      // State events pay from the same bucket.
      assertLimited(await request(base, 'PUT', `${C}/rooms/${encodeURIComponent(room)}/state/m.room.topic`, { token: alice.accessToken, body: { topic: 't' } }), 'state event');
      for (let i = 0; i < 12; i++) assert.equal((await send(base, admin.accessToken, room, `a${i}`)).status, 200, 'an admin is not limited');
      await logged(s, /"limiter":"message"/);

      const path = `/_synapse/admin/v1/users/${encodeURIComponent(alice.userId)}/override_ratelimit`;
      assert.equal((await request(base, 'GET', path, { token: alice.accessToken })).status, 403, 'not an admin');
      assert.deepEqual((await request(base, 'GET', path, { token: admin.accessToken })).body, {});
      assert.equal((await request(base, 'GET', `/_synapse/admin/v1/users/${encodeURIComponent('@nobody:localhost')}/override_ratelimit`, { token: admin.accessToken })).status, 404);
      assert.equal((await request(base, 'POST', path, { token: admin.accessToken, body: { messages_per_second: -1 } })).status, 400);
      // 0/0: not limited at all.
      const set = await request(base, 'POST', path, { token: admin.accessToken, body: { messages_per_second: 0, burst_count: 0 } });
      assert.deepEqual(set.body, { messages_per_second: 0, burst_count: 0 });
      for (let i = 0; i < 10; i++) assert.equal((await send(base, alice.accessToken, room, `o${i}`)).status, 200, 'overridden: unlimited');
      // Another override: its own burst.
      await request(base, 'POST', path, { token: admin.accessToken, body: { messages_per_second: 1, burst_count: 8 } });
      assert.deepEqual((await request(base, 'GET', path, { token: admin.accessToken })).body, { messages_per_second: 1, burst_count: 8 });
      // Removed: the server's limits again (the bucket is empty from before).
      assert.equal((await request(base, 'DELETE', path, { token: admin.accessToken })).status, 200);
      assertLimited(await send(base, alice.accessToken, room, 'x'), 'override removed');
    });

    test('redactions of other users\' events pay from admin_redaction, not message', async () => {
      const mod = await user('redmod');
      const member = await user('redmember');
      const room = (await request(base, 'POST', `${C}/createRoom`, { token: mod.accessToken, body: { preset: 'public_chat' } })).body.room_id;
      assert.equal((await request(base, 'POST', `${C}/join/${encodeURIComponent(room)}`, { token: member.accessToken })).status, 200);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await send(base, member.accessToken, room, i)).body.event_id);
      const redact = (id: string) => request(base, 'PUT', `${C}/rooms/${encodeURIComponent(room)}/redact/${encodeURIComponent(id)}/r${Math.random()}`, { token: mod.accessToken, body: {} });
      for (let i = 0; i < 3; i++) assert.equal((await redact(ids[i]!)).status, 200);
      assertLimited(await redact(ids[3]!), 'fourth moderator redaction');
      await logged(s, /"limiter":"admin_redaction"/);
      // The moderator's own messages still pay from their (untouched) message bucket.
      assert.equal((await send(base, mod.accessToken, room, 'own')).status, 200);
    });

    test('joins (local and remote) per user, rooms per hour, invites per issuer, per invitee and per room', async () => {
      const owner = await user('joinowner');
      const joiner = await user('joiner');
      const rooms: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await request(base, 'POST', `${C}/createRoom`, { token: owner.accessToken, body: { preset: 'public_chat' } });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        rooms.push(r.body.room_id);
      }
      assertLimited(await request(base, 'POST', `${C}/createRoom`, { token: owner.accessToken, body: {} }), 'fourth room in the hour');
      await logged(s, /"limiter":"rooms_per_hour"/);
      for (let i = 0; i < 2; i++) assert.equal((await request(base, 'POST', `${C}/join/${encodeURIComponent(rooms[i]!)}`, { token: joiner.accessToken })).status, 200);
      assertLimited(await request(base, 'POST', `${C}/join/${encodeURIComponent(rooms[2]!)}`, { token: joiner.accessToken }), 'third join');
      await logged(s, /"limiter":"joins_local"/);

      const inviter = await user('inviter');
      const invitees = [await user('invitee0'), await user('invitee1'), await user('invitee2'), await user('invitee3')];
      const room = (await request(base, 'POST', `${C}/createRoom`, { token: inviter.accessToken, body: {} })).body.room_id;
      const invite = (token: string, userId: string) => request(base, 'POST', `${C}/rooms/${encodeURIComponent(room)}/invite`, { token, body: { user_id: userId } });
      for (let i = 0; i < 3; i++) assert.equal((await invite(inviter.accessToken, invitees[i]!.userId)).status, 200);
      assertLimited(await invite(inviter.accessToken, invitees[3]!.userId), 'fourth invite by one user');
      await logged(s, /"limiter":"invites_per_issuer"/);
      // Per room: that refused fourth invite was counted by the room (four); a member's fifth is refused.
      assert.equal((await request(base, 'POST', `${C}/join/${encodeURIComponent(room)}`, { token: invitees[1]!.accessToken })).status, 200);
      assertLimited(await invite(invitees[1]!.accessToken, invitees[3]!.userId), 'fifth invite into one room');
      await logged(s, /"limiter":"invites_per_room"/);
      // Joins of rooms on other servers have their own bucket (this server does not federate: the
      // first is let through and fails; the second is refused before it is tried).
      const remote = await request(base, 'POST', `${C}/join/${encodeURIComponent('#somewhere:other.example')}`, { token: joiner.accessToken });
      assert.notEqual(remote.status, 429, JSON.stringify(remote.body));
      assertLimited(await request(base, 'POST', `${C}/join/${encodeURIComponent('#elsewhere:other.example')}`, { token: joiner.accessToken }), 'second remote join');
      await logged(s, /"limiter":"joins_remote"/);
      // Per invitee: invitee0 was invited once; a second room's invite is fine, a third is refused.
      const other = await user('inviter2');
      const room2 = (await request(base, 'POST', `${C}/createRoom`, { token: other.accessToken, body: { invite: [invitees[0]!.userId] } }));
      assert.equal(room2.status, 200, JSON.stringify(room2.body));
      assertLimited(await request(base, 'POST', `${C}/createRoom`, { token: other.accessToken, body: { invite: [invitees[0]!.userId] } }), 'third invite of one user');
      await logged(s, /"limiter":"invites_per_user"/);
    });

    // Only Redis is shared between workers: the in-process variant has no such test (it is not skipped, it is not there).
    if (backend === 'redis') test('two workers on one Redis share the buckets: a client alternating workers is limited once', async () => {
      // A second worker on the first one's database and Redis prefix.
      const b = await startServer({ env: { ...LIMITS, DATABASE_URL: s.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: s.env.REDIS_URL!, REDIS_PREFIX: s.env.REDIS_PREFIX! } });
      servers.push(b);
      const alice = await user('sharedalice');
      const room = (await request(base, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
      const bases = [base, b.baseUrl];
      for (let i = 0; i < 5; i++) assert.equal((await send(bases[i % 2]!, alice.accessToken, room, i)).status, 200, `send ${i}`);
      assertLimited(await send(bases[1]!, alice.accessToken, room, 5), 'sixth message (worker B)');
      assertLimited(await send(bases[0]!, alice.accessToken, room, 6), 'sixth message (worker A)');
      // Registrations per address too: three across both workers, the fourth refused on either.
      await registerFrom(base, '127.0.3.2', 'shared1');
      await registerFrom(b.baseUrl, '127.0.3.2', 'shared2');
      await registerFrom(base, '127.0.3.2', 'shared3');
      assertLimited(await request(b.baseUrl, 'POST', `${C}/register`, { from: '127.0.3.2', body: { username: 'shared4', password: 'a good password' } }), 'fourth registration on the other worker');
    });
  });
}
