// Request-path cliffs of issue 5 (finding 17, deliverable 7), each at the size that showed it, and
// the alias half of finding 5: aliases only by members of the room.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { seedUsers, connectDatabase } from '../helpers/database.ts';
import { createRooms, inParallel, joinRooms } from '../helpers/rooms.ts';
import { LOGIN_LOOKUP_SQL } from '../../homeserver/accounts/store.ts';

const C = '/_matrix/client/v3';
const PUBLISHED = 300;
const MEMBERS = 500;

describe('request paths at size', () => {
  let server: TestServer;
  let db: pg.Client;
  let alice: Credentials & { password: string };
  let bob: Credentials;
  let seeded: Credentials[];
  const call = (method: string, path: string, opts: Parameters<typeof api>[3] = {}) => api(server.baseUrl, method, path, opts);
  const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const t = performance.now();
    const r = await fn();
    return [r, Math.round(performance.now() - t)];
  };

  before(async () => {
    server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } });
    db = await connectDatabase(server);
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
    seeded = await seedUsers(db, server.serverName, 'member', MEMBERS);
  });
  after(async () => {
    await db?.end();
    await server?.stop();
  });

  test('an alias only by a member of the room: 403 M_FORBIDDEN for anyone else, and nothing created', async () => {
    const secret = await (async () => {
      const res = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'private_chat' } });
      return res.body.room_id as string;
    })();
    const alias = `#hijack:${server.serverName}`;
    const res = await call('PUT', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: bob.accessToken, body: { room_id: secret } });
    assert.equal(res.status, 403, JSON.stringify(res.body));
    assert.equal(res.body.errcode, 'M_FORBIDDEN');
    assert.equal((await call('GET', `${C}/directory/room/${encodeURIComponent(alias)}`)).status, 404);
    // Invited is not joined either.
    await call('POST', `${C}/rooms/${encodeURIComponent(secret)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    assert.equal((await call('PUT', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: bob.accessToken, body: { room_id: secret } })).status, 403);
    // A member may.
    await call('POST', `${C}/join/${encodeURIComponent(secret)}`, { token: bob.accessToken, body: {} });
    assert.equal((await call('PUT', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: bob.accessToken, body: { room_id: secret } })).status, 200);
    assert.equal((await call('GET', `${C}/directory/room/${encodeURIComponent(alias)}`)).body.room_id, secret);
  });

  test('login looks the localpart up through an index on lower(localpart)', async () => {
    await db.query("INSERT INTO users (user_id, localpart, created_ts) SELECT '@bulk' || g || ':localhost', 'bulk' || g, 0 FROM generate_series(1, 20000) g");
    await db.query('ANALYZE users');
    let n = 0;
    const sql = LOGIN_LOOKUP_SQL.replace(/\?/g, () => `$${++n}`);
    const plan = (await db.query(`EXPLAIN ${sql}`, ['Bulk77', 'Bulk77'])).rows.map((r: Record<string, string>) => r['QUERY PLAN']).join('\n');
    assert.match(plan, /users_lower_localpart/, plan);
    assert.doesNotMatch(plan, /Seq Scan on users/, plan);
    // Case-insensitive as before.
    const login = await call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.userId.slice(1, alice.userId.indexOf(':')).toUpperCase() }, password: alice.password } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
  });

  test(`/publicRooms over ${PUBLISHED} published rooms: ordered, filtered and paged by the database, tokens exact`, async () => {
    const [rooms, setupMs] = await timed(() => createRooms(server.baseUrl, alice, PUBLISHED, (i) => ({
      preset: 'public_chat', visibility: 'public', name: `Room ${i}`, ...(i % 10 === 0 ? { topic: `a Needle in room ${i}` } : {}),
    })));
    console.log(`# setup: ${PUBLISHED} published rooms in ${setupMs} ms`);
    // Different sizes: room i gets i % 4 more members.
    await inParallel(PUBLISHED, 8, async (i) => {
      for (let k = 0; k < i % 4; k++) await joinRooms(server.baseUrl, seeded[(i + k * 7) % MEMBERS]!, [rooms[i]!], 1);
    });
    const size = (i: number) => 1 + (i % 4);
    const bytewise = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    const expected = rooms.map((id, i) => ({ id, n: size(i) })).sort((a, b) => b.n - a.n || bytewise(b.id, a.id)).map((r) => r.id);

    const listed = async (query: string) => {
      const res = await call('GET', `${C}/publicRooms${query}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body as { chunk: Array<{ room_id: string; num_joined_members: number; name?: string }>; next_batch?: string; prev_batch?: string; total_room_count_estimate: number };
    };
    const forward: string[] = [];
    const tokens: string[] = [];
    let worst = 0;
    let page = await listed('?limit=37');
    for (;;) {
      assert.equal(page.total_room_count_estimate, PUBLISHED);
      forward.push(...page.chunk.map((r) => r.room_id));
      if (!page.next_batch) break;
      tokens.push(page.next_batch);
      const [next, ms] = await timed(() => listed(`?limit=37&since=${encodeURIComponent(page.next_batch!)}`));
      worst = Math.max(worst, ms);
      page = next;
    }
    console.log(`# /publicRooms pages of 37 over ${PUBLISHED} rooms: slowest ${worst} ms`);
    assert.deepEqual(forward, expected, 'forward pages walk the whole directory in order, each room once');
    const backward: string[] = [];
    while (page.prev_batch) {
      page = await listed(`?limit=37&since=${encodeURIComponent(page.prev_batch)}`);
      backward.unshift(...page.chunk.map((r) => r.room_id));
    }
    assert.deepEqual([...backward, ...forward.slice(backward.length)], expected, 'prev_batch walks back to the start');
    assert.deepEqual(backward, expected.slice(0, backward.length));

    // A search term and a page of it, through POST.
    const needles = expected.filter((id) => rooms.indexOf(id) % 10 === 0);
    const found = await call('POST', `${C}/publicRooms`, { token: alice.accessToken, body: { limit: 20, filter: { generic_search_term: 'NEEDLE' } } });
    assert.equal(found.status, 200);
    assert.deepEqual(found.body.chunk.map((r: { room_id: string }) => r.room_id), needles.slice(0, 20));
    const rest = await call('POST', `${C}/publicRooms`, { token: alice.accessToken, body: { limit: 20, since: found.body.next_batch, filter: { generic_search_term: 'needle' } } });
    assert.deepEqual(rest.body.chunk.map((r: { room_id: string }) => r.room_id), needles.slice(20));
    assert.equal(rest.body.next_batch, undefined);
    const nul = await call('POST', `${C}/publicRooms`, { token: alice.accessToken, body: { filter: { generic_search_term: 'a\u0000b' } } });
    assert.equal(nul.status, 400);

    // The listing is cut by the database: a page reads only its own rooms' state.
    const plan = (await db.query("SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'rooms_published'")).rows[0].n;
    assert.equal(plan, 1, 'published rooms are indexed');
  });

  test(`upgrading a room of ${MEMBERS} members with tags and DM marks: the POST copies them set-based`, async () => {
    const old = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } })).body.room_id as string;
    await inParallel(MEMBERS, 8, async (i) => {
      const u = seeded[i]!;
      assert.equal((await call('POST', `${C}/join/${encodeURIComponent(old)}`, { token: u.accessToken, body: {} })).status, 200);
      const user = encodeURIComponent(u.userId);
      assert.equal((await call('PUT', `${C}/user/${user}/rooms/${encodeURIComponent(old)}/tags/u.team`, { token: u.accessToken, body: { order: i / MEMBERS } })).status, 200);
      if (i % 10 === 0) {
        assert.equal((await call('PUT', `${C}/user/${user}/account_data/m.direct`, { token: u.accessToken, body: { [alice.userId]: ['!elsewhere:localhost', old] } })).status, 200);
      }
    });
    // One member with a room push rule for the old room.
    assert.equal((await call('PUT', `${C}/pushrules/global/room/${encodeURIComponent(old)}`, { token: seeded[3]!.accessToken, body: { actions: [] } })).status, 200);

    const since = (await call('GET', `${C}/sync?timeout=0`, { token: seeded[0]!.accessToken })).body.next_batch as string;
    const [res, ms] = await timed(() => call('POST', `${C}/rooms/${encodeURIComponent(old)}/upgrade`, { token: alice.accessToken, body: { new_version: '10' } }));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    console.log(`# upgrade of a room with ${MEMBERS} members with tags: ${ms} ms`);
    assert.ok(ms < 600, `the upgrade took ${ms} ms`);
    const neu = res.body.replacement_room as string;

    await inParallel(MEMBERS, 8, async (i) => {
      const u = seeded[i]!;
      const user = encodeURIComponent(u.userId);
      const tags = await call('GET', `${C}/user/${user}/rooms/${encodeURIComponent(neu)}/tags`, { token: u.accessToken });
      assert.deepEqual(tags.body.tags, { 'u.team': { order: i / MEMBERS } }, `${u.userId}'s tag followed the room`);
      if (i % 10 === 0) {
        const direct = await call('GET', `${C}/user/${user}/account_data/m.direct`, { token: u.accessToken });
        assert.deepEqual(direct.body, { [alice.userId]: ['!elsewhere:localhost', old, neu] });
      }
    });
    const rule = await call('GET', `${C}/pushrules/global/room/${encodeURIComponent(neu)}`, { token: seeded[3]!.accessToken });
    assert.equal(rule.status, 200, 'the room push rule followed the room');
    // Members' clients hear of it: the changed m.direct reaches their next /sync.
    const sync = await call('GET', `${C}/sync?timeout=0&since=${since}`, { token: seeded[0]!.accessToken });
    const direct = (sync.body.account_data.events as Array<{ type: string; content: Record<string, string[]> }>).find((e) => e.type === 'm.direct');
    assert.deepEqual(direct?.content, { [alice.userId]: ['!elsewhere:localhost', old, neu] }, 'the new m.direct is in the next /sync');
  });
});
