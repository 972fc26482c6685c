import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AuthError,
  authEventSelection,
  checkAuthEventList,
  checkEventAuth,
  stateKey,
  stateMapFromEvents,
  type PDU,
  type StateMap,
} from '../../homeserver/protocol/auth.ts';
import { ROOM_VERSIONS } from '../../homeserver/protocol/room-versions.ts';
import { generateSigningKey, signJson } from '../../homeserver/protocol/signing.ts';

const V = (id: string) => ROOM_VERSIONS[id]!;

const ROOM = '!room:a.test';
const ALICE = '@alice:a.test'; // room creator, power 100
const MOD = '@mod:a.test'; // power 50
const MOD2 = '@mod2:b.test'; // power 50
const BOB = '@bob:b.test'; // power 0, joined
const CAROL = '@carol:c.test'; // not in the room unless a fixture says so
const DAVE = '@dave:a.test'; // not in the room
const CREATE_ID = '$create';

const DEFAULT_PL = {
  users: { [ALICE]: 100, [MOD]: 50, [MOD2]: 50 },
  users_default: 0,
  events_default: 0,
  state_default: 50,
  ban: 50,
  kick: 50,
  redact: 50,
  invite: 0,
  events: { 'm.room.power_levels': 100 },
};
// Moderators may edit power levels, so rule 9's finer checks are what decide.
const PL_MOD_EDITS = { ...DEFAULT_PL, events: { 'm.room.power_levels': 50 } };

interface Fixture {
  joinRule?: string | null; // null: no m.room.join_rules event; default 'public'
  members?: Record<string, string>; // merged over the default members; value '' removes
  pl?: Record<string, any> | null; // null: no m.room.power_levels event
  create?: Record<string, any>; // create content; default { creator: ALICE, room_version }
  onlyCreate?: boolean; // state holds nothing but the create event
  extra?: PDU[];
}

function pdu(sender: string, type: string, content: Record<string, any>, state_key?: string, extra: Partial<PDU> = {}): PDU {
  return { room_id: ROOM, sender, type, content, origin_server_ts: 1, prev_events: ['$prev'], ...(state_key !== undefined ? { state_key } : {}), ...extra };
}
const member = (sender: string, target: string, membership: string, more: Record<string, any> = {}, extra: Partial<PDU> = {}) =>
  pdu(sender, 'm.room.member', { membership, ...more }, target, extra);
const pl = (sender: string, content: Record<string, any>) => pdu(sender, 'm.room.power_levels', content, '');
const msg = (sender: string) => pdu(sender, 'm.room.message', { msgtype: 'm.text', body: 'hi' });

function buildState(version: string, f: Fixture): StateMap {
  const events: PDU[] = [{ ...pdu(ALICE, 'm.room.create', f.create ?? { creator: ALICE, room_version: version }, ''), event_id: CREATE_ID, prev_events: [] }];
  if (!f.onlyCreate) {
    const members: Record<string, string> = { [ALICE]: 'join', [MOD]: 'join', [MOD2]: 'join', [BOB]: 'join', ...f.members };
    for (const [user, m] of Object.entries(members)) if (m) events.push(member(user, user, m));
    if (f.pl !== null) events.push(pl(ALICE, f.pl ?? DEFAULT_PL));
    if (f.joinRule !== null) events.push(pdu(ALICE, 'm.room.join_rules', { join_rule: f.joinRule ?? 'public' }, ''));
  }
  return stateMapFromEvents([...events, ...(f.extra ?? [])]);
}

interface Row {
  name: string;
  v?: string; // room version, default '10'
  f?: Fixture;
  e: PDU;
  deny?: RegExp; // expected AuthError message; absent means allowed
}

const FIRST_JOIN = { prev_events: [CREATE_ID] };
const CREATE_ONLY: Fixture = { onlyCreate: true };

