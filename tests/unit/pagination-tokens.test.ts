// Pagination tokens (issue 10): topological `t<depth>-<stream>` tokens, with stream tokens still accepted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePaginationToken, parseToken, topoToken } from '../../homeserver/storage/stream-token.ts';
import { MatrixError } from '../../homeserver/http/errors.ts';

test('topological tokens round-trip, negative stream parts included (backfilled history)', () => {
  for (const p of [{ depth: 0, stream: 0 }, { depth: 12, stream: 345 }, { depth: 7, stream: -1001 }]) {
    assert.deepEqual(parsePaginationToken(topoToken(p)), p);
  }
  assert.equal(topoToken({ depth: 5, stream: -3 }), 't5--3');
});

test('stream tokens (from /sync) stay valid pagination tokens', () => {
  assert.deepEqual(parsePaginationToken('s42'), { stream: 42 });
  assert.deepEqual(parsePaginationToken('s42_1_2_3'), { stream: 42 });
});

test('parseToken reads a topological token by its stream part (never below zero)', () => {
  assert.equal(parseToken('t5-77').pos, 77);
  assert.equal(parseToken('t5--77').pos, 0);
});

test('malformed tokens are M_INVALID_PARAM', () => {
  for (const bad of ['t', 't1', 't-1-1', 'tx-1', 't1-x', 't1-', `t${'9'.repeat(20)}-1`, 's', 'x1', '', 't1-1-1']) {
    assert.throws(() => parsePaginationToken(bad), (e: unknown) => e instanceof MatrixError && e.errcode === 'M_INVALID_PARAM', bad);
  }
  assert.throws(() => parsePaginationToken(undefined), MatrixError);
});
