// A redaction of an event written in the same statement is applied to the row being inserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WriteSet, type EventInsert } from '../../homeserver/rooms/persist-store.ts';

const row = (nid: number, eventId: string): EventInsert => ({
  nid, eventId, roomNid: 1, streamPos: nid, depth: nid, typeNid: 1, stateKeyNid: null, sender: '@a:x', ts: 0, stateBefore: 1, stateAfter: 1,
  replacesNid: null, membership: null, relType: null, relatesTo: null, redacts: null, txnDevice: null, txnId: null,
  prevEventIds: [], authEventNids: [], json: '{}', containsUrl: false,
});

test('redacting an event of the same write marks its row and drops its search entry', () => {
  const w = new WriteSet();
  w.events.push(row(1, '$one'), row(2, '$two'));
  w.search.nids.push(1, 2);
  w.search.rooms.push(1, 1);
  w.search.keys.push('content.body', 'content.body');
  w.search.texts.push('secret', 'kept');
  w.redact('$one', '$redaction');
  assert.equal(w.events[0]!.redactedBy, '$redaction');
  assert.equal(w.events[1]!.redactedBy, undefined);
  assert.deepEqual(w.search.texts, ['kept']);
  assert.deepEqual(w.search.nids, [2]);
  assert.deepEqual(w.redactions, [], 'nothing left for the UPDATE of older rows');
});

test('redacting an older event is left to the write statement', () => {
  const w = new WriteSet();
  w.events.push(row(5, '$new'));
  w.redact('$old', '$redaction');
  assert.deepEqual(w.redactions, [['$old', '$redaction']]);
  assert.equal(w.events[0]!.redactedBy, undefined);
});