const ROWS: Row[] = [
  // --- rule 1: m.room.create
  { name: 'create: valid', e: { ...pdu(ALICE, 'm.room.create', { creator: ALICE, room_version: '10' }, ''), prev_events: [] } },
  { name: 'create: has prev_events', e: pdu(ALICE, 'm.room.create', { creator: ALICE }, ''), deny: /prev_events/ },
  { name: 'create: sender on another server than the room ID', e: { ...pdu(BOB, 'm.room.create', { creator: BOB }, ''), prev_events: [] }, deny: /room ID's server/ },
  { name: 'create: unknown room_version', e: { ...pdu(ALICE, 'm.room.create', { creator: ALICE, room_version: '99' }, ''), prev_events: [] }, deny: /unknown room version/ },
  { name: 'create: v10 requires content.creator', e: { ...pdu(ALICE, 'm.room.create', { room_version: '10' }, ''), prev_events: [] }, deny: /no creator/ },
  { name: 'create: v11 does not require content.creator', v: '11', e: { ...pdu(ALICE, 'm.room.create', { room_version: '11' }, ''), prev_events: [] } },

  // --- first join by the creator
  { name: 'first join by creator right after create', f: CREATE_ONLY, e: member(ALICE, ALICE, 'join', {}, FIRST_JOIN) },
  { name: 'first join by non-creator right after create', f: CREATE_ONLY, e: member(BOB, BOB, 'join', {}, FIRST_JOIN), deny: /needs an invite/ },
  { name: 'creator join whose prev event is not the create event', f: CREATE_ONLY, e: member(ALICE, ALICE, 'join', {}, { prev_events: ['$other'] }), deny: /needs an invite/ },
  { name: 'v10: content.creator names the creator', f: { onlyCreate: true, create: { creator: BOB } }, e: member(BOB, BOB, 'join', {}, FIRST_JOIN) },
  { name: 'v11: the create sender is the creator', v: '11', f: { onlyCreate: true, create: { creator: BOB } }, e: member(ALICE, ALICE, 'join', {}, FIRST_JOIN) },
  { name: 'v11: content.creator is ignored', v: '11', f: { onlyCreate: true, create: { creator: BOB } }, e: member(BOB, BOB, 'join', {}, FIRST_JOIN), deny: /needs an invite/ },

  // --- joins
  { name: 'join a public room', e: member(CAROL, CAROL, 'join') },
  { name: 'join an invite-only room without an invite', f: { joinRule: 'invite' }, e: member(CAROL, CAROL, 'join'), deny: /needs an invite/ },
  { name: 'join an invite-only room with an invite', f: { joinRule: 'invite', members: { [CAROL]: 'invite' } }, e: member(CAROL, CAROL, 'join') },
  { name: 'join on behalf of another user', e: member(BOB, CAROL, 'join'), deny: /on behalf of/ },
  { name: 'banned user joins a public room', f: { members: { [CAROL]: 'ban' } }, e: member(CAROL, CAROL, 'join'), deny: /banned/ },
  { name: 'v7: invited user joins a knock room', v: '7', f: { joinRule: 'knock', members: { [CAROL]: 'invite' } }, e: member(CAROL, CAROL, 'join') },
  { name: 'v6: knock join rule is unknown, even with an invite', v: '6', f: { joinRule: 'knock', members: { [CAROL]: 'invite' } }, e: member(CAROL, CAROL, 'join'), deny: /join rule is "knock"/ },
  { name: 'v9: restricted join authorised by a joined admin', v: '9', f: { joinRule: 'restricted' }, e: member(CAROL, CAROL, 'join', { join_authorised_via_users_server: ALICE }) },
  { name: 'v9: restricted join, authoriser not joined', v: '9', f: { joinRule: 'restricted' }, e: member(CAROL, CAROL, 'join', { join_authorised_via_users_server: DAVE }), deny: /not joined/ },
  { name: 'v9: restricted join, authoriser cannot invite', v: '9', f: { joinRule: 'restricted', pl: { ...DEFAULT_PL, invite: 50 } }, e: member(CAROL, CAROL, 'join', { join_authorised_via_users_server: BOB }), deny: /may not invite/ },
  { name: 'v9: restricted join without an authoriser', v: '9', f: { joinRule: 'restricted' }, e: member(CAROL, CAROL, 'join'), deny: /lacks join_authorised_via_users_server/ },
  { name: 'v9: restricted room, invited user needs no authoriser', v: '9', f: { joinRule: 'restricted', members: { [CAROL]: 'invite' } }, e: member(CAROL, CAROL, 'join') },
  { name: 'v7: restricted join rule is unknown', v: '7', f: { joinRule: 'restricted' }, e: member(CAROL, CAROL, 'join', { join_authorised_via_users_server: ALICE }), deny: /join rule is "restricted"/ },
  { name: 'v10: knock_restricted join with an authoriser', f: { joinRule: 'knock_restricted' }, e: member(CAROL, CAROL, 'join', { join_authorised_via_users_server: ALICE }) },
  { name: 'v9: knock_restricted join rule is unknown', v: '9', f: { joinRule: 'knock_restricted' }, e: member(CAROL, CAROL, 'join', { join_authorised_via_users_server: ALICE }), deny: /join rule is "knock_restricted"/ },
  { name: 'join with no join_rules event counts as invite-only', f: { joinRule: null }, e: member(CAROL, CAROL, 'join'), deny: /needs an invite/ },

  // --- invites
  { name: 'invite by a joined member with enough power', e: member(BOB, CAROL, 'invite') },
  { name: 'invite by a non-member', e: member(CAROL, DAVE, 'invite'), deny: /not joined and so may not invite/ },
  { name: 'invite below the invite level', f: { pl: { ...DEFAULT_PL, invite: 50 } }, e: member(BOB, CAROL, 'invite'), deny: /may not invite/ },
  { name: 'invite of a joined user', e: member(ALICE, BOB, 'invite'), deny: /cannot be invited/ },
  { name: 'invite of a banned user', f: { members: { [CAROL]: 'ban' } }, e: member(ALICE, CAROL, 'invite'), deny: /cannot be invited/ },

  // --- leaving, kicking
  { name: 'leave while joined', e: member(BOB, BOB, 'leave') },
  { name: 'leave without being in the room', e: member(CAROL, CAROL, 'leave'), deny: /cannot leave/ },
  { name: 'reject an invite', f: { members: { [CAROL]: 'invite' } }, e: member(CAROL, CAROL, 'leave') },
  { name: 'v7: rescind a knock', v: '7', f: { joinRule: 'knock', members: { [CAROL]: 'knock' } }, e: member(CAROL, CAROL, 'leave') },
  { name: 'v6: leave from knock membership', v: '6', f: { members: { [CAROL]: 'knock' } }, e: member(CAROL, CAROL, 'leave'), deny: /cannot leave/ },
  { name: 'kick by moderator', e: member(MOD, BOB, 'leave') },
  { name: 'kick by ordinary user', e: member(BOB, MOD, 'leave'), deny: /may not kick/ },
  { name: 'kick of a higher user', e: member(MOD, ALICE, 'leave'), deny: /may not kick/ },
  { name: 'kick of an equal user', e: member(MOD, MOD2, 'leave'), deny: /may not kick/ },
  { name: 'kick by a non-member', e: member(CAROL, BOB, 'leave'), deny: /not joined and so may not kick/ },

  // --- bans
  { name: 'ban by moderator', e: member(MOD, BOB, 'ban') },
  { name: 'ban by ordinary user', e: member(BOB, CAROL, 'ban'), deny: /may not ban/ },
  { name: 'ban of a higher user', e: member(MOD, ALICE, 'ban'), deny: /may not ban/ },
  { name: 'ban of an outsider', e: member(ALICE, CAROL, 'ban') },
  { name: 'ban by a non-member', f: { members: { [MOD]: 'leave' } }, e: member(MOD, BOB, 'ban'), deny: /not joined and so may not ban/ },
  { name: 'unban by moderator', f: { members: { [CAROL]: 'ban' } }, e: member(MOD, CAROL, 'leave') },
  { name: 'unban needs the ban level, not just kick', f: { members: { [CAROL]: 'ban' }, pl: { ...DEFAULT_PL, kick: 0, ban: 100 } }, e: member(MOD, CAROL, 'leave'), deny: /may not unban/ },

  // --- knocking
  { name: 'v7: knock on a knock room', v: '7', f: { joinRule: 'knock' }, e: member(CAROL, CAROL, 'knock') },
  { name: 'v6: knocking unsupported', v: '6', f: { joinRule: 'knock' }, e: member(CAROL, CAROL, 'knock'), deny: /not supported in room version 6/ },
  { name: 'v7: knock on a public room', v: '7', e: member(CAROL, CAROL, 'knock'), deny: /does not allow knocking/ },
  { name: 'v7: knock while banned', v: '7', f: { joinRule: 'knock', members: { [CAROL]: 'ban' } }, e: member(CAROL, CAROL, 'knock'), deny: /cannot knock/ },
  { name: 'v7: knock on behalf of another user', v: '7', f: { joinRule: 'knock' }, e: member(BOB, CAROL, 'knock'), deny: /on behalf of/ },
  { name: 'v10: knock on a knock_restricted room', f: { joinRule: 'knock_restricted' }, e: member(CAROL, CAROL, 'knock') },
  { name: 'v9: knock on a knock_restricted room', v: '9', f: { joinRule: 'knock_restricted' }, e: member(CAROL, CAROL, 'knock'), deny: /does not allow knocking/ },

  // --- malformed membership
  { name: 'unknown membership', e: member(BOB, BOB, 'dance'), deny: /unknown membership/ },
  { name: 'member event without membership', e: pdu(BOB, 'm.room.member', {}, BOB), deny: /content.membership/ },
  { name: 'member event without state_key', e: pdu(BOB, 'm.room.member', { membership: 'join' }), deny: /state_key/ },

  // --- ordinary events
  { name: 'message from a joined member', e: msg(BOB) },
  { name: 'message from a non-member', e: msg(CAROL), deny: /not joined/ },
  { name: 'message from a banned user', f: { members: { [CAROL]: 'ban' } }, e: msg(CAROL), deny: /not joined/ },
  { name: 'message from a user who left', f: { members: { [BOB]: 'leave' } }, e: msg(BOB), deny: /not joined/ },
  { name: 'message below events_default', f: { pl: { ...DEFAULT_PL, events_default: 10 } }, e: msg(BOB), deny: /may not send m.room.message \(needs 10\)/ },
  { name: 'events entry overrides events_default', f: { pl: { ...DEFAULT_PL, events_default: 10, events: { 'm.room.message': 0 } } }, e: msg(BOB) },
  { name: 'state event below state_default', e: pdu(BOB, 'm.room.topic', { topic: 't' }, ''), deny: /may not send m.room.topic \(needs 50\)/ },
  { name: 'state event at state_default', e: pdu(MOD, 'm.room.topic', { topic: 't' }, '') },
  { name: 'no power levels event: state_default is 50 for others', f: { pl: null }, e: pdu(BOB, 'm.room.topic', { topic: 't' }, ''), deny: /needs 50/ },
  { name: 'no power levels event: creator has 100', f: { pl: null }, e: pdu(ALICE, 'm.room.topic', { topic: 't' }, '') },
  { name: 'no power levels event: messages need 0', f: { pl: null }, e: msg(BOB) },
  { name: 'v10 without power levels: content.creator has 100', f: { pl: null, create: { creator: BOB } }, e: pdu(BOB, 'm.room.topic', { topic: 't' }, '') },
  { name: 'v11 without power levels: the create sender has 100', v: '11', f: { pl: null, create: { creator: BOB } }, e: pdu(ALICE, 'm.room.topic', { topic: 't' }, '') },
  { name: 'v11 without power levels: content.creator has no power', v: '11', f: { pl: null, create: { creator: BOB } }, e: pdu(BOB, 'm.room.topic', { topic: 't' }, ''), deny: /needs 50/ },
  { name: 'state_key of another user', f: { pl: { ...DEFAULT_PL, events: { 'm.custom': 0 } } }, e: pdu(ALICE, 'm.custom', {}, BOB), deny: /keyed by another user/ },
  { name: 'state_key of the sender', f: { pl: { ...DEFAULT_PL, events: { 'm.custom': 0 } } }, e: pdu(BOB, 'm.custom', {}, BOB) },
  { name: 'third party invite event at invite level', e: pdu(BOB, 'm.room.third_party_invite', { display_name: 'x' }, 'tok') },
  { name: 'third party invite event below invite level', f: { pl: { ...DEFAULT_PL, invite: 50 } }, e: pdu(BOB, 'm.room.third_party_invite', { display_name: 'x' }, 'tok'), deny: /may not invite/ },

  // --- power levels
  { name: 'first power levels event by the creator', f: { pl: null }, e: pl(ALICE, { users: { [ALICE]: 100 } }) },
  { name: 'power levels: raise own level above own', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, users: { ...PL_MOD_EDITS.users, [MOD]: 60 } }), deny: /raise @mod:a.test to 60/ },
  { name: 'power levels: change a user at the same level', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, users: { ...PL_MOD_EDITS.users, [MOD2]: 0 } }), deny: /not below own level/ },
  { name: 'power levels: remove a user at the same level', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, users: { [ALICE]: 100, [MOD]: 50 } }), deny: /not below own level/ },
  { name: 'power levels: promote a lower user up to own level', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, users: { ...PL_MOD_EDITS.users, [BOB]: 50 } }) },
  { name: 'power levels: promote a lower user above own level', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, users: { ...PL_MOD_EDITS.users, [BOB]: 51 } }), deny: /above own level/ },
  { name: 'power levels: lower the ban level', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, ban: 40 }) },
  { name: 'power levels: change a level currently above own', f: { pl: { ...PL_MOD_EDITS, ban: 100 } }, e: pl(MOD, { ...PL_MOD_EDITS, ban: 50 }), deny: /change ban from 100/ },
  { name: 'power levels: set an events entry above own', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, events: { ...PL_MOD_EDITS.events, 'm.room.name': 75 } }), deny: /events.m.room.name to 75/ },
  { name: 'power levels: admin demotes self', e: pl(ALICE, { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, [ALICE]: 0 } }) },
  { name: 'power levels: needs the m.room.power_levels event level', f: { pl: DEFAULT_PL }, e: pl(MOD, { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, [BOB]: 10 } }), deny: /may not send m.room.power_levels \(needs 100\)/ },
  { name: 'power levels: v10 rejects a stringy level', e: pl(ALICE, { ...DEFAULT_PL, ban: '50' }), deny: /ban is not a valid power level/ },
  { name: 'power levels: v9 accepts a stringy level', v: '9', e: pl(ALICE, { ...DEFAULT_PL, ban: ' +50 ', users: { ...DEFAULT_PL.users, [BOB]: '10' } }) },
  { name: 'power levels: v9 rejects a non-numeric string', v: '9', e: pl(ALICE, { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, [BOB]: 'ten' } }), deny: /level for @bob:b.test/ },
  { name: 'power levels: v10 rejects a non-integer user level', e: pl(ALICE, { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, [BOB]: 10.5 } }), deny: /level for @bob:b.test/ },
  { name: 'power levels: v5 accepts (truncates) a float level', v: '5', e: pl(ALICE, { ...DEFAULT_PL, users: { ...DEFAULT_PL.users, [BOB]: 10.5 } }) },
  { name: 'power levels: v10 rejects non-integer events values', e: pl(ALICE, { ...DEFAULT_PL, events: { 'm.room.name': '50' } }), deny: /events must be an object/ },
  { name: 'power levels: users key that is not a user ID', e: pl(ALICE, { ...DEFAULT_PL, users: { notauser: 10 } }), deny: /not a valid user ID/ },
  { name: 'power levels: users that is not an object', e: pl(ALICE, { ...DEFAULT_PL, users: [ALICE] }), deny: /users must be an object/ },
  { name: 'power levels: v10 notifications change above own level', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, notifications: { room: 75 } }), deny: /notifications.room to 75/ },
  { name: 'power levels: v5 does not check notifications', v: '5', f: { pl: PL_MOD_EDITS }, e: pl(MOD, { ...PL_MOD_EDITS, notifications: { room: 75 } }) },

  // --- redactions
  { name: 'v1 redaction of an event from the same server', v: '1', e: pdu(BOB, 'm.room.redaction', {}, undefined, { event_id: '$r:b.test', redacts: '$x:b.test' }) },
  { name: 'v1 redaction of another server\'s event without power', v: '1', e: pdu(BOB, 'm.room.redaction', {}, undefined, { event_id: '$r:b.test', redacts: '$x:a.test' }), deny: /may not redact/ },
  { name: 'v1 redaction by a moderator', v: '1', e: pdu(MOD, 'm.room.redaction', {}, undefined, { event_id: '$r:a.test', redacts: '$x:b.test' }) },
  { name: 'v3 redaction: the redact level is not an auth rule', v: '3', e: pdu(BOB, 'm.room.redaction', {}, undefined, { redacts: '$x' }) },
  { name: 'v3 redaction below the m.room.redaction event level', v: '3', f: { pl: { ...DEFAULT_PL, events: { 'm.room.redaction': 10 } } }, e: pdu(BOB, 'm.room.redaction', {}, undefined, { redacts: '$x' }), deny: /needs 10/ },

  // --- m.room.aliases (special in v1-v5)
  { name: 'v5 aliases from a non-member on the matching server', v: '5', e: pdu(CAROL, 'm.room.aliases', { aliases: ['#x:c.test'] }, 'c.test') },
  { name: 'v5 aliases for another server', v: '5', e: pdu(CAROL, 'm.room.aliases', { aliases: ['#x:a.test'] }, 'a.test'), deny: /sender's server/ },
  { name: 'v6 aliases from a non-member', v: '6', e: pdu(CAROL, 'm.room.aliases', { aliases: ['#x:c.test'] }, 'c.test'), deny: /not joined/ },

  // --- m.federate
  { name: 'm.federate false: remote user cannot join', f: { create: { creator: ALICE, 'm.federate': false } }, e: member(CAROL, CAROL, 'join'), deny: /not federated/ },
  { name: 'm.federate false: local user can join', f: { create: { creator: ALICE, 'm.federate': false } }, e: member(DAVE, DAVE, 'join') },
];

