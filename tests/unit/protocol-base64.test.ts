import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBase64, encodeBase64, encodeBase64Url } from '../../homeserver/protocol/base64.ts';

test('unpadded base64 examples from the appendices', () => {
  const cases: Array<[string, string]> = [
    ['', ''], ['f', 'Zg'], ['fo', 'Zm8'], ['foo', 'Zm9v'], ['foob', 'Zm9vYg'], ['fooba', 'Zm9vYmE'], ['foobar', 'Zm9vYmFy'],
  ];
  for (const [plain, encoded] of cases) {
    assert.equal(encodeBase64(Buffer.from(plain)), encoded);
    assert.equal(decodeBase64(encoded).toString(), plain);
  }
});

test('standard vs URL-safe alphabet', () => {
  const bytes = Uint8Array.from([0xfb, 0xff, 0xbf]);
  assert.equal(encodeBase64(bytes), '+/+/');
  assert.equal(encodeBase64Url(bytes), '-_-_');
  assert.equal(encodeBase64Url(Uint8Array.from([0xfb])), '-w'); // unpadded
});

test('encodes a subarray view, not its whole backing buffer', () => {
  const backing = Buffer.from('xxfooxx');
  assert.equal(encodeBase64(backing.subarray(2, 5)), 'Zm9v');
});

test('decodes padded, unpadded, standard and URL-safe input', () => {
  const expected = Buffer.from([0xfb, 0xff]);
  for (const s of ['+/8', '+/8=', '-_8', '-_8=']) assert.deepEqual(decodeBase64(s), expected, s);
});

test('rejects malformed base64', () => {
  for (const s of ['Zm9v!', 'Z', 'Zm9vY', 'Zg=', 'Zm=9v', 'Zg===']) assert.throws(() => decodeBase64(s), Error, s);
});
