// State resolution v2: tie-breaks, edge cases (empty, single, identical, missing and rejected
// events), batching of getEvents, and the v12 revision (empty starting map, conflicted subgraph).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveStateV2, stateKey, StateResolutionError, type StateResStats } from '../../homeserver/protocol/state-res-v2.ts';
import { ALICE, BOB, CHARLIE, EVELYN, ZARA, ban, buildDag, eventId, join, type Dag, type NodeSpec } from '../helpers/state-res-dag.ts';

const TOPIC = stateKey('m.room.topic', '');
const PL = stateKey('m.room.power_levels', '');

const topic = (id: string, sender: string, extra: Partial<NodeSpec> = {}): NodeSpec => ({
  id, sender, type: 'm.room.topic', state_key: '', content: { topic: id }, ...extra,
});
const pl = (id: string, sender: string, users: Record<string, number>, extra: Record<string, unknown> = {}): NodeSpec => ({
  id, sender, type: 'm.room.power_levels', state_key: '', content: { users, ...extra },
});
/** v12 creators may not be listed in power levels. */
const usersFor = (v: string, users: Record<string, number>): Record<string, number> => {
  if (v !== '12') return users;
  const { [ALICE]: _alice, ...rest } = users;
  return rest;
};

async function resolve(dag: Dag, version: string, sets: Array<Map<string, string>>, onStats?: (s: StateResStats) => void): Promise<Map<string, string>> {
  dag.calls.length = 0;
  return resolveStateV2({ roomVersion: version, stateSets: sets, getEvents: dag.getEvents, onStats });
}
const node = (id: string | undefined): string | undefined => (id === undefined ? undefined : id.slice(1, id.indexOf(':')));
const stateWith = (dag: Dag, base: string, changes: Record<string, string>): Map<string, string> => {
  const s = new Map(dag.stateAfter.get(base));
  for (const [k, n] of Object.entries(changes)) s.set(k, n.startsWith('$') ? n : eventId(n));
  return s;
};

test('no state sets resolve to an empty map; one set or identical sets to themselves, without fetching', async () => {
  const dag = await buildDag('10', [], []);
  const start = dag.stateAfter.get('START') as Map<string, string>;
  assert.deepEqual(await resolve(dag, '10', []), new Map());
  const one = await resolve(dag, '10', [start]);
  assert.deepEqual(one, start);
  assert.notEqual(one, start, 'a copy, not the caller\'s map');
  assert.deepEqual(await resolve(dag, '10', [start, new Map(start), new Map(start)]), start);
  assert.equal(dag.calls.length, 0, 'identical sets need no events');
});

test('a key missing from one state set is conflicted and resolved by the auth checks', async () => {
  const dag = await buildDag('10', [topic('T1', ALICE), topic('TZ', ZARA)], [['END', 'T1', 'START']]);
  // Alice (100) may set the topic; Zara (0) may not: her topic is dropped though only one set has it.
  assert.equal(node((await resolve(dag, '10', [stateWith(dag, 'START', { [TOPIC]: 'T1' }), dag.stateAfter.get('START') as Map<string, string>])).get(TOPIC)), 'T1');
  assert.ok(dag.calls.length > 0);
  const zara = await resolve(dag, '10', [stateWith(dag, 'START', { [TOPIC]: 'TZ' }), dag.stateAfter.get('START') as Map<string, string>]);
  assert.equal(zara.has(TOPIC), false);
});

for (const v of ['10', '12']) {
  test(`v${v}: concurrent topics of equal power and mainline: the later origin_server_ts wins, then the greater event ID`, async () => {
    for (const [tsA, tsB, winner] of [[500, 100, 'TA'], [100, 500, 'TB'], [100, 100, 'TB']] as const) {
      const dag = await buildDag(v, [topic('TA', ALICE, { ts: tsA }), topic('TB', ALICE, { ts: tsB })], [['END', 'TA', 'START'], ['END', 'TB', 'START']]);
      assert.equal(node(dag.stateAfter.get('END')?.get(TOPIC)), winner, `ts ${tsA} vs ${tsB}`);
    }
  });
}

