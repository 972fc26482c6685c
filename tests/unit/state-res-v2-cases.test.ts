// State resolution v2: tie-breaks, edge cases (empty, single, identical, missing and rejected
// events), batching of getEvents, and the v12 revision (empty starting map, conflicted subgraph).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveStateV2, stateKey, StateResolutionError, type StateResStats } from '../../homeserver/protocol/state-res-v2.ts';
import { ALICE, BOB, CHARLIE, EVELYN, ZARA, buildDag, eventId, join, type Dag, type NodeSpec } from './state-res-v2-dag.ts';

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
