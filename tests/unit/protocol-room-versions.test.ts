import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_ROOM_VERSION, ROOM_VERSIONS, getRoomVersion } from '../../homeserver/protocol/room-versions.ts';

test('versions 1-12 are known, others are not', () => {
  assert.deepEqual(Object.keys(ROOM_VERSIONS), ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12']);
  assert.equal(getRoomVersion('10')?.id, '10');
  assert.equal(getRoomVersion('12')?.id, '12');
  assert.equal(getRoomVersion('13'), undefined);
  assert.equal(getRoomVersion('constructor'), undefined);
  assert.equal(DEFAULT_ROOM_VERSION, '10');
  assert.ok(Object.isFrozen(ROOM_VERSIONS) && Object.isFrozen(ROOM_VERSIONS['1']));
});

test('feature flags switch on at the right versions', () => {
  const firstWith = (flag: keyof (typeof ROOM_VERSIONS)[string]) =>
    Object.values(ROOM_VERSIONS).filter((v) => v[flag] === true).map((v) => Number(v.id));
  const range = (from: number, to = 12) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
  assert.deepEqual(firstWith('knockJoinRule'), range(7));
  assert.deepEqual(firstWith('restrictedJoinRule'), range(8));
  assert.deepEqual(firstWith('restrictedJoinRuleFix'), range(9));
  assert.deepEqual(firstWith('knockRestrictedJoinRule'), range(10));
  assert.deepEqual(firstWith('strictIntegerPowerLevels'), range(10));
  assert.deepEqual(firstWith('implicitRoomCreator'), [11, 12]);
  assert.deepEqual(firstWith('updatedRedactionRules'), [11, 12]);
  assert.deepEqual(firstWith('roomIdIsCreateEventHash'), [12]);
  assert.deepEqual(firstWith('creatorsHaveInfinitePower'), [12]);
  assert.deepEqual(firstWith('specialCaseAliasesAuth'), range(1, 5));
  assert.deepEqual(firstWith('redactionAuthRule'), [1, 2]);
  assert.deepEqual(firstWith('strictCanonicalJson'), range(6));
  assert.deepEqual(Object.values(ROOM_VERSIONS).map((v) => v.eventIdFormat), ['v1', 'v1', 'v3', ...Array(9).fill('v4')]);
});
