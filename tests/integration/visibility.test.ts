// History visibility as a table: the four visibilities × membership histories × every read path.
// Each room runs one script (messages "pre", "mid", "post" around the subject's membership
// changes, each a thread root with one reply) and every path must show the subject exactly the
// messages the spec's algorithm allows (client-server "Room History Visibility", server behaviour).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const V1 = '/_matrix/client/v1';
const VISIBILITIES = ['world_readable', 'shared', 'invited', 'joined'] as const;
type Vis = (typeof VISIBILITIES)[number];
const LABELS = ['pre', 'mid', 'post'] as const;

/** Steps of each membership history; 'pre' / 'mid' / 'post' send a labelled message (and a thread reply). */
const SCRIPTS = {
  never: ['pre', 'post'],
  invited: ['pre', 'invite', 'mid'],
  rejected: ['pre', 'invite', 'mid', 'leave', 'post'],
  knockRescinded: ['pre', 'knock', 'mid', 'leave', 'post'],
  bannedBeforeJoin: ['pre', 'ban', 'post'],
  left: ['pre', 'invite', 'join', 'mid', 'leave', 'post', 'latecomer'],
  kicked: ['pre', 'invite', 'join', 'mid', 'kick', 'post', 'latecomer'],
  banned: ['pre', 'invite', 'join', 'mid', 'ban', 'post', 'latecomer'],
  joinedAfterChange: ['pre', 'changeVisibility', 'mid', 'invite', 'join', 'post'],
  visibilityRedacted: ['pre', 'invite', 'join', 'mid', 'redactVisibility', 'post'],
} as const;
type History = keyof typeof SCRIPTS;
const HISTORIES = Object.keys(SCRIPTS) as History[];

/**
 * What the subject may see, per history, for world_readable / shared / invited / joined.
 * joinedAfterChange switches world_readable, shared and invited rooms to joined, and joined rooms
 * to shared, between "pre" and "mid".
 */
const EXPECTED: Record<History, [string, string, string, string]> = {
  never: ['pre post', '', '', ''],
  invited: ['pre mid', '', 'mid', ''],
  rejected: ['pre mid post', '', 'mid', ''],
  knockRescinded: ['pre mid post', '', '', ''],
  bannedBeforeJoin: ['pre post', '', '', ''],
  left: ['pre mid post', 'pre mid', 'mid', 'mid'],
  kicked: ['pre mid post', 'pre mid', 'mid', 'mid'],
  banned: ['pre mid post', 'pre mid', 'mid', 'mid'],
  joinedAfterChange: ['pre post', 'pre post', 'post', 'mid post'],
  visibilityRedacted: ['pre mid post', 'pre mid post', 'mid post', 'mid post'],
};
const EVER_JOINED = new Set<History>(['left', 'kicked', 'banned', 'joinedAfterChange', 'visibilityRedacted']);
const NOW_JOINED = new Set<History>(['joinedAfterChange', 'visibilityRedacted']);
/** Histories with a membership row /search looks in (join, leave, ban). */
const SEARCHED = new Set<History>(HISTORIES.filter((h) => h !== 'never' && h !== 'invited'));

interface Room {
  id: string;
  vis: Vis;
  history: History;
  subject: Credentials;
  /** Event ids of each label's thread root and reply. */
  roots: Partial<Record<string, string>>;
  replies: Partial<Record<string, string>>;
}

type Table = Record<History, Record<Vis, string>>;
const expectedTable = (scope: (h: History, v: Vis, e: string) => string = (_h, _v, e) => e): Table =>
  Object.fromEntries(HISTORIES.map((h) => [h, Object.fromEntries(VISIBILITIES.map((v, i) => [v, scope(h, v, EXPECTED[h][i]!)]))])) as Table;
/** Runs `fn` over `items`, at most `n` at once. */
async function inParallel<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}
const labels = (set: Set<string>): string => LABELS.filter((l) => set.has(l)).join(' ');

