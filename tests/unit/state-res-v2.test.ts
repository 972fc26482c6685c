// State resolution v2: the conflict scenarios of Synapse's tests/state/test_v2.py (our own
// fixtures), run for several room versions that resolve with v2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALICE, BOB, CHARLIE, EVELYN, ZARA, ban, buildDag, changedSinceStart, join, type NodeSpec } from '../helpers/state-res-dag.ts';

// v12 runs them too, with the creator (Alice) left out of the power levels as v12 requires.
const V2_VERSIONS = ['2', '6', '10', '11', '12'];

async function check(v: string, nodes: () => NodeSpec[], edges: string[][], expected: string[]): Promise<void> {
  version = v;
  const dag = await buildDag(v, nodes(), edges);
  const r = changedSinceStart(dag, expected);
  assert.deepEqual(r.actual, r.expected, `room version ${v}`);
}

let version = '';
const pl = (id: string, sender: string, users: Record<string, number>, extra: Record<string, unknown> = {}): NodeSpec => {
  const { [ALICE]: alice, ...others } = users;
  return { id, sender, type: 'm.room.power_levels', state_key: '', content: { users: version === '12' ? others : { ...others, [ALICE]: alice }, ...extra } };
};
const topic = (id: string, sender: string): NodeSpec => ({ id, sender, type: 'm.room.topic', state_key: '', content: { topic: id } });

for (const v of V2_VERSIONS) {
  test(`v${v}: a ban races a power levels change - the ban stands, Bob's PL change loses`, async () => {
    await check(v, () => [
      pl('PA', ALICE, { [ALICE]: 100, [BOB]: 50 }),
      { id: 'MA', sender: ALICE, type: 'm.room.member', state_key: ALICE, content: join },
      { id: 'MB', sender: ALICE, type: 'm.room.member', state_key: BOB, content: ban },
      pl('PB', BOB, { [ALICE]: 100, [BOB]: 50 }),
    ], [['END', 'MB', 'MA', 'PA', 'START'], ['END', 'PB', 'PA']], ['PA', 'MA', 'MB']);
  });

  test(`v${v}: join rule evasion - a join racing a switch to a closed room loses`, async () => {
    await check(v, () => [
      { id: 'JR', sender: ALICE, type: 'm.room.join_rules', state_key: '', content: { join_rule: 'private' } },
      { id: 'ME', sender: EVELYN, type: 'm.room.member', state_key: EVELYN, content: join },
    ], [['END', 'JR', 'START'], ['END', 'ME', 'START']], ['JR']);
  });

  test(`v${v}: off-topic power levels - a chain of PL changes wins over its own ancestor`, async () => {
    await check(v, () => [
      pl('PA', ALICE, { [ALICE]: 100, [BOB]: 50 }),
      pl('PB', BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }),
      pl('PC', CHARLIE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 0 }),
    ], [['END', 'PC', 'PB', 'PA', 'START'], ['END', 'PA']], ['PC']);
  });

  test(`v${v}: topic basic - Bob's topic fails once Alice removes his power`, async () => {
    await check(v, () => [
      topic('T1', ALICE),
      pl('PA1', ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic('T2', ALICE),
      pl('PA2', ALICE, { [ALICE]: 100, [BOB]: 0 }),
      pl('PB', BOB, { [ALICE]: 100, [BOB]: 50 }),
      topic('T3', BOB),
    ], [['END', 'PA2', 'T2', 'PA1', 'T1', 'START'], ['END', 'T3', 'PB', 'PA1']], ['PA2', 'T2']);
  });

  test(`v${v}: topic reset - a ban takes Bob's topic with it`, async () => {
    await check(v, () => [
      topic('T1', ALICE),
      pl('PA', ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic('T2', BOB),
      { id: 'MB', sender: ALICE, type: 'm.room.member', state_key: BOB, content: ban },
    ], [['END', 'MB', 'T2', 'PA', 'T1', 'START'], ['END', 'T1']], ['T1', 'MB', 'PA']);
  });

  test(`v${v}: topic - the latest allowed topic by mainline order wins`, async () => {
    await check(v, () => [
      topic('T1', ALICE),
      pl('PA1', ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic('T2', ALICE),
      pl('PA2', ALICE, { [ALICE]: 100, [BOB]: 0 }),
      pl('PB', BOB, { [ALICE]: 100, [BOB]: 50 }),
      topic('T3', BOB),
      { id: 'MZ1', sender: ZARA, type: 'm.room.message', content: {} },
      topic('T4', ALICE),
    ], [['END', 'T4', 'MZ1', 'PA2', 'T2', 'PA1', 'T1', 'START'], ['END', 'MZ1', 'T3', 'PB', 'PA1']], ['T4', 'PA2']);
  });

  test(`v${v}: mainline sort - a topic on the newer power levels beats a later one on older`, async () => {
    // T4 is sent after T3, but T3 cites PA2, later in the mainline than PA1 (T4's via PB).
    await check(v, () => [
      topic('T1', ALICE),
      pl('PA1', ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic('T2', ALICE),
      pl('PA2', ALICE, { [ALICE]: 100, [BOB]: 50 }, { events: { 'm.room.power_levels': 100 } }),
      pl('PB', BOB, { [ALICE]: 100, [BOB]: 50 }),
      topic('T3', BOB),
      topic('T4', ALICE),
    ], [['END', 'T3', 'PA2', 'T2', 'PA1', 'T1', 'START'], ['END', 'T4', 'PB', 'PA1']], ['T3', 'PA2']);
  });
}
