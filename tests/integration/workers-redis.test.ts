// Several workers sharing PostgreSQL and Redis: any worker serves any request and gives the same
// answer. Separate ports (so a test knows which worker it talks to) and one port (WORKERS=N).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, rawApi as raw, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const skip = process.env.TEST_BACKEND === 'embedded' ? 'needs an external database and Redis' : false;
const TIMELINE = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 2000 } }, presence: { types: [] } }));


const servers: TestServer[] = [];
after(async () => { for (const s of servers.reverse()) await s.stop().catch(() => {}); });

/** Waits until every worker logged `line` (LOG_LEVEL=info). */
export async function waitForLog(workers: TestServer[], line: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!workers.every((w) => w.logs().includes(line))) {
    if (Date.now() > end) throw new Error(`not every worker logged "${line}"`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A first worker with Redis and more on its database and Redis prefix (separate ports), once
 * their positions travel through Redis (a fresh Redis state is trusted after a grace period;
 * before, positions come from PostgreSQL: correct, but a poll behind).
 */
async function cluster(n: number, env: Record<string, string> = {}): Promise<TestServer[]> {
  const a = await startServer({ redis: true, env: { LOG_LEVEL: 'info', ...env } });
  servers.push(a);
  const out = [a];
  for (let i = 1; i < n; i++) {
    const s = await startServer({ env: { LOG_LEVEL: 'info', ...env, DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    servers.unshift(s); // stopped before the first (which drops the database)
    out.push(s);
  }
  await waitForLog(out, 'stream positions shared through redis');
  return out;
}

/**
 * Follows one room through incremental /sync on one base URL, collecting message bodies in
 * order, until `want` of them arrived or `stop` says so. Fails on a limited (gappy) timeline.
 */
function follow(base: string, token: string, roomId: string, since: string, want: number, deadline: number): Promise<string[]> {
  return (async () => {
    const got: string[] = [];
    let token_ = since;
    while (got.length < want && Date.now() < deadline) {
      const r = await raw(base, 'GET', `${C}/sync?since=${encodeURIComponent(token_)}&timeout=3000&filter=${TIMELINE}`, token);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const room = r.body.rooms?.join?.[roomId];
      if (room) {
        assert.notEqual(room.timeline.limited, true, `a gap in the timeline on ${base}`);
        for (const e of room.timeline.events) if (e.type === 'm.room.message') got.push(e.content.body);
      }
      token_ = r.body.next_batch;
    }
    return got;
  })();
}

async function setupRoom(workers: TestServer[], members: number): Promise<{ users: Array<Credentials & { base: string }>; roomId: string }> {
  const users: Array<Credentials & { base: string }> = [];
  for (let i = 0; i < members; i++) {
    const base = workers[i % workers.length]!.baseUrl;
    users.push({ ...(await registerUser(base)), base });
  }
  const roomId = (await api(users[0]!.base, 'POST', `${C}/createRoom`, { token: users[0]!.accessToken, body: { preset: 'public_chat' } })).body.room_id;
  for (const u of users.slice(1)) assert.equal((await api(u.base, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: u.accessToken })).status, 200);
  return { users, roomId };
}

async function interleavedSends(bases: string[], users: Array<Credentials & { base: string }>, roomId: string, total: number, tag: string): Promise<string[]> {
  const sent: string[] = [];
  const per = Math.ceil(total / users.length);
  await Promise.all(users.map(async (u, i) => {
    for (let n = 0; n < per && i * per + n < total; n++) {
      const body = `${tag}${i}-${n}`;
      // Each send through another worker, so every worker writes.
      const base = bases[(i + n) % bases.length]!;
      const r = await raw(base, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${tag}${n}`, u.accessToken, { msgtype: 'm.text', body });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      sent.push(body);
    }
  }));
  return sent;
}

/** Every message of the room through /messages, paginating forwards. */
async function allMessages(base: string, token: string, roomId: string): Promise<string[]> {
  const out: string[] = [];
  let from = '';
  for (;;) {
    const page = await raw(base, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=f&limit=500${from}`, token);
    assert.equal(page.status, 200);
    for (const e of page.body.chunk) if (e.type === 'm.room.message') out.push(e.content.body);
    if (!page.body.end || page.body.chunk.length === 0) return out;
    from = `&from=${encodeURIComponent(page.body.end)}`;
  }
}

function assertSameOnce(got: string[], sent: string[], where: string): void {
  const want = new Set(sent);
  const have = new Set(got);
  assert.deepEqual({ missing: sent.filter((x) => !have.has(x)), extra: got.filter((x) => !want.has(x)), got: got.length }, { missing: [], extra: [], got: sent.length }, where);
  assert.equal(new Set(got).size, got.length, `no duplicate on ${where}`);
  assert.deepEqual([...got].sort(), [...sent].sort(), `every send, once, on ${where}`);
}

describe('workers on separate ports, one database, one Redis', { skip }, () => {
  test('three workers: 1,000 interleaved sends reach every worker\'s /sync chain and /messages, no gap, no duplicate', async () => {
    const workers = await cluster(3);
    const bases = workers.map((w) => w.baseUrl);
    const { users, roomId } = await setupRoom(workers, 6);
    // A syncing reader on every worker, starting before the sends.
    const reader = users[0]!;
    const starts = await Promise.all(bases.map(async (b) => (await raw(b, 'GET', `${C}/sync?filter=${TIMELINE}`, reader.accessToken)).body.next_batch as string));
    const deadline = Date.now() + 45_000;
    const TOTAL = 1000;
    const follows = bases.map((b, i) => follow(b, reader.accessToken, roomId, starts[i]!, TOTAL, deadline));
    const sent = await interleavedSends(bases, users, roomId, TOTAL, 's');
    const chains = await Promise.all(follows);
    chains.forEach((got, i) => assertSameOnce(got, sent, `worker ${i}'s /sync`));
    // Each chain in the one order of the room.
    assert.deepEqual(chains[1], chains[0]);
    assert.deepEqual(chains[2], chains[0]);
    for (const b of bases) assert.deepEqual(await allMessages(b, reader.accessToken, roomId), chains[0], `/messages on ${b} in the same order`);
  });

  test('every read answers the same on every worker right after a write on another', async () => {
    const [a, b] = await cluster(2);
    const alice = await registerUser(a!.baseUrl);
    const bob = await registerUser(b!.baseUrl);
    const roomId = (await api(a!.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } })).body.room_id;
    // A's caches warm: bob's memberships (none yet), the room.
    assert.ok(!(await api(a!.baseUrl, 'GET', `${C}/joined_rooms`, { token: bob.accessToken })).body.joined_rooms.includes(roomId));
    const before = await api(a!.baseUrl, 'GET', `${C}/sync`, { token: bob.accessToken });
    assert.equal(before.body.rooms?.join?.[roomId], undefined);

    // Join through B: A's /joined_rooms and initial and incremental /sync know it at once.
    assert.equal((await api(b!.baseUrl, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken })).status, 200);
    assert.ok((await api(a!.baseUrl, 'GET', `${C}/joined_rooms`, { token: bob.accessToken })).body.joined_rooms.includes(roomId), '/joined_rooms on A right after the join on B');
    const initial = await api(a!.baseUrl, 'GET', `${C}/sync`, { token: bob.accessToken });
    assert.ok(initial.body.rooms?.join?.[roomId], 'the room joined through B is in A\'s initial /sync');
    const incremental = await api(a!.baseUrl, 'GET', `${C}/sync?since=${before.body.next_batch}&timeout=0`, { token: bob.accessToken });
    assert.ok(incremental.body.rooms?.join?.[roomId], 'and in A\'s incremental /sync');

    // A message sent through B: /messages, /sync and /event on A, right after.
    for (let i = 0; i < 20; i++) {
      const sent = await api(b!.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/r${i}`, { token: bob.accessToken, body: { msgtype: 'm.text', body: `r${i}` } });
      const page = await api(a!.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=1`, { token: alice.accessToken });
      assert.equal(page.body.chunk[0]?.event_id, sent.body.event_id, `send ${i} through B is A's latest message at once`);
    }
    const sync = await api(a!.baseUrl, 'GET', `${C}/sync?since=${incremental.body.next_batch}&timeout=0&filter=${TIMELINE}`, { token: alice.accessToken });
    const bodies = sync.body.rooms.join[roomId].timeline.events.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);
    assert.deepEqual(bodies, Array.from({ length: 20 }, (_, i) => `r${i}`));

    // Room directory visibility set through A is read through B.
    assert.equal((await api(b!.baseUrl, 'GET', `${C}/directory/list/room/${encodeURIComponent(roomId)}`)).body.visibility, 'private');
    assert.equal((await api(a!.baseUrl, 'PUT', `${C}/directory/list/room/${encodeURIComponent(roomId)}`, { token: alice.accessToken, body: { visibility: 'public' } })).status, 200);
    assert.equal((await api(b!.baseUrl, 'GET', `${C}/directory/list/room/${encodeURIComponent(roomId)}`)).body.visibility, 'public');

    // A token logged out through B stops working on A at once (A had it cached).
    assert.equal((await api(a!.baseUrl, 'GET', `${C}/account/whoami`, { token: bob.accessToken })).status, 200);
    assert.equal((await api(b!.baseUrl, 'POST', `${C}/logout`, { token: bob.accessToken })).status, 200);
    const who = await api(a!.baseUrl, 'GET', `${C}/account/whoami`, { token: bob.accessToken });
    assert.equal(who.status, 401);
    assert.equal(who.body.errcode, 'M_UNKNOWN_TOKEN');

    // A token from the future (a hostile or broken client) waits for this worker to catch up only
    // so long, and leaves nothing behind.
    const t0 = Date.now();
    const future = await raw(a!.baseUrl, 'GET', `${C}/sync?since=s999999999_0_0_0_0_0_0&timeout=0`, alice.accessToken);
    assert.ok([200, 400].includes(future.status), JSON.stringify(future.body));
    assert.ok(Date.now() - t0 < 5_000, `answered in ${Date.now() - t0} ms`);
  });

  test('a long-poll on A wakes within milliseconds for a send on B', async () => {
    const [a, b] = await cluster(2);
    const { users, roomId } = await setupRoom([a!, b!], 2);
    const [alice, bob] = users as [Credentials & { base: string }, Credentials & { base: string }];
    let since = (await raw(a!.baseUrl, 'GET', `${C}/sync?filter=${TIMELINE}`, alice.accessToken)).body.next_batch;
    const delays: number[] = [];
    // Catch up first (the joins), so that each long-poll below waits.
    for (;;) {
      const r = await raw(a!.baseUrl, 'GET', `${C}/sync?since=${since}&timeout=300&filter=${TIMELINE}`, alice.accessToken);
      if (r.body.next_batch === since) break;
      since = r.body.next_batch;
    }
    for (let i = 0; i < 20; i++) {
      const poll = raw(a!.baseUrl, 'GET', `${C}/sync?since=${since}&timeout=10000&filter=${TIMELINE}`, alice.accessToken);
      await new Promise((r) => setTimeout(r, 30)); // the long-poll is waiting
      const t0 = performance.now();
      await raw(b!.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/w${i}`, bob.accessToken, { msgtype: 'm.text', body: `w${i}` });
      const r = await poll;
      delays.push(performance.now() - t0);
      const got = r.body.rooms?.join?.[roomId]?.timeline.events.map((e: any) => e.content.body) ?? [];
      assert.deepEqual(got, [`w${i}`], `woken with the message: ${JSON.stringify(r.body)}`);
      since = r.body.next_batch;
    }
    delays.sort((x, y) => x - y);
    assert.ok(delays[Math.floor(delays.length / 2)]! < 250, `median send → wake ${delays[Math.floor(delays.length / 2)]} ms`);
  });

  test('shared-secret registration: a nonce from one worker is accepted by another, once', async () => {
    const secret = 'workers-test-secret';
    const [a, b] = await cluster(2, { REGISTRATION_SHARED_SECRET: secret });
    const { createHmac } = await import('node:crypto');
    const nonce = (await api(a!.baseUrl, 'GET', '/_synapse/admin/v1/register')).body.nonce;
    const body = (username: string) => ({
      nonce, username, password: 'pw-123456789',
      mac: createHmac('sha1', secret).update(`${nonce}\x00${username}\x00pw-123456789\x00notadmin`).digest('hex'),
    });
    const ok = await api(b!.baseUrl, 'POST', '/_synapse/admin/v1/register', { body: body('nonceuser') });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const again = await api(a!.baseUrl, 'POST', '/_synapse/admin/v1/register', { body: body('nonceuser2') });
    assert.equal(again.status, 400, 'a nonce is used once, on any worker');
  });

  test('a push rule changed on one worker counts on another at once (no stale rules, no echo between workers)', async () => {
    const workers = await cluster(2);
    const [a, b] = workers.map((w) => w.baseUrl) as [string, string];
    const alice = await registerUser(a);
    const bob = await registerUser(b);
    const roomId = (await api(b, 'POST', `${C}/createRoom`, { token: bob.accessToken, body: { preset: 'public_chat' } })).body.room_id;
    assert.equal((await api(a, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: alice.accessToken })).status, 200);
    const send = (body: string, txn: string) => raw(b, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, bob.accessToken, { msgtype: 'm.text', body });
    // Worker B evaluates (and caches) alice's rules once before they change.
    assert.equal((await send('warm up', 't1')).status, 200);
    const rule = await api(a, 'PUT', `${C}/pushrules/global/content/fruit`, { token: alice.accessToken, body: { pattern: 'pineapple', actions: ['notify', { set_tweak: 'highlight' }] } });
    assert.equal(rule.status, 200, JSON.stringify(rule.body));
    assert.equal((await send('a pineapple for you', 't2')).status, 200);
    const sync = await raw(b, 'GET', `${C}/sync`, alice.accessToken);
    assert.equal(sync.body.rooms.join[roomId].unread_notifications.highlight_count, 1, 'the keyword highlights on the other worker');
    // One change is one message on the bus, not a storm bouncing between the workers.
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) assert.equal((await send(`after ${i}`, `t3${i}`)).status, 200);
    assert.ok(Date.now() - t0 < 5_000, `sends stay fast after a rule change (${Date.now() - t0} ms for 5)`);
  });
});
