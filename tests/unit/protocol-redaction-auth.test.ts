// Who may redact whom (protocol/auth.ts checkRedaction, redactsOf), in every room version: room
// version 11 carries `redacts` in content, and the same power check must apply to it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthError, checkEventAuth, checkRedaction, redactsOf, stateMapFromEvents, type PDU, type StateMap } from '../../homeserver/protocol/auth.ts';
import { ROOM_VERSIONS } from '../../homeserver/protocol/room-versions.ts';

const V = (id: string) => ROOM_VERSIONS[id]!;
const ROOM = '!room:a.test';
const ALICE = '@alice:a.test'; // creator, power 100
const MOD = '@mod:a.test'; // power 50
const BOB = '@bob:a.test'; // power 0

function pdu(sender: string, type: string, content: Record<string, unknown>, extra: Partial<PDU> = {}): PDU {
  return { room_id: ROOM, sender, type, content, origin_server_ts: 1, prev_events: ['$prev'], ...extra };
}

function state(version: string, redactLevel?: number): StateMap {
  const pl: Record<string, unknown> = { users: { [ALICE]: 100, [MOD]: 50 }, users_default: 0 };
  if (redactLevel !== undefined) pl.redact = redactLevel;
  return stateMapFromEvents([
    { ...pdu(ALICE, 'm.room.create', version === '11' ? { room_version: version } : { creator: ALICE, room_version: version }), state_key: '', event_id: '$create', prev_events: [] },
    { ...pdu(ALICE, 'm.room.power_levels', pl), state_key: '' },
    ...[ALICE, MOD, BOB].map((u) => ({ ...pdu(u, 'm.room.member', { membership: 'join' }), state_key: u })),
  ]);
}

/** A redaction as each version carries it: `redacts` in content from v11, at the top level before. */
function redaction(version: string, sender: string, target: string): PDU {
  return V(version).redactsInContent ? pdu(sender, 'm.room.redaction', { redacts: target }) : pdu(sender, 'm.room.redaction', {}, { redacts: target });
}

const ROWS: Array<{ name: string; v: string; sender: string; targetSender: string | undefined; redactLevel?: number; deny?: boolean }> = [
  { name: 'v11: power 0 redacting another user\'s event (redacts in content)', v: '11', sender: BOB, targetSender: ALICE, deny: true },
  { name: 'v11: power 0 redacting an unknown event', v: '11', sender: BOB, targetSender: undefined, deny: true },
  { name: 'v11: own event', v: '11', sender: BOB, targetSender: BOB },
  { name: 'v11: moderator at the default redact level 50', v: '11', sender: MOD, targetSender: BOB },
  { name: 'v11: moderator below a raised redact level', v: '11', sender: MOD, targetSender: BOB, redactLevel: 75, deny: true },
  { name: 'v11: anyone when the redact level is 0', v: '11', sender: BOB, targetSender: ALICE, redactLevel: 0 },
  { name: 'v10: power 0 redacting another user\'s event (top-level redacts)', v: '10', sender: BOB, targetSender: ALICE, deny: true },
  { name: 'v10: own event', v: '10', sender: BOB, targetSender: BOB },
  { name: 'v10: creator', v: '10', sender: ALICE, targetSender: BOB },
  { name: 'v1: power 0 redacting another user\'s event', v: '1', sender: BOB, targetSender: ALICE, deny: true },
];

for (const row of ROWS) {
  test(`checkRedaction: ${row.name}`, () => {
    const run = () => checkRedaction(redaction(row.v, row.sender, '$target:a.test'), state(row.v, row.redactLevel), V(row.v), row.targetSender);
    if (row.deny) assert.throws(run, (e: unknown) => e instanceof AuthError && /may not redact/.test(e.message));
    else assert.doesNotThrow(run);
  });
}

test('checkRedaction ignores events that are not redactions', () => {
  assert.doesNotThrow(() => checkRedaction(pdu(BOB, 'm.room.message', { body: 'x' }), state('11'), V('11'), ALICE));
});

test('redactsOf reads content.redacts from v11 and the top level before', () => {
  assert.equal(redactsOf(pdu(BOB, 'm.room.redaction', { redacts: '$a' }), V('11')), '$a');
  assert.equal(redactsOf(pdu(BOB, 'm.room.redaction', {}, { redacts: '$a' }), V('11')), undefined);
  assert.equal(redactsOf(pdu(BOB, 'm.room.redaction', {}, { redacts: '$a' }), V('10')), '$a');
  assert.equal(redactsOf(pdu(BOB, 'm.room.redaction', { redacts: '$a' }), V('10')), undefined);
  assert.equal(redactsOf(pdu(BOB, 'm.room.redaction', { redacts: 5 }), V('11')), undefined);
  assert.equal(redactsOf(pdu(BOB, 'm.room.message', { redacts: '$a' }), V('11')), undefined);
});

test('v1-v2 auth rule: the same-server exception reads redacts where the version puts it', () => {
  const ev = { ...redaction('1', BOB, '$x:a.test'), event_id: '$r:a.test' };
  assert.doesNotThrow(() => checkEventAuth(ev, state('1'), V('1')));
  const other = { ...redaction('1', BOB, '$x:b.test'), event_id: '$r:a.test' };
  assert.throws(() => checkEventAuth(other, state('1'), V('1')), /may not redact/);
});