for (const v of ['10', '11', '12']) {
  test(`v${v}: power events are ordered by sender power before origin_server_ts`, async () => {
    // Alice's change is sent last but sorts first (more power), so Bob's, allowed after it, wins.
    const dag = await buildDag(v, [
      pl('PA0', ALICE, usersFor(v, { [ALICE]: 100, [BOB]: 50 })),
      pl('PA', ALICE, usersFor(v, { [ALICE]: 100, [BOB]: 50, [ZARA]: 1 }), { ts: 1000 }),
      { ...pl('PB', BOB, usersFor(v, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 10 })), ts: 1 },
    ], [['END', 'PA', 'PA0', 'START'], ['END', 'PB', 'PA0']]);
    assert.equal(node(dag.stateAfter.get('END')?.get(PL)), 'PB');
  });
}

test('the spec\'s soft-fail example (server-server-api "Soft failure"): a topic sent while evading a ban is in the v1 state, not the v2 state', async () => {
  // A gives Zara the power to set the topic; B bans her; C, her topic, forks from A; END merges.
  const ZARA_KEY = stateKey('m.room.member', ZARA);
  const result: Record<string, [string | undefined, string | undefined]> = {};
  for (const v of ['1', '2', '10', '12']) {
    const dag = await buildDag(v, [
      pl('A', ALICE, usersFor(v, { [ALICE]: 100, [ZARA]: 50 })),
      { id: 'B', sender: ALICE, type: 'm.room.member', state_key: ZARA, content: ban },
      topic('C', ZARA),
    ], [['END', 'B', 'A', 'START'], ['END', 'C', 'A']]);
    const end = dag.stateAfter.get('END') as Map<string, string>;
    result[v] = [node(end.get(ZARA_KEY)), node(end.get(TOPIC))];
  }
  assert.deepEqual(result, { '1': ['B', 'C'], '2': ['B', undefined], '10': ['B', undefined], '12': ['B', undefined] });
});

test('a kick beats the join it kicks, even when the join claims a later timestamp (gomatrixserverlib\'s "other event doesn\'t overpower power event")', async () => {
  // The join is in the kick's auth chain, so the power sort puts it first whatever its timestamp.
  const dag = await buildDag('6', [
    { id: 'JE', sender: EVELYN, type: 'm.room.member', state_key: EVELYN, content: join, ts: 9999 },
    { id: 'KE', sender: ALICE, type: 'm.room.member', state_key: EVELYN, content: { membership: 'leave' }, ts: 10 },
  ], [['END', 'KE', 'JE', 'START']]);
  const r = await resolve(dag, '6', [dag.stateAfter.get('JE') as Map<string, string>, dag.stateAfter.get('KE') as Map<string, string>]);
  assert.equal(node(r.get(stateKey('m.room.member', EVELYN))), 'KE');
});

test('a rejected auth event does not authorise: a topic resting on a rejected join loses', async () => {
  const nodes = (rejected: boolean): NodeSpec[] => [
    pl('PA0', ALICE, { [ALICE]: 100 }, { events: { 'm.room.topic': 0 } }),
    { id: 'JE', sender: EVELYN, type: 'm.room.member', state_key: EVELYN, content: join, rejected },
    topic('TE', EVELYN, { ts: 1000, auth: ['CREATE', 'PA0', 'JE'] }),
    topic('TA', ALICE, { ts: 500 }),
  ];
  const edges = [['END', 'TE', 'JE', 'PA0', 'START'], ['END', 'TA', 'PA0']];
  const rejected = await buildDag('10', nodes(true), edges);
  assert.equal(node(rejected.stateAfter.get('END')?.get(TOPIC)), 'TA');
  assert.equal(rejected.stateAfter.get('END')?.has(stateKey('m.room.member', EVELYN)), false);
  // The same join accepted: Evelyn is a member and her later topic wins.
  const accepted = await buildDag('10', nodes(false), edges);
  assert.equal(node(accepted.stateAfter.get('END')?.get(TOPIC)), 'TE');
});

test('a rejected event in a state set never wins its key', async () => {
  const dag = await buildDag('10', [topic('TR', ALICE, { rejected: true, ts: 900 }), topic('TA', ALICE, { ts: 100 })], []);
  const r = await resolve(dag, '10', [stateWith(dag, 'START', { [TOPIC]: 'TR' }), stateWith(dag, 'START', { [TOPIC]: 'TA' })]);
  assert.equal(node(r.get(TOPIC)), 'TA');
});