test('the auth table has enough rows', () => {
  assert.ok(ROWS.length >= 40);
  assert.equal(new Set(ROWS.map((r) => r.name)).size, ROWS.length, 'row names are unique');
});

for (const row of ROWS) {
  const version = row.v ?? '10';
  test(`auth v${version}: ${row.name} -> ${row.deny ? 'denied' : 'allowed'}`, () => {
    const state = buildState(version, row.f ?? {});
    if (row.deny) {
      assert.throws(
        () => checkEventAuth(row.e, state, V(version)),
        (err: unknown) => err instanceof AuthError && row.deny!.test(err.message),
      );
    } else {
      assert.doesNotThrow(() => checkEventAuth(row.e, state, V(version)));
    }
  });
}

test('no m.room.create in the auth state is denied', () => {
  assert.throws(() => checkEventAuth(msg(BOB), new Map(), V('10')), (e: unknown) => e instanceof AuthError && /m.room.create/.test(e.message));
});

test('auth state events from another room are denied', () => {
  const state = buildState('10', {});
  const create = state.get(stateKey('m.room.create', ''))!;
  state.set(stateKey('m.room.create', ''), { ...create, room_id: '!other:a.test' });
  assert.throws(() => checkEventAuth(msg(BOB), state, V('10')), /another room/);
});

