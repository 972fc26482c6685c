import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  isValidLocalpart,
  isValidRoomAlias,
  isValidRoomId,
  isValidServerName,
  isValidUserId,
  parseUserId,
  serverNameOf,
} from '../../homeserver/protocol/identifiers.ts';

test('server names from the spec examples are valid', () => {
  for (const s of ['matrix.org', 'matrix.org:8888', '1.2.3.4', '1.2.3.4:1234', '[1234:5678::abcd]', '[1234:5678::abcd]:5678', 'localhost']) {
    assert.equal(isValidServerName(s), true, s);
  }
});

test('invalid server names', () => {
  for (const s of ['', 'matrix.org:', 'matrix.org:123456', 'matrix org', 'under_score.org', '[1234:5678::abcd', '[xyz]', 'a:b:c', 'ex/ample.org']) {
    assert.equal(isValidServerName(s), false, s);
  }
});

test('localpart grammar for new users', () => {
  for (const s of ['alice', 'a.b_c=d-e/f+g', '0123']) assert.equal(isValidLocalpart(s), true, s);
  for (const s of ['', 'Alice', 'al ice', 'al:ice', 'ali#ce', 'é']) assert.equal(isValidLocalpart(s), false, s);
});

test('user IDs: historical localparts accepted, structure enforced', () => {
  assert.equal(isValidUserId('@alice:example.org'), true);
  assert.equal(isValidUserId('@Alice!:example.org:8448'), true); // historical character set
  assert.equal(isValidUserId('alice:example.org'), false);
  assert.equal(isValidUserId('@alice'), false);
  assert.equal(isValidUserId('@al\u0000ice:example.org'), false);
  assert.equal(isValidUserId('@alice:bad server'), false);
  assert.equal(isValidUserId('@' + 'a'.repeat(250) + ':example.org'), false); // over 255 bytes
});

test('parseUserId splits at the first colon', () => {
  assert.deepEqual(parseUserId('@alice:example.org:8448'), { localpart: 'alice', server: 'example.org:8448' });
  assert.deepEqual(parseUserId('@bob:[::1]:80'), { localpart: 'bob', server: '[::1]:80' });
  assert.equal(parseUserId('#alice:example.org'), null);
});

test('room IDs and aliases', () => {
  assert.equal(isValidRoomId('!abc:example.org'), true);
  assert.equal(isValidRoomId('!:example.org'), false);
  assert.equal(isValidRoomId('!abc'), false);
  assert.equal(isValidRoomId('#abc:example.org'), false);
  assert.equal(isValidRoomAlias('#room:example.org'), true);
  assert.equal(isValidRoomAlias('#日本:example.org'), true);
  assert.equal(isValidRoomAlias('#room'), false);
  assert.equal(isValidRoomAlias('!room:example.org'), false);
});

test('serverNameOf', () => {
  assert.equal(serverNameOf('@a:example.org:8448'), 'example.org:8448');
  assert.equal(serverNameOf('!r:example.org'), 'example.org');
  assert.equal(serverNameOf('$abcdef'), '');
});
