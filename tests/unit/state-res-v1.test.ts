// State resolution of room version 1 (rooms/v1.md): depth and sha1 ordering, the auth-event
// passes (power levels, join rules, members) and the other keys; and resolveState's dispatch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { resolveState, resolveStateV1 } from '../../homeserver/protocol/state-res-v1.ts';
import { resolveStateV2, stateKey, StateResolutionError, type StateResStats } from '../../homeserver/protocol/state-res-v2.ts';
import { ALICE, BOB, CHARLIE, ZARA, buildDag, eventId, type Dag, type NodeSpec } from '../helpers/state-res-dag.ts';

const TOPIC = stateKey('m.room.topic', '');
const PL = stateKey('m.room.power_levels', '');
const BOB_KEY = stateKey('m.room.member', BOB);
const node = (id: string | undefined): string | undefined => (id === undefined ? undefined : id.slice(1, id.indexOf(':')));
const topic = (id: string, sender: string, extra: Partial<NodeSpec> = {}): NodeSpec => ({ id, sender, type: 'm.room.topic', state_key: '', content: { topic: id }, ...extra });
const pl = (id: string, sender: string, users: Record<string, number>): NodeSpec => ({ id, sender, type: 'm.room.power_levels', state_key: '', content: { users } });
const sha1 = (s: string) => createHash('sha1').update(s).digest('hex');
const end = (dag: Dag) => dag.stateAfter.get('END') as Map<string, string>;

test('v1: of concurrent topics at one depth the lowest sha1(event_id) wins; a deeper one beats both', async () => {
  const names = ['TA', 'TB', 'TC'];
  const lowest = names.reduce((a, b) => (sha1(eventId(a)) < sha1(eventId(b)) ? a : b));
  const flat = await buildDag('1', names.map((n) => topic(n, ALICE)), names.map((n) => ['END', n, 'START']));
  assert.equal(node(end(flat).get(TOPIC)), lowest);
  // TD follows TA on its branch, so it is deeper than TB and TC, though sent before TC.
  const deep = await buildDag('1', [...names.map((n) => topic(n, ALICE)), topic('TD', ALICE)], [['END', 'TD', 'TA', 'START'], ['END', 'TB', 'START'], ['END', 'TC', 'START']]);
  assert.equal(node(end(deep).get(TOPIC)), 'TD');
});

test('v1: the deepest topic that passes auth wins; Zara\'s (no power) does not', async () => {
  const dag = await buildDag('1', [topic('TA', ALICE), topic('TZ1', ZARA, { auth: ['CREATE', 'IPOWER', 'IMZ'] }), topic('TZ2', ZARA, { auth: ['CREATE', 'IPOWER', 'IMZ'] })], [['END', 'TZ2', 'TZ1', 'START'], ['END', 'TA', 'START']]);
  assert.equal(node(end(dag).get(TOPIC)), 'TA');
});

test('v1: power levels from the shallowest, each successor only if allowed - a demotion stops the demoted user\'s change', async () => {
  const nodes = [
    pl('PA0', ALICE, { [ALICE]: 100, [BOB]: 50 }),
    pl('PA', ALICE, { [ALICE]: 100, [BOB]: 0 }),
    topic('TB', BOB),
    pl('PB', BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 10 }),
  ];
  const dag = await buildDag('1', nodes, [['END', 'PA', 'PA0', 'START'], ['END', 'PB', 'TB', 'PA0']]);
  assert.equal(node(end(dag).get(PL)), 'PA');
  // When the deeper change is allowed after the shallower one, it wins.
  const ok = await buildDag('1', [
    pl('PA0', ALICE, { [ALICE]: 100, [BOB]: 50 }),
    pl('PA', ALICE, { [ALICE]: 100, [BOB]: 60 }),
    topic('TB', BOB),
    pl('PB', ALICE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 10 }),
  ], [['END', 'PA', 'PA0', 'START'], ['END', 'PB', 'TB', 'PA0']]);
  assert.equal(node(end(ok).get(PL)), 'PB');
});

test('v1: the first power levels change that is not allowed ends the pass, even if a deeper one would be', async () => {
  // P1 demotes Bob; P2 (Bob's, deeper) is then not allowed, which stops the pass: P3 (Alice's,
  // deeper still and allowed after P1) is never considered.
  const dag = await buildDag('1', [
    pl('PA0', ALICE, { [ALICE]: 100, [BOB]: 50 }),
    pl('P1', ALICE, { [ALICE]: 100, [BOB]: 0 }),
    topic('X1', ALICE),
    pl('P2', BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 5 }),
    topic('X2', ALICE),
    topic('X3', ALICE),
    pl('P3', ALICE, { [ALICE]: 100, [BOB]: 0, [CHARLIE]: 20 }),
  ], [['END', 'P1', 'PA0', 'START'], ['END', 'P2', 'X1', 'PA0'], ['END', 'P3', 'X3', 'X2', 'PA0']]);
  assert.equal(node(end(dag).get(PL)), 'P1');
});