test('v1 prev_events given as [id, hashes] pairs still recognise the creator join', () => {
  const e = member(ALICE, ALICE, 'join', {}, { prev_events: [[CREATE_ID, { sha256: 'x' }]] as unknown as string[] });
  assert.doesNotThrow(() => checkEventAuth(e, buildState('1', CREATE_ONLY), V('1')));
});

test('AuthError is an Error with its own name', () => {
  const err = new AuthError('nope');
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'AuthError');
});

// --- third-party invites (rule 4.4.1)
test('third party invite: signed by a key from the m.room.third_party_invite event', () => {
  const idKey = generateSigningKey('0');
  const otherKey = generateSigningKey('0');
  const tpiEvent = pdu(BOB, 'm.room.third_party_invite', { display_name: 'c...', public_key: otherKey.publicKey, public_keys: [{ public_key: idKey.publicKey }] }, 'tok');
  const state = buildState('10', { extra: [tpiEvent] });
  const invite = (signed: Record<string, unknown>, sender = BOB, target = CAROL) =>
    member(sender, target, 'invite', { third_party_invite: { display_name: 'c...', signed } });
  const good = signJson({ mxid: CAROL, token: 'tok', sender: BOB }, 'id.test', idKey);
  const v = V('10');

  assert.doesNotThrow(() => checkEventAuth(invite(good), state, v));
  const forged = signJson({ mxid: CAROL, token: 'tok', sender: BOB }, 'id.test', generateSigningKey('0'));
  assert.throws(() => checkEventAuth(invite(forged), state, v), /no signature/);
  assert.throws(() => checkEventAuth(invite({ ...good, mxid: DAVE }), state, v), /does not match the state_key/);
  assert.throws(() => checkEventAuth(invite(good, MOD), state, v), /did not send/);
  const otherToken = signJson({ mxid: CAROL, token: 'nope', sender: BOB }, 'id.test', idKey);
  assert.throws(() => checkEventAuth(invite(otherToken), state, v), /no m.room.third_party_invite/);
  assert.throws(() => checkEventAuth(invite({ mxid: CAROL }), state, v), /needs mxid and token/);
  assert.throws(() => checkEventAuth(member(BOB, CAROL, 'invite', { third_party_invite: {} }), state, v), /no signed/);
  const bannedState = buildState('10', { extra: [tpiEvent], members: { [CAROL]: 'ban' } });
  assert.throws(() => checkEventAuth(invite(good), bannedState, v), /banned/);
});

