// The room engine as a DAG (issue 10): synthetic PDUs from a second server, signed with an in-test
// key, persisted through persistAuthorised against a real server's engine (in this process, over a
// test database), read back over the client API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { startHomeserver, type Homeserver } from '../../homeserver/main.ts';
import { loadConfig } from '../../homeserver/config.ts';
import type { PDU } from '../../homeserver/protocol/auth.ts';
import { createTestDatabase } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { remoteServer } from '../helpers/pdus.ts';

const remote = remoteServer('remote.test');
const alice = '@alice:remote.test';
const bob = '@bob:remote.test';

let hs: Homeserver;
let base: string;
let me: Credentials;
let dataDir: string;

before(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-dag-'));
  const url = await createTestDatabase();
  const config = loadConfig({
    PORT: '0', SERVER_NAME: 'localhost', DATA_DIR: dataDir, RATE_LIMITS: 'off', LOG_LEVEL: 'warn', ...(url ? { DATABASE_URL: url } : {}),
  });
  hs = await startHomeserver(config, pino({ level: 'warn' }));
  base = `http://127.0.0.1:${(hs.server.address() as AddressInfo).port}`;
  me = await registerUser(base, 'dagtester');
});

after(async () => {
  await hs?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const enc = encodeURIComponent;

/** The room's state events by name, built by the remote server; `me` joins too. */
function roomStart(roomId: string, pl: Record<string, unknown>) {
  const create = remote.event({ roomId, type: 'm.room.create', sender: alice, stateKey: '', content: { room_version: '10', creator: alice }, prev: [], auth: [] });
  const aliceJoin = remote.event({ roomId, type: 'm.room.member', sender: alice, stateKey: alice, content: { membership: 'join' }, prev: [create], auth: [create] });
  const power = remote.event({ roomId, type: 'm.room.power_levels', sender: alice, stateKey: '', content: pl, prev: [aliceJoin], auth: [create, aliceJoin] });
  const rules = remote.event({ roomId, type: 'm.room.join_rules', sender: alice, stateKey: '', content: { join_rule: 'public' }, prev: [power], auth: [create, aliceJoin, power] });
  return { create, aliceJoin, power, rules };
}

function join(roomId: string, user: string, prev: PDU[], auth: PDU[]): PDU {
  return remote.event({ roomId, type: 'm.room.member', sender: user, stateKey: user, content: { membership: 'join' }, prev, auth });
}

async function state(roomId: string, type: string): Promise<{ status: number; body: any }> {
  return api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state/${type}/`, { token: me.accessToken });
}

async function extremities(roomId: string): Promise<string[]> {
  const r = await hs.db.raw('SELECT extremities FROM rooms WHERE room_id = ?', [roomId]);
  return [...r.rows[0].extremities].sort();
}

async function allMessages(roomId: string, dir: 'b' | 'f', limit: number, from?: string): Promise<string[]> {
  const ids: string[] = [];
  let token = from;
  for (let pages = 0; pages < 500; pages++) {
    const q = new URLSearchParams({ dir, limit: String(limit), ...(token ? { from: token } : {}) });
    const r = await api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?${q}`, { token: me.accessToken });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    ids.push(...r.body.chunk.map((e: { event_id: string }) => e.event_id));
    if (!r.body.end) return ids;
    token = r.body.end;
  }
  throw new Error('pagination did not end');
}

