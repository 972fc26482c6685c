// The edge rules of JSON request bodies: what canonical JSON cannot encode or PostgreSQL cannot
// store is refused with the spec's errcode, everything else passes unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_JSON_DEPTH, parseGuardedJson, parseGuardedText, refuseFractions, refuseNulParams } from '../../homeserver/http/json-guard.ts';
import { MatrixError } from '../../homeserver/http/errors.ts';

const refused = (fn: () => unknown, status: number, errcode: string) =>
  assert.throws(fn, (e: unknown) => e instanceof MatrixError && e.status === status && e.errcode === errcode);
const bytes = (s: string) => Buffer.from(s, 'utf8');
const nested = (n: number) => '['.repeat(n) + ']'.repeat(n);

test('ordinary bodies pass unchanged, integers up to ±(2^53−1) included', () => {
  const body = { msgtype: 'm.text', body: 'héllo 🎉 "quoted" \\ back', n: 9007199254740991, m: -9007199254740991, list: [1, true, null, { a: 'b' }] };
  assert.deepEqual(parseGuardedJson(bytes(JSON.stringify(body))), body);
  assert.deepEqual(parseGuardedJson(bytes('{"e":"\\ud83c\\udf89"}')), { e: '🎉' }); // an escaped surrogate pair is one character
});

test('invalid UTF-8 is refused with M_NOT_JSON, not replaced', () => {
  refused(() => parseGuardedJson(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])), 400, 'M_NOT_JSON');
  refused(() => parseGuardedJson(Buffer.from('{"a":"\xed\xa0\x80"}', 'latin1')), 400, 'M_NOT_JSON'); // CESU-8 surrogate
  refused(() => parseGuardedJson(bytes('{"a": ')), 400, 'M_NOT_JSON');
});

test('NUL and lone surrogates in strings or keys: M_BAD_JSON', () => {
  for (const text of ['{"a":"x\\u0000y"}', '{"x\\u0000":1}', '{"a":"\\ud800"}', '{"a":["\\udc00x"]}', '{"\\udfff":1}']) {
    refused(() => parseGuardedJson(bytes(text)), 400, 'M_BAD_JSON');
  }
});

test('integers beyond ±(2^53−1) and non-finite numbers: M_BAD_JSON', () => {
  for (const text of ['{"a":9007199254740992}', '{"a":-9007199254740992}', '{"a":[123456789012345678901234567890]}', '{"a":1e400}']) {
    refused(() => parseGuardedJson(bytes(text)), 400, 'M_BAD_JSON');
  }
});

test(`nesting deeper than ${MAX_JSON_DEPTH}: M_BAD_JSON, even 10,000 deep`, () => {
  assert.ok(parseGuardedJson(bytes(`{"a":${nested(MAX_JSON_DEPTH - 1)}}`)));
  refused(() => parseGuardedJson(bytes(`{"a":${nested(MAX_JSON_DEPTH)}}`)), 400, 'M_BAD_JSON');
  refused(() => parseGuardedJson(bytes(`{"a":${'{"b":'.repeat(10_000)}1${'}'.repeat(10_000)}}`)), 400, 'M_BAD_JSON');
  // Brackets inside strings do not count.
  assert.deepEqual(parseGuardedJson(bytes(`{"a":"${'['.repeat(500)}"}`)), { a: '['.repeat(500) });
});

test('fractions (1.5, 1.0, 1e3) are marked and refused when read, unless allowed', () => {
  for (const text of ['{"a":1.5}', '{"a":1.0}', '{"a":1e3}', '{"a":[-2E-1]}']) {
    const body = parseGuardedJson(bytes(text)) as object;
    refused(() => refuseFractions(body), 400, 'M_BAD_JSON');
  }
  for (const text of ['{"a":15}', '{"a":"1.5"}', '{"e1.5":-0}']) {
    const body = parseGuardedJson(bytes(text)) as object;
    assert.doesNotThrow(() => refuseFractions(body));
  }
  assert.equal(parseGuardedText('{"order":0.25}').fractions, true);
});

test('NUL in a path or query parameter: M_INVALID_PARAM', () => {
  refused(() => refuseNulParams({ type: 'm.a\u0000b' }, {}), 400, 'M_INVALID_PARAM');
  refused(() => refuseNulParams({}, { since: ['s1', 'x\u0000'] }), 400, 'M_INVALID_PARAM');
  assert.doesNotThrow(() => refuseNulParams({ type: 'm.room.message' }, { since: 's1' }));
});