describe('history visibility: visibilities × membership histories × read paths', () => {
  let server: TestServer;
  let alice: Credentials;
  let latecomer: Credentials;
  let subject: Credentials;
  let since: string;
  const rooms: Room[] = [];
  const { call, room, create } = roomApi(() => server.baseUrl);
  const ok = async (method: string, path: string, token: string, body?: unknown) => {
    const res = await call(method, path, method === 'GET' ? { token } : { token, body: body ?? {} });
    assert.equal(res.status, 200, `${method} ${path}: ${JSON.stringify(res.body)}`);
    return res.body;
  };
  /** The label of an event body ("msg pre", "reply mid"), if it is one of ours. */
  const labelOf = (ev: { content?: { body?: unknown } }): string | undefined => {
    const m = /^(?:msg|reply) (pre|mid|post)$/.exec(String(ev?.content?.body ?? ''));
    return m?.[1];
  };

  async function runScript(r: Room): Promise<void> {
    const a = alice.accessToken;
    for (const step of SCRIPTS[r.history]) {
      switch (step) {
        case 'pre': case 'mid': case 'post': {
          r.roots[step] = (await ok('PUT', `${room(r.id)}/send/m.room.message/${Math.random()}`, a, { msgtype: 'm.text', body: `msg ${step}` })).event_id;
          r.replies[step] = (await ok('PUT', `${room(r.id)}/send/m.room.message/${Math.random()}`, a, {
            msgtype: 'm.text', body: `reply ${step}`, 'm.relates_to': { rel_type: 'm.thread', event_id: r.roots[step] },
          })).event_id;
          break;
        }
        case 'invite': await ok('POST', `${room(r.id)}/invite`, a, { user_id: r.subject.userId }); break;
        case 'join': await ok('POST', `${room(r.id)}/join`, r.subject.accessToken); break;
        case 'leave': await ok('POST', `${room(r.id)}/leave`, r.subject.accessToken); break;
        case 'knock': await ok('POST', `${C}/knock/${encodeURIComponent(r.id)}`, r.subject.accessToken); break;
        case 'kick': await ok('POST', `${room(r.id)}/kick`, a, { user_id: r.subject.userId }); break;
        case 'ban': await ok('POST', `${room(r.id)}/ban`, a, { user_id: r.subject.userId }); break;
        case 'latecomer': await ok('POST', `${room(r.id)}/invite`, a, { user_id: latecomer.userId }); break;
        case 'changeVisibility':
          await ok('PUT', `${room(r.id)}/state/m.room.history_visibility`, a, { history_visibility: r.vis === 'joined' ? 'shared' : 'joined' });
          break;
        case 'redactVisibility': {
          const hv = await ok('GET', `${room(r.id)}/state/m.room.history_visibility?format=event`, a);
          await ok('PUT', `${room(r.id)}/redact/${encodeURIComponent(hv.event_id)}/${Math.random()}`, a, {});
          const after = await ok('GET', `${room(r.id)}/state/m.room.history_visibility`, a);
          assert.equal(after.history_visibility, r.vis, 'a redacted history_visibility event keeps its value');
          break;
        }
      }
    }
  }

  before(async () => {
    server = await startServer();
    // One subject plays every history, each in its own room (registering costs an argon2 hash).
    [alice, latecomer, subject] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl), registerUser(server.baseUrl)]);
    since = (await ok('GET', `${C}/sync?timeout=0`, subject.accessToken)).next_batch;
    for (const vis of VISIBILITIES) {
      for (const history of HISTORIES) rooms.push({ id: '', vis, history, subject, roots: {}, replies: {} });
    }
    // A few room creations at a time: main's pool deadlocks under ~40 concurrent ones (issue 5, finding 7).
    await inParallel(rooms, 4, async (r) => {
      r.id = await create(alice, {
        preset: 'private_chat',
        room_version: '11',
        initial_state: [
          { type: 'm.room.history_visibility', content: { history_visibility: r.vis } },
          { type: 'm.room.join_rules', content: { join_rule: 'knock' } },
        ],
      });
    });
    await inParallel(rooms, 16, runScript);
  });
  after(async () => {
    if (process.env.SHOW_SERVER_LOGS) console.log(server?.logs().split('\n').filter((l) => /"level":[56]0/.test(l)).slice(0, 5).join('\n'));
    await server?.stop();
  });

  /** Fills a table with what `seen` says the subject sees in each room. */
  async function observe(seen: (r: Room) => Promise<Set<string>>): Promise<Table> {
    const table = expectedTable(() => '');
    await Promise.all(rooms.map(async (r) => {
      table[r.history][r.vis] = labels(await seen(r));
    }));
    return table;
  }
  const get = (r: Room, path: string) => call('GET', path, { token: r.subject.accessToken });

  test('/messages (backwards and forwards)', async () => {
    for (const dir of ['b', 'f']) {
      const table = await observe(async (r) => {
        const res = await get(r, `${room(r.id)}/messages?dir=${dir}&limit=100`);
        if (res.status === 403) return new Set();
        assert.equal(res.status, 200, JSON.stringify(res.body));
        const roots = new Set<string>(res.body.chunk.filter((e: any) => /^msg /.test(e.content?.body ?? '')).map(labelOf));
        const replies = new Set<string>(res.body.chunk.filter((e: any) => /^reply /.test(e.content?.body ?? '')).map(labelOf));
        assert.equal(labels(replies), labels(roots), 'replies share their root\'s visibility');
        return roots;
      });
      assert.deepEqual(table, expectedTable(), `dir=${dir}`);
    }
  });

  test('/event', async () => {
    const table = await observe(async (r) => {
      const seen = new Set<string>();
      for (const [label, id] of Object.entries(r.roots)) {
        const res = await get(r, `${room(r.id)}/event/${encodeURIComponent(id!)}`);
        if (res.status === 200) seen.add(label);
        else assert.ok(res.status === 404 || res.status === 403, `${res.status} ${JSON.stringify(res.body)}`);
      }
      return seen;
    });
    assert.deepEqual(table, expectedTable());
  });

  test('/context: the event itself and what surrounds it', async () => {
    const around = expectedTable(() => '');
    const table = await observe(async (r) => {
      const seen = new Set<string>();
      const surrounding = new Set<string>();
      for (const [label, id] of Object.entries(r.roots)) {
        const res = await get(r, `${room(r.id)}/context/${encodeURIComponent(id!)}?limit=50`);
        if (res.status !== 200) continue;
        seen.add(label);
        for (const e of [...res.body.events_before, ...res.body.events_after]) {
          const l = labelOf(e);
          if (l) surrounding.add(l);
        }
        if (!EVER_JOINED.has(r.history) && r.vis !== 'world_readable') {
          // A user who never joined sees no room state, only their own member events.
          for (const s of res.body.state) assert.equal(s.state_key, r.subject.userId, `state ${s.type} shown to ${r.history}`);
        }
      }
      around[r.history][r.vis] = labels(surrounding);
      return seen;
    });
    assert.deepEqual(table, expectedTable());
    // Whatever surrounds a visible event is visible too.
    for (const h of HISTORIES) {
      for (const [i, v] of VISIBILITIES.entries()) {
        const allowed = new Set(EXPECTED[h][i]!.split(' '));
        for (const l of around[h][v].split(' ').filter(Boolean)) assert.ok(allowed.has(l), `${h}/${v}: context showed "${l}"`);
      }
    }
  });

  test('/relations', async () => {
    const table = await observe(async (r) => {
      const seen = new Set<string>();
      for (const [label, id] of Object.entries(r.roots)) {
        const res = await get(r, `${V1}/rooms/${encodeURIComponent(r.id)}/relations/${encodeURIComponent(id!)}`);
        if (res.status !== 200) continue;
        assert.deepEqual(res.body.chunk.map((e: any) => e.event_id), [r.replies[label]]);
        seen.add(label);
      }
      return seen;
    });
    assert.deepEqual(table, expectedTable());
  });

  test('/threads', async () => {
    const table = await observe(async (r) => {
      const res = await get(r, `${V1}/rooms/${encodeURIComponent(r.id)}/threads`);
      if (res.status === 403) return new Set();
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return new Set(res.body.chunk.map(labelOf));
    });
    assert.deepEqual(table, expectedTable());
  });

  test('/search: results and count only what the user may see', async () => {
    const table = await observe(async (r) => {
      const res = await call('POST', `${C}/search`, {
        token: r.subject.accessToken,
        body: { search_categories: { room_events: { search_term: 'msg', filter: { rooms: [r.id] }, include_state: true } } },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const found = res.body.search_categories.room_events;
      assert.equal(found.count, found.results.length, `${r.history}/${r.vis}: count ${found.count} for ${found.results.length} visible results`);
      // Room state comes with results only where the user may read the room's state.
      const stateShown = found.state?.[r.id] !== undefined;
      assert.equal(stateShown, found.results.length > 0 && (EVER_JOINED.has(r.history) || r.vis === 'world_readable'), `${r.history}/${r.vis}: state`);
      return new Set(found.results.map((x: any) => labelOf(x.result)));
    });
    assert.deepEqual(table, expectedTable((h, _v, e) => (SEARCHED.has(h) ? e : '')));
  });

  /** Labels in each room's /sync timeline, and checks that never-joined users get no room state. */
  async function syncTable(query: string): Promise<Table> {
    const table = expectedTable(() => '');
    const res = await call('GET', `${C}/sync?${query}`, { token: subject.accessToken });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const r of rooms) {
      const section = res.body.rooms.join[r.id] ?? res.body.rooms.leave[r.id];
      if (!section) continue;
      // Heroes and member counts are for joined rooms only (spec: LeftRoom has no summary).
      if (res.body.rooms.leave[r.id]) assert.equal(section.summary, undefined, `${r.history}/${r.vis}: summary in a left room`);
      table[r.history][r.vis] = labels(new Set(section.timeline.events.map(labelOf).filter(Boolean)));
      if (!EVER_JOINED.has(r.history) && r.vis !== 'world_readable') {
        for (const s of [...section.state.events, ...section.timeline.events.filter((e: any) => e.state_key !== undefined)]) {
          assert.equal(s.state_key, subject.userId, `${r.history}/${r.vis}: state ${s.type} shown in /sync`);
        }
      }
    }
    return table;
  }
  /** /sync shows left rooms up to the leave: nothing after it. */
  const syncScope = (h: History, _v: Vis, e: string) => {
    if (h === 'never' || h === 'invited') return '';
    return NOW_JOINED.has(h) ? e : e.split(' ').filter((l) => l !== 'post').join(' ');
  };
  const filter = encodeURIComponent(JSON.stringify({ room: { include_leave: true, timeline: { limit: 100 } } }));

  test('/sync initial, with include_leave (join and leave sections)', async () => {
    assert.deepEqual(await syncTable(`filter=${filter}&timeout=0`), expectedTable(syncScope));
  });

  test('/sync incremental (join and leave sections)', async () => {
    assert.deepEqual(await syncTable(`filter=${filter}&timeout=0&since=${encodeURIComponent(since)}`), expectedTable(syncScope));
  });

  test('/sync initial without include_leave shows no left rooms', async () => {
    const table = await syncTable(`filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 100 } } }))}&timeout=0`);
    assert.deepEqual(table, expectedTable((h, v, e) => (NOW_JOINED.has(h) ? syncScope(h, v, e) : '')));
  });

  test('/timestamp_to_event never lands on an event the user may not see', async () => {
    const ts = new Map<string, number>();
    await Promise.all(rooms.map(async (r) => {
      for (const e of (await ok('GET', `${room(r.id)}/messages?dir=b&limit=100`, alice.accessToken)).chunk) ts.set(e.event_id, e.origin_server_ts);
    }));
    const table = await observe(async (r) => {
      const labelById = new Map<string, string>();
      for (const [l, id] of [...Object.entries(r.roots), ...Object.entries(r.replies)]) labelById.set(id!, l);
      const seen = new Set<string>();
      for (const id of Object.values(r.roots)) {
        for (const dir of ['f', 'b']) {
          const res = await get(r, `${V1}/rooms/${encodeURIComponent(r.id)}/timestamp_to_event?ts=${ts.get(id!)}&dir=${dir}`);
          if (res.status !== 200) continue;
          const l = labelById.get(res.body.event_id);
          if (l) seen.add(l);
        }
      }
      return seen;
    });
    // Every event found is one the user may see; where they may see some, it finds some (events
    // sent in the same millisecond may make it land on a neighbour, so not each label by itself).
    for (const h of HISTORIES) {
      for (const [i, v] of VISIBILITIES.entries()) {
        const allowed = new Set(EXPECTED[h][i]!.split(' ').filter(Boolean));
        const found = table[h][v].split(' ').filter(Boolean);
        for (const l of found) assert.ok(allowed.has(l), `${h}/${v}: timestamp_to_event found "${l}"`);
        assert.equal(found.length > 0, allowed.size > 0, `${h}/${v}: found ${table[h][v] || 'nothing'}`);
      }
    }
  });

  test('/members, /joined_members and /state: never-joined users get 403, a leaver the members as of the leave', async () => {
    const statuses = expectedTable(() => '');
    await Promise.all(rooms.map(async (r) => {
      const [members, joined, state] = await Promise.all([
        get(r, `${room(r.id)}/members`),
        get(r, `${room(r.id)}/joined_members`),
        get(r, `${room(r.id)}/state`),
      ]);
      statuses[r.history][r.vis] = [members.status, joined.status, state.status].join(' ');
      if (members.status === 200) {
        const ids = new Set(members.body.chunk.map((e: any) => e.state_key));
        assert.ok(ids.has(alice.userId));
        if (['left', 'kicked', 'banned'].includes(r.history)) {
          // Invited after the subject left: seen only while the room is world_readable (its current state).
          assert.equal(ids.has(latecomer.userId), r.vis === 'world_readable', `${r.history}/${r.vis}: latecomer`);
        }
      }
    }));
    assert.deepEqual(statuses, expectedTable((h, v) => (v === 'world_readable' || EVER_JOINED.has(h) ? '200 200 200' : '403 403 403')));
  });

  test('a stranger gets 403 for the members and state of a DM and of an invite-only room', async () => {
    const dm = await create(alice, { preset: 'trusted_private_chat', is_direct: true, invite: [subject.userId] });
    const inviteOnly = await create(alice, { preset: 'private_chat' });
    for (const id of [dm, inviteOnly]) {
      for (const path of ['members', 'joined_members', 'state', 'state/m.room.create']) {
        const res = await call('GET', `${room(id)}/${path}`, { token: latecomer.accessToken });
        assert.equal(res.status, 403, `${path}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.errcode, 'M_FORBIDDEN');
      }
    }
  });
});
