import { test } from 'node:test';
import assert from 'node:assert/strict';
import { actionLevel, defaultPowerLevels, requiredLevelForEvent, toPowerLevel, userLevel } from '../../homeserver/protocol/power-levels.ts';
import { ROOM_VERSIONS } from '../../homeserver/protocol/room-versions.ts';

const V = (id: string) => ROOM_VERSIONS[id]!;
const create = { sender: '@alice:x', content: { creator: '@bob:x' } as Record<string, unknown> };

test('userLevel with a power levels event: users entry, then users_default, then 0', () => {
  const pl = { users: { '@a:x': 75 }, users_default: 5 };
  assert.equal(userLevel(pl, '@a:x'), 75);
  assert.equal(userLevel(pl, '@b:x'), 5);
  assert.equal(userLevel({}, '@b:x'), 0);
  // the create event only matters when there is no power levels event
  assert.equal(userLevel({}, '@bob:x', create, V('10')), 0);
});

test('userLevel without a power levels event: creator 100, others 0, per room version', () => {
  assert.equal(userLevel(undefined, '@bob:x', create, V('10')), 100);
  assert.equal(userLevel(undefined, '@alice:x', create, V('10')), 0);
  assert.equal(userLevel(undefined, '@alice:x', create, V('11')), 100);
  assert.equal(userLevel(undefined, '@bob:x', create, V('11')), 0);
  // no version: content.creator when present, else sender
  assert.equal(userLevel(undefined, '@bob:x', create), 100);
  assert.equal(userLevel(undefined, '@alice:x', { sender: '@alice:x', content: {} }), 100);
  assert.equal(userLevel(undefined, '@bob:x'), 0);
});

test('userLevel reads legacy stringy and float levels', () => {
  assert.equal(userLevel({ users: { '@a:x': ' +50 ' as unknown as number } }, '@a:x'), 50);
  assert.equal(userLevel({ users: { '@a:x': 50.9 } }, '@a:x'), 50);
  assert.equal(userLevel({ users_default: '-3' as unknown as number }, '@z:x'), -3);
});

test('requiredLevelForEvent defaults: state 50, events 0, with or without a power levels event', () => {
  assert.equal(requiredLevelForEvent(undefined, 'm.room.topic', true), 50);
  assert.equal(requiredLevelForEvent(undefined, 'm.room.message', false), 0);
  assert.equal(requiredLevelForEvent({}, 'm.room.topic', true), 50);
  assert.equal(requiredLevelForEvent({}, 'm.room.message', false), 0);
  const pl = { state_default: 20, events_default: 10, events: { 'm.room.message': 3, 'm.room.name': 0 } };
  assert.equal(requiredLevelForEvent(pl, 'm.room.topic', true), 20);
  assert.equal(requiredLevelForEvent(pl, 'm.reaction', false), 10);
  assert.equal(requiredLevelForEvent(pl, 'm.room.message', false), 3);
  assert.equal(requiredLevelForEvent(pl, 'm.room.name', true), 0); // 0 must not fall back to the default
});

test('actionLevel defaults: invite 0, kick/ban/redact 50', () => {
  assert.equal(actionLevel(undefined, 'invite'), 0);
  assert.equal(actionLevel(undefined, 'kick'), 50);
  assert.equal(actionLevel({}, 'ban'), 50);
  assert.equal(actionLevel({}, 'redact'), 50);
  assert.equal(actionLevel({ ban: 0, invite: 20 }, 'ban'), 0);
  assert.equal(actionLevel({ ban: 0, invite: 20 }, 'invite'), 20);
});

test('toPowerLevel follows each room version', () => {
  assert.equal(toPowerLevel('100', V('9')), 100);
  assert.equal(toPowerLevel('000100', V('9')), 100);
  assert.equal(toPowerLevel(' -100 ', V('1')), -100);
  assert.equal(toPowerLevel('100', V('10')), undefined);
  assert.equal(toPowerLevel('1.5', V('9')), undefined);
  assert.equal(toPowerLevel('', V('9')), undefined);
  assert.equal(toPowerLevel(51146.98, V('5')), 51146);
  assert.equal(toPowerLevel(51146.98, V('6')), undefined);
  assert.equal(toPowerLevel(true, V('1')), undefined);
  assert.equal(toPowerLevel(null), undefined);
  assert.equal(toPowerLevel(2 ** 53, V('10')), undefined);
  assert.equal(toPowerLevel(-0, V('10')), 0);
});

test('defaultPowerLevels matches what Synapse creates', () => {
  assert.deepEqual(defaultPowerLevels('@c:x', V('10')), {
    users: { '@c:x': 100 },
    users_default: 0,
    events: {
      'm.room.name': 50,
      'm.room.power_levels': 100,
      'm.room.history_visibility': 100,
      'm.room.canonical_alias': 50,
      'm.room.avatar': 50,
      'm.room.tombstone': 100,
      'm.room.server_acl': 100,
      'm.room.encryption': 100,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: 50,
    notifications: { room: 50 },
  });
});