test('unknown events: a conflicted one cannot win, an unconflicted one is kept, a missing auth event is skipped', async () => {
  const dag = await buildDag('10', [topic('T1', ALICE, { auth: ['CREATE', 'IPOWER', 'IMA', 'NOWHERE'] })], []);
  const ghostKey = stateKey('m.room.name', '');
  const r = await resolve(dag, '10', [
    stateWith(dag, 'START', { [TOPIC]: '$ghost:example.com', [ghostKey]: '$ghost2:example.com' }),
    stateWith(dag, 'START', { [TOPIC]: 'T1', [ghostKey]: '$ghost2:example.com' }),
  ]);
  assert.equal(node(r.get(TOPIC)), 'T1');
  assert.equal(r.get(ghostKey), '$ghost2:example.com');
  // Every id is asked for at most once.
  const asked = dag.calls.flat();
  assert.equal(new Set(asked).size, asked.length);
  assert.ok(asked.includes('$ghost:example.com') && asked.includes(eventId('NOWHERE')));
});

test('getEvents is called once per layer of the auth chain, never twice for an id', async () => {
  // A chain of 30 power levels changes on one branch: the auth chain is 30+ layers deep.
  const nodes: NodeSpec[] = [];
  const chain: string[] = ['END'];
  for (let i = 29; i >= 0; i--) chain.push(`P${String(i).padStart(2, '0')}`);
  for (let i = 0; i < 30; i++) nodes.push(pl(`P${String(i).padStart(2, '0')}`, ALICE, { [ALICE]: 100, [BOB]: i }));
  nodes.push(topic('TB', ZARA));
  const dag = await buildDag('10', nodes, [[...chain, 'START'], ['END', 'START']]);
  const sets = [dag.stateAfter.get('P29') as Map<string, string>, dag.stateAfter.get('START') as Map<string, string>];
  let stats: StateResStats | undefined;
  const r = await resolve(dag, '10', sets, (s) => { stats = s; });
  assert.equal(node(r.get(PL)), 'P29');
  const asked = dag.calls.flat();
  assert.equal(new Set(asked).size, asked.length, 'no id fetched twice');
  assert.ok(dag.calls.length <= 33, `${dag.calls.length} getEvents calls`);
  assert.equal(stats?.fetchCalls, dag.calls.length);
  assert.equal(stats?.conflictedKeys, 1);
  assert.ok((stats?.ms ?? -1) >= 0);
});

test('stats: conflicted keys, auth difference and full conflicted set of a small fork', async () => {
  const dag = await buildDag('10', [
    pl('PA1', ALICE, { [ALICE]: 100, [BOB]: 50 }), topic('T1', ALICE), topic('T2', ALICE),
  ], [['END', 'T1', 'PA1', 'START'], ['END', 'T2', 'START']]);
  let stats: StateResStats | undefined;
  await resolve(dag, '10', [dag.stateAfter.get('T1') as Map<string, string>, dag.stateAfter.get('T2') as Map<string, string>], (s) => { stats = s; });
  // Conflicted: power levels (PA1 | IPOWER) and topic (T1 | T2). Auth difference: PA1, T1, T2.
  assert.equal(stats?.conflictedKeys, 2);
  assert.equal(stats?.authDifference, 3);
  assert.equal(stats?.fullConflictedSet, 4);
  assert.equal(stats?.powerEvents, 2);
});

test('room version 1 (state resolution v1) and unknown versions are refused', async () => {
  const dag = await buildDag('10', [], []);
  const s = dag.stateAfter.get('START') as Map<string, string>;
  await assert.rejects(resolve(dag, '1', [s, s]), (e: unknown) => e instanceof StateResolutionError && /v1/.test(e.message));
  await assert.rejects(resolve(dag, '99', [s, s]), StateResolutionError);
});

// Room version 12 (state resolution "v2.1").

function resetScenario(v: string): NodeSpec[] {
  return [
    pl('PA', ALICE, usersFor(v, { [ALICE]: 100, [BOB]: 50 })),
    pl('PB', BOB, usersFor(v, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 10 })),
    { id: 'MB', sender: ALICE, type: 'm.room.member', state_key: BOB, content: { membership: 'ban' } },
  ];
}

