// m.room.server_acl matching (spec: "Server Access Control Lists").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAllowedByAcl } from '../../federation/server-acl.ts';

test('server ACL: globs on the host without its port, deny over allow, IP literals, no allow means denied', () => {
  const acl = { allow: ['*.example.org', 'matrix.org'], deny: ['evil.example.org'], allow_ip_literals: false };
  assert.equal(serverAllowedByAcl(acl, 'a.example.org'), true);
  assert.equal(serverAllowedByAcl(acl, 'a.example.org:8448'), true, 'the port is not matched');
  assert.equal(serverAllowedByAcl(acl, 'MATRIX.org'), true, 'case-insensitive');
  assert.equal(serverAllowedByAcl(acl, 'evil.example.org'), false, 'deny wins');
  assert.equal(serverAllowedByAcl(acl, 'example.org'), false, '*.example.org needs a label before');
  assert.equal(serverAllowedByAcl(acl, 'other.net'), false, 'not allowed');
  assert.equal(serverAllowedByAcl({ allow: ['*'], allow_ip_literals: false }, '127.0.0.1:8448'), false);
  assert.equal(serverAllowedByAcl({ allow: ['*'], allow_ip_literals: false }, '[::1]:8448'), false);
  assert.equal(serverAllowedByAcl({ allow: ['*'] }, '127.0.0.1:8448'), true, 'IP literals allowed by default');
  assert.equal(serverAllowedByAcl({ allow: ['matrix.or?'] }, 'matrix.org'), true);
  assert.equal(serverAllowedByAcl({ allow: ['a.b'] }, 'aXb'), false, 'a dot is a dot');
  assert.equal(serverAllowedByAcl({}, 'anything'), false, 'an empty allow list denies everyone');
  assert.equal(serverAllowedByAcl(undefined, 'anything'), true, 'no ACL content: no restriction');
});
