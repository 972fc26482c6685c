import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { computeEventId, referenceHash } from '../../homeserver/protocol/hashes.ts';
import { ROOM_VERSIONS } from '../../homeserver/protocol/room-versions.ts';

const EVENT = {
  auth_events: ['$auth'],
  content: { body: 'hello', msgtype: 'm.text' },
  depth: 8,
  hashes: { sha256: 'abc' },
  origin: 'example.org',
  origin_server_ts: 1700000000000,
  prev_events: ['$prev'],
  room_id: '!r:example.org',
  sender: '@u:example.org',
  type: 'm.room.message',
  signatures: { 'example.org': { 'ed25519:1': 'sig' } },
  unsigned: { age: 5 },
};

// The redacted canonical form, written out by hand (v3-v10 keep `origin`; v11 drops it).
const REDACTED_V10 =
  '{"auth_events":["$auth"],"content":{},"depth":8,"hashes":{"sha256":"abc"},"origin":"example.org","origin_server_ts":1700000000000,"prev_events":["$prev"],"room_id":"!r:example.org","sender":"@u:example.org","type":"m.room.message"}';

test('reference hash is sha256 of the redacted canonical JSON without signatures/unsigned', () => {
  const expected = createHash('sha256').update(REDACTED_V10).digest();
  assert.deepEqual(referenceHash(EVENT, ROOM_VERSIONS['4']!), expected);
});

test('event ID encoding: v3 standard base64, v4+ URL-safe base64', () => {
  assert.equal(computeEventId(EVENT, ROOM_VERSIONS['3']!), '$Mz8p/83FwiR7+gBp2acRlskOYVelWE04Pw36UsFR6sM');
  for (const v of ['4', '5', '6', '7', '8', '9', '10']) {
    assert.equal(computeEventId(EVENT, ROOM_VERSIONS[v]!), '$Mz8p_83FwiR7-gBp2acRlskOYVelWE04Pw36UsFR6sM', `v${v}`);
  }
  // v11 redaction drops top-level `origin`, changing the reference hash.
  assert.equal(computeEventId(EVENT, ROOM_VERSIONS['11']!), '$aVQJvUoQhaBEaBAb3Sw6Z4P38i3f-KgmSFArN7EZw0E');
});

test('event ID ignores unsigned, signatures, an embedded event_id and non-protected content', () => {
  const v10 = ROOM_VERSIONS['10']!;
  const id = computeEventId(EVENT, v10);
  assert.equal(computeEventId({ ...EVENT, unsigned: { age: 99 }, signatures: {}, event_id: id, content: {} }, v10), id);
  assert.notEqual(computeEventId({ ...EVENT, depth: 9 }, v10), id);
});

test('event IDs cannot be computed for room versions 1 and 2', () => {
  assert.throws(() => computeEventId(EVENT, ROOM_VERSIONS['1']!));
  assert.throws(() => computeEventId(EVENT, ROOM_VERSIONS['2']!));
});