// --- auth events selection
test('authEventSelection: create event selects nothing', () => {
  assert.deepEqual(authEventSelection({ type: 'm.room.create', sender: ALICE, state_key: '', content: {} }, V('10')), []);
});

test('authEventSelection: message', () => {
  assert.deepEqual(authEventSelection({ type: 'm.room.message', sender: BOB, content: {} }, V('10')), [
    ['m.room.create', ''],
    ['m.room.power_levels', ''],
    ['m.room.member', BOB],
  ]);
});

test('authEventSelection: self join de-duplicates the member event and adds join rules', () => {
  assert.deepEqual(authEventSelection({ type: 'm.room.member', sender: BOB, state_key: BOB, content: { membership: 'join' } }, V('10')), [
    ['m.room.create', ''],
    ['m.room.power_levels', ''],
    ['m.room.member', BOB],
    ['m.room.join_rules', ''],
  ]);
});

test('authEventSelection: kick has no join rules; invite and knock do', () => {
  const sel = (membership: string) => authEventSelection({ type: 'm.room.member', sender: MOD, state_key: BOB, content: { membership } }, V('10'));
  assert.deepEqual(sel('leave'), [['m.room.create', ''], ['m.room.power_levels', ''], ['m.room.member', MOD], ['m.room.member', BOB]]);
  assert.deepEqual(sel('ban'), [['m.room.create', ''], ['m.room.power_levels', ''], ['m.room.member', MOD], ['m.room.member', BOB]]);
  assert.deepEqual(sel('invite').at(-1), ['m.room.join_rules', '']);
  assert.deepEqual(sel('knock').at(-1), ['m.room.join_rules', '']);
});

