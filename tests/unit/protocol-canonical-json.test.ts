import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson, canonicalJsonBytes } from '../../homeserver/protocol/canonical-json.ts';

// Every example from appendices.md "Canonical JSON > Examples" (inputs kept as JSON text so the
// \u65E5 escape and 1e10 literal are parsed exactly as written in the spec).
const SPEC_EXAMPLES: Array<[string, string]> = [
  ['{}', '{}'],
  ['{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'],
  ['{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'],
  ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
  [
    `{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`,
    '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
  ],
  ['{\n    "a": "日本語"\n}', '{"a":"日本語"}'],
  ['{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'],
  ['{\n    "a": "\\u65E5"\n}', '{"a":"日"}'],
  ['{\n    "a": null\n}', '{"a":null}'],
  ['{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'],
];

for (const [input, expected] of SPEC_EXAMPLES) {
  test(`canonical JSON spec example ${JSON.stringify(expected)}`, () => {
    assert.equal(canonicalJson(JSON.parse(input)), expected);
  });
}

test('canonicalJsonBytes is the UTF-8 encoding (non-ASCII not escaped)', () => {
  assert.deepEqual(canonicalJsonBytes({ a: '日' }), Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe6, 0x97, 0xa5, 0x22, 0x7d]));
});

test('keys sort by codepoint, not UTF-16 code unit', () => {
  // U+1F600 (surrogates D83D DE00) sorts after U+FB01 by codepoint, before it by code unit.
  assert.equal(canonicalJson({ '\u{1F600}': 1, '\uFB01': 2, b: 3, a: 4 }), '{"a":4,"b":3,"\uFB01":2,"\u{1F600}":1}');
});

test('control characters use the escapes the grammar requires', () => {
  assert.equal(canonicalJson({ s: '\b\t\n\f\r"\\\u0001\u001f\u007f/' }), '{"s":"\\b\\t\\n\\f\\r\\"\\\\\\u0001\\u001f\u007f/"}');
});

test('nested arrays and objects, booleans, safe-range integer bounds', () => {
  assert.equal(
    canonicalJson({ z: [true, false, null, [], {}], m: { y: -9007199254740991, x: 9007199254740991 } }),
    '{"m":{"x":9007199254740991,"y":-9007199254740991},"z":[true,false,null,[],{}]}',
  );
});

test('undefined object properties are omitted', () => {
  assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
});

test('rejects floats, unsafe integers and non-JSON values', () => {
  assert.throws(() => canonicalJson({ a: 1.5 }), TypeError);
  assert.throws(() => canonicalJson({ a: 2 ** 53 }), TypeError);
  assert.throws(() => canonicalJson({ a: -(2 ** 53) }), TypeError);
  assert.throws(() => canonicalJson({ a: NaN }), TypeError);
  assert.throws(() => canonicalJson({ a: Infinity }), TypeError);
  assert.throws(() => canonicalJson([undefined]), TypeError);
  assert.throws(() => canonicalJson({ a: 1n }), TypeError);
  assert.throws(() => canonicalJson({ a: new Date(0) }), TypeError);
});