describe('the room engine as a DAG', () => {
  const roomId = '!fork:remote.test';
  const pl0 = { users: { [alice]: 100, [bob]: 50 }, state_default: 50, events_default: 0, users_default: 0 };
  const s = roomStart(roomId, pl0);
  let bobJoin: PDU;
  let meJoin: PDU;
  let sinceBefore: string;

  test('a remote room persists with its state, forward extremity and a local member', async () => {
    bobJoin = join(roomId, bob, [s.rules], [s.create, s.power, s.rules]);
    meJoin = join(roomId, me.userId, [bobJoin], [s.create, s.power, s.rules]);
    const results = await hs.engine.persistAuthorised(roomId, [meJoin, s.rules, bobJoin, s.create, s.power, s.aliceJoin]);
    assert.deepEqual(results.map((r) => r.outcome), Array(6).fill('accepted'), JSON.stringify(results));
    assert.deepEqual(await extremities(roomId), [meJoin.event_id]);
    const joined = await api(base, 'GET', '/_matrix/client/v3/joined_rooms', { token: me.accessToken });
    assert.ok(joined.body.joined_rooms.includes(roomId));
    assert.equal((await state(roomId, 'm.room.power_levels')).body.users[bob], 50);
    // The same events again change nothing.
    const again = await hs.engine.persistAuthorised(roomId, [s.power, meJoin]);
    assert.deepEqual(again.map((r) => r.outcome), ['duplicate', 'duplicate']);
    const sync = await api(base, 'GET', '/_matrix/client/v3/sync?timeout=0', { token: me.accessToken });
    sinceBefore = sync.body.next_batch;
  });

  test('a fork of two branches with conflicting power-level changes resolves to the spec state', async () => {
    // Branch A: bob (power 50, state_default 50) sets the topic. Branch B: alice takes bob's power away.
    const topic = remote.event({ roomId, type: 'm.room.topic', sender: bob, stateKey: '', content: { topic: 'bob was here' }, prev: [meJoin], auth: [s.create, s.power, bobJoin] });
    const demote = remote.event({
      roomId, type: 'm.room.power_levels', sender: alice, stateKey: '', content: { ...pl0, users: { [alice]: 100, [bob]: 0 } }, prev: [meJoin], auth: [s.create, s.power, s.aliceJoin],
    });
    const resolutions = hs.engine.dag.timings.resolutions;
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [topic])).map((r) => r.outcome), ['accepted']);
    assert.equal((await state(roomId, 'm.room.topic')).body.topic, 'bob was here');
    // Each branch on its own is allowed: the demotion cites the state before the topic.
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [demote])).map((r) => r.outcome), ['accepted']);
    assert.deepEqual(await extremities(roomId), [topic.event_id!, demote.event_id!].sort());
    assert.ok(hs.engine.dag.timings.resolutions > resolutions, 'the two branches were resolved');
    // Resolution: the power event (the demotion) first, then bob's topic checked against it: gone.
    assert.equal((await state(roomId, 'm.room.power_levels')).body.users[bob], 0);
    assert.equal((await state(roomId, 'm.room.topic')).status, 404);

    // A local event cites every extremity and so merges the fork.
    const sent = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t1`, { token: me.accessToken, body: { msgtype: 'm.text', body: 'merge' } });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    const row = await hs.db.raw('SELECT prev_event_ids, depth FROM events WHERE event_id = ?', [sent.body.event_id]);
    assert.deepEqual([...row.rows[0].prev_event_ids].sort(), [topic.event_id!, demote.event_id!].sort());
    assert.deepEqual(await extremities(roomId), [sent.body.event_id]);
    assert.equal((await state(roomId, 'm.room.topic')).status, 404);
  });

  test('an event its auth events do not allow is rejected, and a rejected auth event rejects its dependants', async () => {
    const head = (await hs.db.raw('SELECT event_id, json FROM events WHERE event_id = ?', [(await extremities(roomId))[0]])).rows[0];
    const prev = { ...JSON.parse(head.json), event_id: head.event_id } as PDU;
    // Mallory never joined: her own membership is not among (nor could be among) the auth events.
    const mallory = '@mallory:remote.test';
    const intruder = remote.event({ roomId, type: 'm.room.message', sender: mallory, content: { body: 'hi' }, prev: [prev], auth: [s.create, s.power] });
    // Alice's message citing an auth event the selection algorithm never picks (the topic).
    const badAuth = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'x' }, prev: [prev], auth: [s.create, s.power, s.aliceJoin, s.rules] });
    // A join by mallory without the join rules among its auth events: rejected.
    const badJoin = join(roomId, mallory, [prev], [s.create, s.power]);
    const r = await hs.engine.persistAuthorised(roomId, [intruder, badAuth, badJoin]);
    assert.deepEqual(r.map((x) => x.outcome), ['rejected', 'rejected', 'rejected'], JSON.stringify(r));
    // Citing the rejected join as an auth event: rejected too.
    const after = remote.event({ roomId, type: 'm.room.message', sender: mallory, content: { body: 'x' }, prev: [prev], auth: [s.create, s.power, badJoin] });
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [after])).map((x) => x.outcome), ['rejected']);
    assert.deepEqual(await extremities(roomId), [prev.event_id!], 'rejected events are never extremities');
    // An event citing a rejected one builds on the state before it (a rejected event changes none).
    const child = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'after a rejected one' }, prev: [intruder], auth: [s.create, s.power, s.aliceJoin] });
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [child])).map((x) => x.outcome), ['accepted']);
    assert.deepEqual(await extremities(roomId), [prev.event_id!, child.event_id!].sort());
    assert.equal((await state(roomId, 'm.room.power_levels')).body.users[bob], 0);
    // Unknown auth events: nothing stored, the caller is told which.
    const orphan = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'x' }, prev: [prev], auth: [s.create, { ...s.power, event_id: '$nope' }] });
    const missing = await hs.engine.persistAuthorised(roomId, [orphan]);
    assert.equal(missing[0]!.outcome, 'missing_auth_events');
    assert.deepEqual(missing[0]!.missing, ['$nope']);
    assert.equal((await hs.db.raw('SELECT 1 FROM events WHERE event_id = ?', [orphan.event_id!])).rows.length, 0);
  });

  test('an event allowed by its auth events and the state before it but not by the current state is soft-failed and invisible', async () => {
    // Bob, demoted in the current state, sets the topic on a branch from before his demotion.
    const sneaky = remote.event({ roomId, type: 'm.room.topic', sender: bob, stateKey: '', content: { topic: 'sneaky' }, prev: [meJoin], auth: [s.create, s.power, bobJoin] });
    const sneakyMsg = remote.event({ roomId, type: 'm.room.message', sender: bob, content: { body: 'soft' }, prev: [sneaky], auth: [s.create, s.power, bobJoin] });
    const headBefore = await extremities(roomId);
    const r = await hs.engine.persistAuthorised(roomId, [sneaky]);
    assert.equal(r[0]!.outcome, 'soft_failed', JSON.stringify(r));
    // A message after it (bob may still speak) is accepted: soft-failed events stay in the DAG.
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [sneakyMsg])).map((x) => x.outcome), ['accepted']);
    assert.ok(!(await extremities(roomId)).includes(sneaky.event_id!));
    assert.deepEqual((await extremities(roomId)).filter((x) => !headBefore.includes(x)), [sneakyMsg.event_id]);
    assert.equal((await state(roomId, 'm.room.topic')).status, 404);
    const sync = await api(base, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${sinceBefore}`, { token: me.accessToken });
    const timeline = sync.body.rooms.join[roomId].timeline.events.map((e: { event_id: string }) => e.event_id);
    assert.ok(timeline.includes(sneakyMsg.event_id));
    assert.ok(!timeline.includes(sneaky.event_id), 'the soft-failed event is not synced');
    const history = await allMessages(roomId, 'b', 50);
    assert.ok(history.includes(sneakyMsg.event_id!));
    assert.ok(!history.includes(sneaky.event_id!), 'nor paginated');
    const ev = await api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/context/${enc(sneakyMsg.event_id!)}`, { token: me.accessToken });
    assert.equal(ev.status, 200);
    assert.ok(![...ev.body.events_before, ...ev.body.events_after].some((e: { event_id: string }) => e.event_id === sneaky.event_id));
  });

  test('events arriving child-before-parent are kept as a gap and ordered once the parent comes', async () => {
    const heads = await Promise.all((await extremities(roomId)).map(async (id) => {
      const row = (await hs.db.raw('SELECT event_id, json FROM events WHERE event_id = ?', [id])).rows[0];
      return { ...JSON.parse(row.json), event_id: row.event_id } as PDU;
    }));
    const m1 = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'parent' }, prev: heads, auth: [s.create, s.power, s.aliceJoin] });
    const m2 = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'child' }, prev: [m1], auth: [s.create, s.power, s.aliceJoin] });
    const m3 = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'grandchild' }, prev: [m2], auth: [s.create, s.power, s.aliceJoin] });
    const r3 = await hs.engine.persistAuthorised(roomId, [m3]);
    assert.equal(r3[0]!.outcome, 'outlier');
    assert.deepEqual(r3[0]!.missing, [m2.event_id]);
    const r2 = await hs.engine.persistAuthorised(roomId, [m2]);
    assert.equal(r2[0]!.outcome, 'outlier');
    const points = await hs.engine.backfillPoints(roomId);
    assert.deepEqual(points.map((p) => p.missing_event_id).sort(), [m1.event_id, m2.event_id].sort());
    assert.ok(!(await allMessages(roomId, 'b', 50)).includes(m2.event_id!), 'outliers are not shown');

    const r1 = await hs.engine.persistAuthorised(roomId, [m1]);
    // The answer names the waiting events that followed it.
    assert.deepEqual(r1.map((r) => [r.eventId, r.outcome]), [[m1.event_id, 'accepted'], [m2.event_id, 'accepted'], [m3.event_id, 'accepted']]);
    const stored = await hs.db.raw('SELECT event_id, outlier, stream_pos FROM events WHERE event_id = ANY(?) ORDER BY stream_pos', [[m1.event_id!, m2.event_id!, m3.event_id!]]);
    assert.deepEqual(stored.rows.map((x: { event_id: string; outlier: boolean }) => [x.event_id, x.outlier]), [[m1.event_id, false], [m2.event_id, false], [m3.event_id, false]]);
    assert.ok(stored.rows.every((x: { stream_pos: string }) => Number(x.stream_pos) > 0));
    assert.deepEqual(await extremities(roomId), [m3.event_id]);
    assert.deepEqual(await hs.engine.backfillPoints(roomId), []);
    assert.deepEqual((await allMessages(roomId, 'b', 2)).slice(0, 3), [m3.event_id, m2.event_id, m1.event_id]);
    const sync = await api(base, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${sinceBefore}`, { token: me.accessToken });
    const timeline = sync.body.rooms.join[roomId].timeline.events.map((e: { event_id: string }) => e.event_id);
    assert.deepEqual(timeline.slice(-3), [m1.event_id, m2.event_id, m3.event_id]);
    // Push rules ran on the remote messages: they count as unread notifications.
    assert.ok(sync.body.rooms.join[roomId].unread_notifications.notification_count >= 3, JSON.stringify(sync.body.rooms.join[roomId].unread_notifications));
  });

  test('local sends and remote events racing in one room are all persisted, and the next local event merges what forked', async () => {
    const heads = await Promise.all((await extremities(roomId)).map(async (id) => {
      const row = (await hs.db.raw('SELECT event_id, json FROM events WHERE event_id = ?', [id])).rows[0];
      return { ...JSON.parse(row.json), event_id: row.event_id } as PDU;
    }));
    const remoteChain: PDU[] = [];
    let prev = heads;
    for (let i = 0; i < 10; i++) {
      const e = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: `race ${i}` }, prev, auth: [s.create, s.power, s.aliceJoin] });
      remoteChain.push(e);
      prev = [e];
    }
    const [locals, remotes] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, (_, i) =>
        api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/race${i}`, { token: me.accessToken, body: { body: `local ${i}` } }))),
      (async () => {
        const out = [];
        for (const e of remoteChain) out.push(...(await hs.engine.persistAuthorised(roomId, [e])));
        return out;
      })(),
    ]);
    assert.ok(locals.every((r) => r.status === 200), JSON.stringify(locals.find((r) => r.status !== 200)?.body));
    assert.ok(remotes.every((r) => r.outcome === 'accepted'), JSON.stringify(remotes));
    const ext = await extremities(roomId);
    assert.ok(ext.length <= 2 && ext.length >= 1, JSON.stringify(ext));
    const merge = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/race-merge`, { token: me.accessToken, body: { body: 'merge' } });
    assert.deepEqual(await extremities(roomId), [merge.body.event_id]);
    const history = await allMessages(roomId, 'b', 100);
    for (const id of [...locals.map((r) => r.body.event_id), ...remoteChain.map((e) => e.event_id)]) assert.ok(history.includes(id), id);
  });

  test('remote redactions apply when their sender may redact: same server, before or after the target arrives', async () => {
    const heads = await Promise.all((await extremities(roomId)).map(async (id) => {
      const row = (await hs.db.raw('SELECT event_id, json FROM events WHERE event_id = ?', [id])).rows[0];
      return { ...JSON.parse(row.json), event_id: row.event_id } as PDU;
    }));
    const auth = [s.create, s.power, bobJoin];
    const target = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'secret words' }, prev: heads, auth: [s.create, s.power, s.aliceJoin] });
    // Bob (power 0 now) redacts alice's message: same server, applied.
    const redaction = remote.event({ roomId, type: 'm.room.redaction', sender: bob, content: { redacts: target.event_id }, prev: [target], auth });
    // Bob redacts the local user's message: another server, no power: stored, not applied.
    const mine = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/keep`, { token: me.accessToken, body: { body: 'keep me' } });
    const foreign = remote.event({ roomId, type: 'm.room.redaction', sender: bob, content: { redacts: mine.body.event_id }, prev: [redaction], auth });
    // A redaction before its target: the target (same server) is redacted when it comes.
    const later = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { body: 'late words' }, prev: [foreign], auth: [s.create, s.power, s.aliceJoin] });
    const early = remote.event({ roomId, type: 'm.room.redaction', sender: alice, content: { redacts: later.event_id }, prev: [foreign], auth: [s.create, s.power, s.aliceJoin] });
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [target, redaction, foreign])).map((r) => r.outcome), ['accepted', 'accepted', 'accepted']);
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [early])).map((r) => r.outcome), ['accepted']);
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [later])).map((r) => r.outcome), ['accepted']);
    const get = (id: string) => api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(id)}`, { token: me.accessToken });
    const t = await get(target.event_id!);
    assert.deepEqual(t.body.content, {});
    assert.equal(t.body.unsigned.redacted_because.event_id, redaction.event_id);
    assert.equal((await get(mine.body.event_id)).body.content.body, 'keep me');
    assert.deepEqual((await get(later.event_id!)).body.content, {});
    const found = await api(base, 'POST', '/_matrix/client/v3/search', { token: me.accessToken, body: { search_categories: { room_events: { search_term: 'words', filter: { rooms: [roomId] } } } } });
    assert.deepEqual(found.body.search_categories.room_events.results, [], 'redacted text is not searchable');
  });

  test('bad input to persistAuthorised changes nothing', async () => {
    const other = remote.event({ roomId: '!other:remote.test', type: 'm.room.message', sender: alice, content: {}, prev: [], auth: [] });
    await assert.rejects(hs.engine.persistAuthorised(roomId, [other]), /not in room/);
    await assert.rejects(hs.engine.persistAuthorised('!unknown:remote.test', [{ ...other, room_id: '!unknown:remote.test' }]), /Unknown room/);
  });
});