test('authEventSelection: third party invite token', () => {
  const e = { type: 'm.room.member', sender: BOB, state_key: CAROL, content: { membership: 'invite', third_party_invite: { signed: { mxid: CAROL, token: 'tok' } } } };
  assert.deepEqual(authEventSelection(e, V('10')).at(-1), ['m.room.third_party_invite', 'tok']);
});

test('authEventSelection: restricted join authoriser only where restricted rooms exist', () => {
  const e = { type: 'm.room.member', sender: CAROL, state_key: CAROL, content: { membership: 'join', join_authorised_via_users_server: ALICE } };
  assert.deepEqual(authEventSelection(e, V('8')).at(-1), ['m.room.member', ALICE]);
  assert.deepEqual(authEventSelection(e, V('7')).at(-1), ['m.room.join_rules', '']);
});

test('checkAuthEventList: accepts the selected events, rejects duplicates, extras, other rooms, missing create', () => {
  const state = buildState('10', {});
  const get = (t: string, s: string) => state.get(stateKey(t, s))!;
  const e = msg(BOB);
  const good = [get('m.room.create', ''), get('m.room.power_levels', ''), get('m.room.member', BOB)];
  const v = V('10');
  assert.doesNotThrow(() => checkAuthEventList(e, good, v));
  assert.throws(() => checkAuthEventList(e, [...good, get('m.room.member', BOB)], v), /duplicate/);
  assert.throws(() => checkAuthEventList(e, [...good, get('m.room.join_rules', '')], v), /not one the selection algorithm picks/);
  assert.throws(() => checkAuthEventList(e, [...good.slice(1), { ...good[0]!, room_id: '!x:a.test' }], v), /from room/);
  assert.throws(() => checkAuthEventList(e, good.slice(1), v), /no m.room.create/);
});

test('stateKey joins type and state_key with NUL', () => {
  assert.equal(stateKey('m.room.member', '@a:b'), 'm.room.member\u0000@a:b');
  assert.notEqual(stateKey('m.room.name', ''), stateKey('m.room.nam', 'e'));
});
