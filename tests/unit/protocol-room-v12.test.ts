// Room version 12 (rooms/v12.md) in the protocol layer: create-event-derived room IDs, creators'
// infinite power and additional_creators, the changed auth rules, redaction unchanged from v11;
// and the server-assigned event IDs of v1/v2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AuthError,
  authEventSelection,
  checkAuthEventList,
  checkEventAuth,
  createEventIdFromRoomId,
  roomIdFromCreateEventId,
  stateMapFromEvents,
  type PDU,
} from '../../homeserver/protocol/auth.ts';
import { computeEventId, computeRoomId, generateV1EventId } from '../../homeserver/protocol/hashes.ts';
import { isHashRoomId, isValidRoomId } from '../../homeserver/protocol/identifiers.ts';
import { CREATOR_POWER_LEVEL, defaultPowerLevels, roomCreators, userLevel } from '../../homeserver/protocol/power-levels.ts';
import { redactEvent } from '../../homeserver/protocol/redaction.ts';
import { ROOM_VERSIONS, ROOM_VERSION_12, getProtocolRoomVersion, getRoomVersion } from '../../homeserver/protocol/room-versions.ts';
import { finalizeEvent, generateSigningKey, verifyEventSignature } from '../../homeserver/protocol/signing.ts';
import { checkContentHash } from '../../homeserver/protocol/hashes.ts';

const V12 = ROOM_VERSION_12;
const ALICE = '@alice:a.test'; // create sender
const CAROL = '@carol:c.test'; // additional creator
const MOD = '@mod:a.test'; // power 100 in the power levels, not a creator
const BOB = '@bob:b.test'; // power 0

const CREATE_CONTENT = { room_version: '12', additional_creators: [CAROL] };
const createEvent = (content: Record<string, unknown> = CREATE_CONTENT): Record<string, unknown> => ({
  type: 'm.room.create', state_key: '', sender: ALICE, content, origin_server_ts: 1, depth: 1, prev_events: [], auth_events: [],
});
const CREATE_ID = computeEventId(createEvent(), V12);
const ROOM = roomIdFromCreateEventId(CREATE_ID);
const CREATE_PDU: PDU = { ...(createEvent() as unknown as PDU), event_id: CREATE_ID };

function pdu(sender: string, type: string, content: Record<string, unknown>, state_key?: string, extra: Partial<PDU> = {}): PDU {
  return { room_id: ROOM, sender, type, content, origin_server_ts: 2, prev_events: ['$prev'], ...(state_key !== undefined ? { state_key } : {}), ...extra };
}
const member = (sender: string, target: string, membership: string) => pdu(sender, 'm.room.member', { membership }, target);
const PL = { users: { [MOD]: 100 }, users_default: 0, state_default: 50, events: {}, ban: 50, kick: 50, invite: 0, redact: 50 };

function state(extra: PDU[] = [], pl: Record<string, unknown> | null = PL) {
  const events: PDU[] = [
    CREATE_PDU,
    { ...member(ALICE, ALICE, 'join'), event_id: '$ja' },
    { ...member(CAROL, CAROL, 'join'), event_id: '$jc' },
    { ...member(MOD, MOD, 'join'), event_id: '$jm' },
    { ...member(BOB, BOB, 'join'), event_id: '$jb' },
    pdu(ALICE, 'm.room.join_rules', { join_rule: 'public' }, ''),
  ];
  if (pl) events.push({ ...pdu(ALICE, 'm.room.power_levels', pl, ''), event_id: '$pl' });
  return stateMapFromEvents([...events, ...extra]);
}
const allowed = (ev: PDU, s = state()) => assert.doesNotThrow(() => checkEventAuth(ev, s, V12));
const denied = (ev: PDU, re: RegExp, s = state()) => assert.throws(() => checkEventAuth(ev, s, V12), (e: unknown) => e instanceof AuthError && re.test(e.message));