describe('backfill under a live room', () => {
  const roomId = '!history:remote.test';
  const s = roomStart(roomId, { users: { [alice]: 100 }, state_default: 50, events_default: 0, users_default: 0 });
  const HISTORY = 1000;
  const history: PDU[] = [];
  let meJoin: PDU;
  const live: string[] = [];
  let since: string;

  test('joining a room with unknown history: the join is live, its missing prev events a backfill point', async () => {
    let prev = s.rules;
    for (let i = 0; i < HISTORY; i++) {
      prev = remote.event({ roomId, type: 'm.room.message', sender: alice, content: { msgtype: 'm.text', body: `old ${i}` }, prev: [prev], auth: [s.create, s.power, s.aliceJoin] });
      history.push(prev);
    }
    meJoin = join(roomId, me.userId, [prev], [s.create, s.power, s.rules]);
    // The auth chain as outliers, then the join with the state before it (what send_join brings).
    const chain = await hs.engine.persistAuthorised(roomId, [s.create, s.aliceJoin, s.power, s.rules], { outlier: true });
    assert.deepEqual(chain.map((r) => r.outcome), Array(4).fill('outlier'));
    const stateIds = [s.create, s.aliceJoin, s.power, s.rules].map((e) => e.event_id!);
    const joined = await hs.engine.persistAuthorised(roomId, [meJoin], { stateBefore: new Map([[meJoin.event_id!, stateIds]]) });
    assert.deepEqual(joined.map((r) => r.outcome), ['accepted']);
    assert.deepEqual((await hs.engine.backfillPoints(roomId)).map((p) => [p.missing_event_id, p.waiting_event_id]), [[prev.event_id, meJoin.event_id]]);
    for (let i = 0; i < 5; i++) {
      const sent = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/live${i}`, { token: me.accessToken, body: { msgtype: 'm.text', body: `live ${i}` } });
      assert.equal(sent.status, 200);
      live.push(sent.body.event_id);
    }
    since = (await api(base, 'GET', '/_matrix/client/v3/sync?timeout=0', { token: me.accessToken })).body.next_batch;
  });

  test('1,000 events backfilled newest first page back in order with no duplicates and never reach an incremental /sync', async () => {
    const began = performance.now();
    // Newest first, 100 at a time, as /backfill answers: each batch waits (as a gap) for the next.
    const older = [...history].reverse();
    for (let i = 0; i < older.length; i += 100) {
      const r = await hs.engine.persistAuthorised(roomId, older.slice(i, i + 100), { backfill: true });
      assert.ok(r.every((x) => x.outcome === 'outlier' || x.outcome === 'accepted'), JSON.stringify(r.find((x) => x.outcome !== 'outlier' && x.outcome !== 'accepted')));
    }
    // The state events that start the room: everything waiting on them follows.
    const r = await hs.engine.persistAuthorised(roomId, [s.create, s.aliceJoin, s.power, s.rules], { backfill: true });
    assert.equal(r.length, 4 + HISTORY);
    assert.ok(r.every((x) => x.outcome === 'accepted'));
    assert.deepEqual(r.slice(0, 4).map((x) => x.eventId), [s.create, s.aliceJoin, s.power, s.rules].map((e) => e.event_id));
    const rows = await hs.db.raw('SELECT count(*) AS n, max(stream_pos) AS top FROM events WHERE event_id = ANY(?) AND NOT outlier', [history.map((h) => h.event_id!)]);
    assert.equal(Number(rows.rows[0].n), HISTORY);
    assert.ok(Number(rows.rows[0].top) < 0, 'backfilled history sits below every live position');
    assert.deepEqual(await hs.engine.backfillPoints(roomId), []);
    console.log(`# backfilled ${HISTORY} events in ${Math.round(performance.now() - began)} ms`);

    const expected = [...live].reverse().concat([meJoin.event_id!], older.map((h) => h.event_id!), [s.rules, s.power, s.aliceJoin, s.create].map((e) => e.event_id!));
    const back = await allMessages(roomId, 'b', 97);
    assert.equal(new Set(back).size, back.length, 'no duplicates');
    assert.deepEqual(back, expected);
    // Forwards from the start, the same events the other way round.
    const fwd = await allMessages(roomId, 'f', 150);
    assert.deepEqual(fwd, [...expected].reverse());
    // A /sync token still pages back from where /sync stands.
    const fromSync = await allMessages(roomId, 'b', 250, since);
    assert.deepEqual(fromSync, expected);

    const sync = await api(base, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${since}`, { token: me.accessToken });
    assert.equal(sync.status, 200);
    const timeline = sync.body.rooms?.join?.[roomId]?.timeline?.events ?? [];
    assert.deepEqual(timeline, [], 'backfilled history is not new to /sync');
    // A live event after it is, alone.
    const sent = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/after`, { token: me.accessToken, body: { msgtype: 'm.text', body: 'after' } });
    const next = await api(base, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${since}`, { token: me.accessToken });
    assert.deepEqual(next.body.rooms.join[roomId].timeline.events.map((e: { event_id: string }) => e.event_id), [sent.body.event_id]);
    // Remote history is searchable like local messages.
    const found = await api(base, 'POST', '/_matrix/client/v3/search', { token: me.accessToken, body: { search_categories: { room_events: { search_term: '500', filter: { rooms: [roomId] } } } } });
    assert.equal(found.status, 200, JSON.stringify(found.body));
    assert.deepEqual(found.body.search_categories.room_events.results.map((x: { result: { event_id: string } }) => x.result.event_id), [history[500]!.event_id]);
    // /context around an old event reads its neighbours in topological order.
    const mid = older[500]!.event_id!;
    const ctx = await api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/context/${enc(mid)}?limit=4`, { token: me.accessToken });
    assert.equal(ctx.status, 200);
    assert.deepEqual(ctx.body.events_before.map((e: { event_id: string }) => e.event_id), [older[501]!.event_id, older[502]!.event_id]);
    assert.deepEqual(ctx.body.events_after.map((e: { event_id: string }) => e.event_id), [older[499]!.event_id, older[498]!.event_id]);
    const onwards = await allMessages(roomId, 'b', 3, ctx.body.start);
    assert.deepEqual(onwards.slice(0, 2), [older[503]!.event_id, older[504]!.event_id]);
  });

  test('malformed pagination tokens are refused', async () => {
    for (const bad of ['t1', 'tx-1', 't1-', 's-1', `t${'9'.repeat(30)}-1`]) {
      const r = await api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&from=${bad}`, { token: me.accessToken });
      assert.equal(r.status, 400, bad);
      assert.equal(r.body.errcode, 'M_INVALID_PARAM');
    }
  });
});

describe('out-of-band memberships', () => {
  test('an invite into a room this server is not in is an outlier that /sync shows as an invite', async () => {
    const roomId = '!invited:remote.test';
    const s = roomStart(roomId, { users: { [alice]: 100 }, state_default: 50, events_default: 0, users_default: 0 });
    const since = (await api(base, 'GET', '/_matrix/client/v3/sync?timeout=0', { token: me.accessToken })).body.next_batch;
    const invite = remote.event({
      roomId, type: 'm.room.member', sender: alice, stateKey: me.userId, content: { membership: 'invite' }, prev: [s.rules], auth: [s.create, s.power, s.aliceJoin, s.rules],
    });
    // Without a known room or a version, nothing can be stored.
    await assert.rejects(hs.engine.persistAuthorised(roomId, [invite], { outOfBand: true }), /Unknown room/);
    const r = await hs.engine.persistAuthorised(roomId, [invite], { outOfBand: true, roomVersion: '10' });
    assert.deepEqual(r.map((x) => x.outcome), ['outlier']);
    assert.ok(r[0]!.streamPos! > 0, 'at a live position, so an incremental /sync sees it');
    assert.deepEqual((await hs.engine.persistAuthorised(roomId, [invite], { outOfBand: true, roomVersion: '10' })).map((x) => x.outcome), ['duplicate']);
    const sync = await api(base, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${since}`, { token: me.accessToken });
    const shown = sync.body.rooms.invite[roomId].invite_state.events;
    assert.ok(shown.some((e: { type: string; state_key: string; content: { membership: string } }) => e.type === 'm.room.member' && e.state_key === me.userId && e.content.membership === 'invite'));
    assert.deepEqual(await extremities(roomId), [], 'an outlier is never an extremity');
    // Its history is not readable until the room's state is known.
    const msgs = await api(base, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b`, { token: me.accessToken });
    assert.ok(msgs.status === 403 || (msgs.status === 200 && msgs.body.chunk.length === 0), JSON.stringify(msgs.body));
  });
});

describe('the outbox', () => {
  test('a consumer reads persisted events and EDUs in order from its saved position', async () => {
    const seen: Array<{ pos: number; id: string }> = [];
    const job = hs.outbox.consumer('dag-test', async (items) => {
      for (const i of items) seen.push({ pos: i.pos, id: i.kind === 'pdu' ? i.eventId : `edu:${i.type}` });
    }, { pollMs: 50 });
    await job.start();
    const room = await api(base, 'POST', '/_matrix/client/v3/createRoom', { token: me.accessToken, body: {} });
    await hs.outbox.appendEdus([{ destination: 'remote.test', type: 'm.typing', content: { room_id: room.body.room_id, typing: true } }]);
    const sent = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(room.body.room_id)}/send/m.room.message/o1`, { token: me.accessToken, body: { body: 'x' } });
    for (let i = 0; i < 100 && !seen.some((x) => x.id === sent.body.event_id); i++) await new Promise((r) => setTimeout(r, 50));
    await job.stop();
    const ids = seen.map((x) => x.id);
    assert.ok(ids.includes('edu:m.typing'));
    assert.ok(ids.includes(sent.body.event_id));
    assert.ok(ids.indexOf('edu:m.typing') < ids.indexOf(sent.body.event_id), 'in stream order');
    assert.deepEqual(seen.map((x) => x.pos), [...seen.map((x) => x.pos)].sort((a, b) => a - b));
    assert.equal(new Set(ids).size, ids.length);
    assert.ok((await hs.outbox.position('dag-test'))! >= seen.at(-1)!.pos, 'the position is saved');
    // A restarted consumer resumes after what it was handed: nothing twice.
    const again: string[] = [];
    const job2 = hs.outbox.consumer('dag-test', async (items) => { again.push(...items.map((i) => (i.kind === 'pdu' ? i.eventId : i.type))); }, { pollMs: 50 });
    await job2.start();
    const sent2 = await api(base, 'PUT', `/_matrix/client/v3/rooms/${enc(room.body.room_id)}/send/m.room.message/o2`, { token: me.accessToken, body: { body: 'y' } });
    for (let i = 0; i < 100 && !again.includes(sent2.body.event_id); i++) await new Promise((r) => setTimeout(r, 50));
    await job2.stop();
    assert.deepEqual(again, [sent2.body.event_id]);
    // EDUs every consumer has handed off are dropped.
    assert.equal(Number((await hs.db.raw('SELECT count(*) AS n FROM outbox_edus')).rows[0].n), 1);
    await hs.outbox.prune();
    assert.equal(Number((await hs.db.raw('SELECT count(*) AS n FROM outbox_edus')).rows[0].n), 0);
  });
});