test('v1: a ban beats a deeper profile change of the banned user', async () => {
  const dag = await buildDag('1', [
    { id: 'MB', sender: ALICE, type: 'm.room.member', state_key: BOB, content: { membership: 'ban' } },
    { id: 'BJ1', sender: BOB, type: 'm.room.member', state_key: BOB, content: { membership: 'join', displayname: 'b1' } },
    { id: 'BJ2', sender: BOB, type: 'm.room.member', state_key: BOB, content: { membership: 'join', displayname: 'b2' } },
  ], [['END', 'MB', 'START'], ['END', 'BJ2', 'BJ1', 'START']]);
  assert.equal(node(end(dag).get(BOB_KEY)), 'MB');
});

test('v1 takes the union of the sets (a key in one set only is not conflicted); v2 checks it', async () => {
  const dag = await buildDag('1', [topic('TZ', ZARA, { auth: ['CREATE', 'IPOWER', 'IMZ'] })], []);
  const start = dag.stateAfter.get('START') as Map<string, string>;
  const withTopic = new Map([...start, [TOPIC, eventId('TZ')]]);
  const v1 = await resolveStateV1({ roomVersion: '1', stateSets: [withTopic, start], getEvents: dag.getEvents });
  assert.equal(node(v1.get(TOPIC)), 'TZ');
  const v2 = await resolveStateV2({ roomVersion: '2', stateSets: [withTopic, start], getEvents: dag.getEvents });
  assert.equal(v2.has(TOPIC), false);
});

test('v1: unknown and rejected conflicting events drop out; a key left with one event takes it', async () => {
  // TR is deeper than TA, so only its rejection keeps it from winning.
  const dag = await buildDag('1', [topic('TA', ALICE), topic('TR', ALICE, { rejected: true })], [['TR', 'START']]);
  const start = dag.stateAfter.get('START') as Map<string, string>;
  const sets = (a: string, b: string) => [new Map([...start, [TOPIC, a]]), new Map([...start, [TOPIC, b]])];
  let stats: StateResStats | undefined;
  const r = await resolveStateV1({ roomVersion: '1', stateSets: sets(eventId('TA'), '$ghost:example.com'), getEvents: dag.getEvents, onStats: (s) => { stats = s; } });
  assert.equal(node(r.get(TOPIC)), 'TA');
  assert.equal(stats?.conflictedKeys, 1);
  assert.equal(node((await resolveStateV1({ roomVersion: '1', stateSets: sets(eventId('TR'), eventId('TA')), getEvents: dag.getEvents })).get(TOPIC)), 'TA');
  const none = await resolveStateV1({ roomVersion: '1', stateSets: sets('$g1:example.com', '$g2:example.com'), getEvents: dag.getEvents });
  assert.equal(none.has(TOPIC), false);
});

test('v1: empty, single and identical sets; other versions refused', async () => {
  const dag = await buildDag('1', [], []);
  const start = dag.stateAfter.get('START') as Map<string, string>;
  const get = dag.getEvents;
  assert.deepEqual(await resolveStateV1({ roomVersion: '1', stateSets: [], getEvents: get }), new Map());
  assert.deepEqual(await resolveStateV1({ roomVersion: '1', stateSets: [start], getEvents: get }), start);
  dag.calls.length = 0;
  assert.deepEqual(await resolveStateV1({ roomVersion: '1', stateSets: [start, new Map(start)], getEvents: get }), start);
  assert.equal(dag.calls.length, 0);
  await assert.rejects(resolveStateV1({ roomVersion: '2', stateSets: [start, start], getEvents: get }), StateResolutionError);
  await assert.rejects(resolveStateV1({ roomVersion: 'x', stateSets: [start, start], getEvents: get }), StateResolutionError);
});

test('resolveState picks v1 for room version 1 and v2 for the others', async () => {
  // The same input: v1 keeps the unchecked topic present in one set, v2 drops it.
  const dag = await buildDag('1', [topic('TZ', ZARA, { auth: ['CREATE', 'IPOWER', 'IMZ'] })], []);
  const start = dag.stateAfter.get('START') as Map<string, string>;
  const sets = [new Map([...start, [TOPIC, eventId('TZ')]]), start];
  assert.equal((await resolveState({ roomVersion: '1', stateSets: sets, getEvents: dag.getEvents })).has(TOPIC), true);
  assert.equal((await resolveState({ roomVersion: '2', stateSets: sets, getEvents: dag.getEvents })).has(TOPIC), false);
});
