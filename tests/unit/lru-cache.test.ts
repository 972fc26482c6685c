import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LruCache } from '../../homeserver/cache/lru.ts';

test('keeps at most its capacity, forgetting the least recently used', () => {
  const c = new LruCache<string, number>(3);
  c.set('a', 1).set('b', 2).set('c', 3);
  assert.equal(c.get('a'), 1); // a is now the most recent
  c.set('d', 4); // evicts b, the least recently used
  assert.equal(c.size, 3);
  assert.equal(c.get('b'), undefined);
  assert.deepEqual([c.get('a'), c.get('c'), c.get('d')], [1, 3, 4]);
});

test('overwriting a key does not evict another', () => {
  const c = new LruCache<string, number>(2);
  c.set('a', 1).set('b', 2).set('a', 10);
  assert.equal(c.size, 2);
  assert.equal(c.get('a'), 10);
  assert.equal(c.get('b'), 2);
});

test('delete and clear', () => {
  const c = new LruCache<number, string>(2);
  c.set(1, 'x').set(2, 'y');
  assert.equal(c.delete(1), true);
  assert.equal(c.has(1), false);
  c.clear();
  assert.equal(c.size, 0);
});

test('refuses a capacity that is not a positive integer', () => {
  assert.throws(() => new LruCache(0), RangeError);
  assert.throws(() => new LruCache(1.5), RangeError);
});
