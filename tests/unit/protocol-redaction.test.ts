import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactEvent } from '../../homeserver/protocol/redaction.ts';
import { ROOM_VERSIONS } from '../../homeserver/protocol/room-versions.ts';

const V = (id: string) => ROOM_VERSIONS[id]!;

function ev(type: string, content: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event_id: '$e', type, room_id: '!r:x', sender: '@u:x', state_key: '', content,
    hashes: { sha256: 'h' }, signatures: { x: { 'ed25519:1': 's' } }, depth: 2, prev_events: ['$p'],
    auth_events: ['$a'], origin_server_ts: 1, origin: 'x', membership: 'join', prev_state: [],
    unsigned: { age: 1 }, junk: 'dropped', ...extra,
  };
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

test('top-level keys: unsigned and unknown keys stripped; origin/membership/prev_state kept until v11', () => {
  const e = ev('m.room.message', { body: 'x' });
  const common = {
    event_id: '$e', type: 'm.room.message', room_id: '!r:x', sender: '@u:x', state_key: '', content: {},
    hashes: { sha256: 'h' }, signatures: { x: { 'ed25519:1': 's' } }, depth: 2, prev_events: ['$p'],
    auth_events: ['$a'], origin_server_ts: 1,
  };
  assert.deepEqual(redactEvent(e, V('10')), { ...common, origin: 'x', membership: 'join', prev_state: [] });
  assert.deepEqual(redactEvent(e, V('11')), common);
});

test('redactEvent does not mutate its input', () => {
  const e = deepFreeze(ev('m.room.member', { membership: 'join', displayname: 'U' }));
  assert.doesNotThrow(() => redactEvent(e, V('11')));
  assert.equal((e.content as Record<string, unknown>).displayname, 'U');
});

test('content is {} for events without protected content, even if missing', () => {
  const e = ev('m.room.message', { body: 'x' });
  delete e.content;
  assert.deepEqual(redactEvent(e, V('10')).content, {});
});

// [type, content, version, expected redacted content]
const CONTENT_CASES: Array<[string, Record<string, unknown>, string, Record<string, unknown>]> = [
  ['m.room.member', { membership: 'join', displayname: 'U', join_authorised_via_users_server: '@a:x' }, '8', { membership: 'join' }],
  ['m.room.member', { membership: 'join', displayname: 'U', join_authorised_via_users_server: '@a:x' }, '9', { membership: 'join', join_authorised_via_users_server: '@a:x' }],
  ['m.room.member', { membership: 'invite', third_party_invite: { display_name: 'd', signed: { mxid: '@a:x', token: 't' } } }, '10', { membership: 'invite' }],
  ['m.room.member', { membership: 'invite', third_party_invite: { display_name: 'd', signed: { mxid: '@a:x', token: 't' } } }, '11', { membership: 'invite', third_party_invite: { signed: { mxid: '@a:x', token: 't' } } }],
  ['m.room.create', { creator: '@u:x', room_version: '10', 'm.federate': true }, '10', { creator: '@u:x' }],
  ['m.room.create', { creator: '@u:x', room_version: '11', 'm.federate': true, type: 'm.space' }, '11', { creator: '@u:x', room_version: '11', 'm.federate': true, type: 'm.space' }],
  ['m.room.join_rules', { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }], x: 1 }, '7', { join_rule: 'restricted' }],
  ['m.room.join_rules', { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }], x: 1 }, '8', { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }] }],
  [
    'm.room.power_levels',
    { ban: 1, events: { a: 2 }, events_default: 3, kick: 4, redact: 5, state_default: 6, users: { '@u:x': 7 }, users_default: 8, invite: 9, notifications: { room: 10 } },
    '10',
    { ban: 1, events: { a: 2 }, events_default: 3, kick: 4, redact: 5, state_default: 6, users: { '@u:x': 7 }, users_default: 8 },
  ],
  [
    'm.room.power_levels',
    { ban: 1, events: { a: 2 }, events_default: 3, kick: 4, redact: 5, state_default: 6, users: { '@u:x': 7 }, users_default: 8, invite: 9, notifications: { room: 10 } },
    '11',
    { ban: 1, events: { a: 2 }, events_default: 3, kick: 4, redact: 5, state_default: 6, users: { '@u:x': 7 }, users_default: 8, invite: 9 },
  ],
  ['m.room.aliases', { aliases: ['#a:x'] }, '5', { aliases: ['#a:x'] }],
  ['m.room.aliases', { aliases: ['#a:x'] }, '6', {}],
  ['m.room.history_visibility', { history_visibility: 'shared', x: 1 }, '1', { history_visibility: 'shared' }],
  ['m.room.history_visibility', { history_visibility: 'shared', x: 1 }, '11', { history_visibility: 'shared' }],
  ['m.room.redaction', { redacts: '$x', reason: 'spam' }, '10', {}],
  ['m.room.redaction', { redacts: '$x', reason: 'spam' }, '11', { redacts: '$x' }],
  ['m.room.topic', { topic: 't' }, '11', {}],
];

for (const [type, content, version, expected] of CONTENT_CASES) {
  test(`redaction of ${type} content in v${version}`, () => {
    assert.deepEqual(redactEvent(ev(type, content), V(version)).content, expected);
  });
}

test('v1 redaction strips top-level redacts (it is not a protected key)', () => {
  const r = redactEvent(ev('m.room.redaction', { reason: 'x' }, { redacts: '$target' }), V('1'));
  assert.equal(Object.hasOwn(r, 'redacts'), false);
});