test('v12 is a known room version, the only one with hashed room IDs and creator power', () => {
  assert.equal(getRoomVersion('12'), V12);
  assert.equal(getProtocolRoomVersion('12'), V12);
  assert.equal(getProtocolRoomVersion('10'), ROOM_VERSIONS['10']);
  assert.equal(getProtocolRoomVersion('constructor'), undefined);
  assert.equal(V12.stateResolution, 'v2.1');
  assert.ok(V12.roomIdIsCreateEventHash && V12.creatorsHaveInfinitePower && V12.implicitRoomCreator && V12.updatedRedactionRules);
  assert.equal(V12.eventIdFormat, 'v4');
  assert.ok(Object.values(ROOM_VERSIONS).filter((v) => v.id !== '12').every((v) => !v.roomIdIsCreateEventHash && !v.creatorsHaveInfinitePower && v.stateResolution !== 'v2.1'));
});

test('the room ID is the create event\'s ID with the ! sigil, and is a valid room ID', () => {
  assert.equal(computeRoomId(createEvent(), V12), `!${CREATE_ID.slice(1)}`);
  assert.equal(ROOM, `!${CREATE_ID.slice(1)}`);
  assert.equal(createEventIdFromRoomId(ROOM), CREATE_ID);
  assert.ok(isHashRoomId(ROOM) && isValidRoomId(ROOM));
  // The example of the spec's v12 PDU schema (room_id_v12.yaml).
  assert.ok(isValidRoomId('!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ'));
  assert.equal(isValidRoomId('!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpY'), false); // 42 characters
  assert.equal(isValidRoomId('!Nhcu5BS+UMnFX7hBVfVSoXiD7OgH6iRT/xyIuqDnpYQ'), false); // not URL-safe
  assert.equal(isHashRoomId('!abc'), false);
  assert.equal(isHashRoomId('!room:a.test'), false);
  // A different create event makes a different room.
  assert.notEqual(computeRoomId(createEvent({ room_version: '12' }), V12), ROOM);
  assert.throws(() => computeRoomId({ ...createEvent(), room_id: ROOM }, V12), /no room_id/);
  assert.throws(() => computeRoomId(createEvent(), ROOM_VERSIONS['11']!), /does not derive/);
  assert.throws(() => computeRoomId({ ...createEvent(), type: 'm.room.topic' }, V12), /m\.room\.create/);
});

test('a signed v12 create event: hash, signature and the room ID it gives', () => {
  const key = generateSigningKey('v12');
  const { event, eventId } = finalizeEvent(createEvent(), 'a.test', key, V12);
  assert.ok(checkContentHash(event));
  assert.ok(verifyEventSignature(event, 'a.test', key.keyId, key.publicKey, V12));
  assert.equal(roomIdFromCreateEventId(eventId), computeRoomId(event, V12));
});

test('rule 1: create events - no room_id, known room_version, additional_creators are user IDs', () => {
  allowed(CREATE_PDU, new Map());
  // A stored copy annotated with its own derived room ID is still the same event.
  allowed({ ...CREATE_PDU, room_id: ROOM }, new Map());
  denied({ ...CREATE_PDU, room_id: '!other:a.test' }, /must not have a room_id/, new Map());
  denied({ ...CREATE_PDU, prev_events: ['$x'] }, /prev_events/, new Map());
  denied({ ...CREATE_PDU, content: { room_version: '13' } }, /unknown room version/, new Map());
  allowed({ ...CREATE_PDU, content: { room_version: '12' } }, new Map());
  for (const bad of ['@carol:c.test', [42], ['not-a-user'], [CAROL, '@:'], { 0: CAROL }]) {
    denied({ ...CREATE_PDU, content: { room_version: '12', additional_creators: bad } }, /additional_creators/, new Map());
  }
  allowed({ ...CREATE_PDU, content: { room_version: '12', additional_creators: [] } }, new Map());
  // The create sender need not share a server with the room ID any more.
  allowed({ ...CREATE_PDU, sender: '@x:elsewhere.test' }, new Map());
});