test('v12 starts the iterative auth checks from an empty map: a change made before its sender\'s ban survives a state reset', async () => {
  // Bob changes the power levels, then is banned. One fork has lost the change (a "state reset"
  // to PA). v11 checks Bob's PB against the unconflicted ban and drops it; v12 checks it against
  // its own auth events, where Bob was a member, and keeps it.
  const result: Record<string, string | undefined> = {};
  for (const v of ['11', '12']) {
    const dag = await buildDag(v, resetScenario(v), [['END', 'MB', 'PB', 'PA', 'START']]);
    const after = dag.stateAfter.get('MB') as Map<string, string>;
    const r = await resolve(dag, v, [after, stateWith(dag, 'MB', { [PL]: 'PA' })]);
    assert.equal(node(r.get(stateKey('m.room.member', BOB))), 'MB');
    result[v] = node(r.get(PL));
  }
  assert.deepEqual(result, { '11': 'PA', '12': 'PB' });
});

test('v12 adds the conflicted state subgraph to the full conflicted set', async () => {
  const sizes: Record<string, number | undefined> = {};
  for (const v of ['11', '12']) {
    const dag = await buildDag(v, [
      pl('PA', ALICE, usersFor(v, { [ALICE]: 100, [BOB]: 50 })),
      pl('PB', BOB, usersFor(v, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 10 })),
      topic('TB', BOB),
      pl('PC', ALICE, usersFor(v, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 20 })),
    ], [['END', 'PC', 'TB', 'PB', 'PA', 'START']]);
    let stats: StateResStats | undefined;
    // PB lies between the conflicted PC and PA, and is in both auth chains (through TB).
    const r = await resolve(dag, v, [dag.stateAfter.get('PC') as Map<string, string>, stateWith(dag, 'PC', { [PL]: 'PA' })], (s) => { stats = s; });
    assert.equal(node(r.get(PL)), 'PC');
    sizes[v] = stats?.fullConflictedSet;
  }
  assert.deepEqual(sizes, { '11': 2, '12': 3 });
});

test('v12: creators outrank everyone in the power sort and cannot be banned', async () => {
  // Bob (100 in power levels, but not a creator) bans Alice (a creator) while Alice bans Bob.
  const v = '12';
  const dag = await buildDag(v, [
    pl('PA', ALICE, { [BOB]: 100 }),
    { id: 'BA', sender: BOB, type: 'm.room.member', state_key: ALICE, content: { membership: 'ban' }, ts: 1 },
    { id: 'AB', sender: ALICE, type: 'm.room.member', state_key: BOB, content: { membership: 'ban' }, ts: 2 },
  ], [['END', 'BA', 'PA', 'START'], ['END', 'AB', 'PA']]);
  const end = dag.stateAfter.get('END') as Map<string, string>;
  assert.equal(node(end.get(stateKey('m.room.member', BOB))), 'AB');
  assert.equal(node(end.get(stateKey('m.room.member', ALICE))), 'IMA');
});

test('malformed events (hostile shapes) lose their checks instead of breaking the resolution', async () => {
  const dag = await buildDag('10', [topic('TA', ALICE, { ts: 1 })], [['END', 'TA', 'START']]);
  const start = dag.stateAfter.get('START') as Map<string, string>;
  const bad = (id: string, fields: Record<string, unknown>) => {
    const ev = { ...(dag.events.get(eventId('TA')) as object), event_id: id, origin_server_ts: 5, ...fields };
    dag.events.set(id, ev as never);
  };
  bad('$nullcontent:example.com', { content: null });
  bad('$arraycontent:example.com', { content: [1] });
  bad('$badauth:example.com', { auth_events: 'nope' });
  bad('$badts:example.com', { origin_server_ts: 'soon' });
  bad('$badkey:example.com', { state_key: 7, type: 'm.room.topic' });
  bad('$badroom:example.com', { room_id: 42 });
  // A create event with null content cited by the topic.
  bad('$nullcreate:example.com', { type: 'm.room.create', state_key: '', content: null, auth_events: [] });
  bad('$citesit:example.com', { auth_events: ['$nullcreate:example.com', eventId('IPOWER'), eventId('IMA')] });
  for (const id of ['$nullcontent', '$arraycontent', '$badauth', '$badts', '$badkey', '$badroom', '$citesit']) {
    const full = `${id}:example.com`;
    const r = await resolve(dag, '10', [new Map([...start, [TOPIC, eventId('TA')]]), new Map([...start, [TOPIC, full]])]);
    assert.ok(r.has(TOPIC), id);
  }
  // A power levels change resting on that create event and no power levels: the power sort reads
  // the creator from it.
  bad('$plnullcreate:example.com', { sender: ZARA, type: 'm.room.power_levels', state_key: '', content: { users: {} }, auth_events: ['$nullcreate:example.com', eventId('IMZ')] });
  const r = await resolve(dag, '10', [start, new Map([...start, [PL, '$plnullcreate:example.com']])]);
  assert.equal(node(r.get(PL)), 'IPOWER');
});

test('v12: a create event missing from one set is checked like any event: no room_id (or its own derived one) passes, another fails', async () => {
  const CREATE = stateKey('m.room.create', '');
  const outcome: Record<string, boolean> = {};
  for (const [label, roomId] of [['derived', '!CREATE:example.com'], ['empty', ''], ['absent', undefined], ['other', '!other:example.com']] as const) {
    const dag = await buildDag('12', [], []);
    const create = dag.events.get(eventId('CREATE')) as unknown as Record<string, unknown>;
    if (roomId === undefined) delete create.room_id;
    else create.room_id = roomId;
    const start = dag.stateAfter.get('START') as Map<string, string>;
    const partial = new Map([...start].filter(([k]) => k !== CREATE));
    const r = await resolve(dag, '12', [start, partial]);
    outcome[label] = r.get(CREATE) === eventId('CREATE');
  }
  assert.deepEqual(outcome, { derived: true, empty: true, absent: true, other: false });
});

test('the result does not depend on the order of the state sets (random three-way forks, seeded)', async () => {
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const people = [ALICE, BOB, CHARLIE, ZARA, EVELYN];
  for (const v of ['6', '11', '12']) {
    for (let round = 0; round < 4; round++) {
      const nodes: NodeSpec[] = [pl('P0', ALICE, usersFor(v, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }))];
      const branches: string[][] = [[], [], []];
      for (let i = 0; i < 24; i++) {
        const id = `R${round}N${i}`;
        const who = people[rand(people.length)] as string;
        const target = people[rand(people.length)] as string;
        const kind = rand(5);
        const ts = rand(50);
        if (kind === 0) nodes.push({ ...topic(id, who), ts });
        else if (kind === 1) nodes.push({ ...pl(id, who, usersFor(v, { [ALICE]: 100, [BOB]: rand(2) * 50, [CHARLIE]: 50, [ZARA]: rand(3) * 10 })), ts });
        else if (kind === 2) nodes.push({ id, sender: who, type: 'm.room.member', state_key: target, content: { membership: ['ban', 'leave', 'invite'][rand(3)] }, ts });
        else if (kind === 3) nodes.push({ id, sender: who, type: 'm.room.member', state_key: who, content: join, ts });
        else nodes.push({ id, sender: who, type: 'm.room.join_rules', state_key: '', content: { join_rule: ['public', 'invite'][rand(2)] }, ts });
        (branches[rand(3)] as string[]).push(id);
      }
      const edges = branches.map((b) => ['END', ...b.reverse(), 'P0']);
      edges.push(['P0', 'START']);
      const dag = await buildDag(v, nodes, edges);
      const sets = branches.map((b) => dag.stateAfter.get(b[0] ?? 'P0') as Map<string, string>);
      const orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
      const results = await Promise.all(orders.map((o) => resolve(dag, v, o.map((i) => sets[i] as Map<string, string>))));
      const sorted = results.map((r) => JSON.stringify([...r].sort()));
      assert.ok(sorted.every((s) => s === sorted[0]), `room version ${v}, round ${round}`);
      // And it is the state the builder computed at END.
      assert.equal(JSON.stringify([...(dag.stateAfter.get('END') as Map<string, string>)].sort()), sorted[0]);
    }
  }
});