test('rule 2: the room ID must be derived from the create event in the auth state', () => {
  allowed(pdu(BOB, 'm.room.message', { body: 'hi' }));
  denied({ ...pdu(BOB, 'm.room.message', { body: 'hi' }), room_id: '!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, /not derived from the create event/);
  const otherCreate = { ...CREATE_PDU, event_id: '$somethingelse' };
  denied(pdu(BOB, 'm.room.message', { body: 'hi' }), /not derived/, state([otherCreate]));
  denied(pdu(BOB, 'm.room.message', { body: 'hi' }), /no m\.room\.create/, new Map([...state()].filter(([k]) => !k.startsWith('m.room.create'))));
});

test('rule 3: the create event is never selected for auth_events', () => {
  assert.deepEqual(authEventSelection(pdu(BOB, 'm.room.message', {}), V12), [['m.room.power_levels', ''], ['m.room.member', BOB]]);
  assert.deepEqual(authEventSelection(member(BOB, BOB, 'join'), V12), [['m.room.power_levels', ''], ['m.room.member', BOB], ['m.room.join_rules', '']]);
  assert.deepEqual(authEventSelection(pdu(BOB, 'm.room.message', {}), ROOM_VERSIONS['11']!)[0], ['m.room.create', '']);
  const plEvent = { ...pdu(ALICE, 'm.room.power_levels', PL, ''), event_id: '$pl' };
  const bobJoin = { ...member(BOB, BOB, 'join'), event_id: '$jb' };
  assert.doesNotThrow(() => checkAuthEventList(pdu(BOB, 'm.room.message', {}), [plEvent, bobJoin], V12));
  assert.throws(() => checkAuthEventList(pdu(BOB, 'm.room.message', {}), [CREATE_PDU, plEvent, bobJoin], V12), /selection algorithm/);
});

test('creators: the create sender and additional_creators have infinite power; nobody else does', () => {
  const create = CREATE_PDU as { sender: string; content: Record<string, unknown> };
  assert.deepEqual(roomCreators(create, V12), [ALICE, CAROL]);
  assert.deepEqual(roomCreators(create, ROOM_VERSIONS['11']!), [ALICE]);
  assert.equal(userLevel(PL, ALICE, create, V12), CREATOR_POWER_LEVEL);
  assert.equal(userLevel(PL, CAROL, create, V12), Number.POSITIVE_INFINITY);
  assert.equal(userLevel(undefined, CAROL, create, V12), Number.POSITIVE_INFINITY);
  assert.equal(userLevel(PL, MOD, create, V12), 100);
  assert.equal(userLevel(PL, BOB, create, V12), 0);
  // v11: additional_creators means nothing, and the power levels decide even for the creator.
  assert.equal(userLevel(PL, ALICE, create, ROOM_VERSIONS['11']!), 0);
  assert.equal(userLevel(PL, CAROL, create, ROOM_VERSIONS['11']!), 0);
  assert.deepEqual(defaultPowerLevels(ALICE, V12).users, {});
  assert.deepEqual(defaultPowerLevels(ALICE, ROOM_VERSIONS['11']!).users, { [ALICE]: 100 });
});

test('rule 10.4: power levels may not list a creator; creators may set any level', () => {
  const plEv = (sender: string, users: Record<string, number>) => pdu(sender, 'm.room.power_levels', { ...PL, users }, '');
  denied(plEv(ALICE, { [MOD]: 100, [ALICE]: 100 }), /room creator .*alice/);
  denied(plEv(ALICE, { [MOD]: 100, [CAROL]: 1 }), /room creator .*carol/);
  // The first power levels event is checked too.
  denied(plEv(ALICE, { [ALICE]: 100 }), /room creator/, state([], null));
  allowed(plEv(ALICE, { [MOD]: 100, [BOB]: 1000000 }));
  allowed(plEv(CAROL, {}));
  // A non-creator at 100 may not raise anyone above 100 nor touch another 100.
  denied(plEv(MOD, { [MOD]: 100, [BOB]: 101 }), /cannot raise/);
});

test('kicks and bans: nobody outranks a creator; creators outrank everyone else, not each other', () => {
  denied(member(MOD, ALICE, 'ban'), /may not ban/);
  denied(member(MOD, CAROL, 'leave'), /may not kick/);
  allowed(member(ALICE, MOD, 'ban'));
  allowed(member(CAROL, MOD, 'leave'));
  denied(member(ALICE, CAROL, 'ban'), /may not ban/);
  denied(member(CAROL, ALICE, 'leave'), /may not kick/);
  // Events needing more than any integer level are still open to creators.
  const highPl = { ...PL, events: { 'm.room.topic': 1000000 } };
  allowed(pdu(CAROL, 'm.room.topic', { topic: 'x' }, ''), state([], highPl));
  denied(pdu(MOD, 'm.room.topic', { topic: 'x' }, ''), /may not send m\.room\.topic/, state([], highPl));
});

test('rule 5.3.1: the create sender\'s first join straight after the create event', () => {
  const onlyCreate = stateMapFromEvents([CREATE_PDU]);
  allowed({ ...member(ALICE, ALICE, 'join'), prev_events: [CREATE_ID] }, onlyCreate);
  // An additional creator is not "the sender of the m.room.create": no join rules, so invite-only.
  denied({ ...member(CAROL, CAROL, 'join'), prev_events: [CREATE_ID] }, /needs an invite/, onlyCreate);
});

test('redaction in v12 is v11\'s: the create event keeps all content, power levels keep invite', () => {
  const redacted = redactEvent({ ...createEvent(), content: { ...CREATE_CONTENT, extra: 1 } }, V12);
  assert.deepEqual(redacted.content, { ...CREATE_CONTENT, extra: 1 });
  const pl = redactEvent({ type: 'm.room.power_levels', state_key: '', content: { ...PL, notifications: { room: 1 } } }, V12);
  assert.deepEqual(Object.keys(pl.content as object).sort(), ['ban', 'events', 'invite', 'kick', 'redact', 'state_default', 'users', 'users_default']);
  assert.deepEqual(redactEvent({ type: 'm.room.redaction', content: { redacts: '$x', reason: 'r' } }, V12).content, { redacts: '$x' });
});

test('v1/v2: the server assigns event IDs; finalizeEvent signs the event with its ID', () => {
  const v2 = ROOM_VERSIONS['2']!;
  const id = generateV1EventId('a.test');
  assert.match(id, /^\$[A-Za-z0-9]{18}:a\.test$/);
  assert.notEqual(generateV1EventId('a.test'), id);
  const key = generateSigningKey('v1');
  const draft = { event_id: id, room_id: '!r:a.test', type: 'm.room.message', sender: ALICE, content: { body: 'hi' }, origin_server_ts: 1, depth: 2, prev_events: [], auth_events: [] };
  const { event, eventId } = finalizeEvent(draft, 'a.test', key, v2);
  assert.equal(eventId, id);
  assert.equal(event.event_id, id);
  assert.ok(checkContentHash(event));
  assert.ok(verifyEventSignature(event, 'a.test', key.keyId, key.publicKey, v2));
  // The ID is signed: another ID breaks the signature.
  assert.equal(verifyEventSignature({ ...event, event_id: generateV1EventId('a.test') }, 'a.test', key.keyId, key.publicKey, v2), false);
  const { event_id: _drop, ...unnamed } = draft;
  assert.throws(() => finalizeEvent(unnamed, 'a.test', key, v2), /server-assigned event_id/);
  assert.throws(() => computeEventId(draft, v2), /server-assigned/);
});
