// The persisted-up-to position: readers never pass a position still in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamTracker } from '../../homeserver/storage/stream.ts';
import type { Db } from '../../homeserver/storage/db.ts';

/** A stand-in for the two queries the tracker makes: the sequence's state and nextval(). */
function fakeDb(start: number): Db {
  let value = start;
  return {
    raw: async (sql: string) => {
      if (sql.includes('last_value')) return { rows: [{ last_value: value, is_called: value > 0 }] };
      value += 1;
      return { rows: [{ pos: value }] };
    },
  } as unknown as Db;
}

test('current() stops below the lowest position still in flight', async () => {
  const db = fakeDb(10);
  const t = await StreamTracker.open(db);
  assert.equal(t.current(), 10);
  const a = await t.allocate(db); // 11
  const b = await t.allocate(db); // 12
  const c = await t.allocate(db); // 13
  assert.deepEqual([a, b, c], [11, 12, 13]);
  t.done([c]);
  assert.equal(t.current(), 10, '13 committed, but 11 and 12 may still commit: readers stay at 10');
  t.done([a]);
  assert.equal(t.current(), 11);
  t.done([b]);
  assert.equal(t.current(), 13);
});

test('whenVisible waits until every earlier position is done', async () => {
  const db = fakeDb(0);
  const t = await StreamTracker.open(db);
  const a = await t.allocate(db);
  const b = await t.allocate(db);
  const fired: number[] = [];
  t.done([b]);
  t.whenVisible(b, () => fired.push(b));
  assert.equal(fired.length, 0, 'position 2 is hidden by 1 in flight');
  t.done([a]);
  assert.deepEqual(fired, [b]);
  t.whenVisible(a, () => fired.push(a));
  assert.deepEqual(fired, [b, a], 'already visible: runs at once');
});

test('a rolled-back position does not hold readers back', async () => {
  const db = fakeDb(5);
  const t = await StreamTracker.open(db);
  const a = await t.allocate(db);
  t.done([a]); // rolled back: reported done all the same
  assert.equal(t.current(), 6);
});

test('releasing an allocation hold runs what waited for it, without another commit', async () => {
  const db = fakeDb(0);
  const t = await StreamTracker.open(db);
  const a = await t.allocate(db); // 1
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  // An allocation on its way back from the database holds readers at the current position.
  const pending = t.reserve(async () => {
    await gate;
    return [];
  });
  t.done([a]);
  const fired: number[] = [];
  t.whenVisible(a, () => fired.push(a));
  assert.equal(fired.length, 0, 'held');
  release();
  await pending;
  assert.deepEqual(fired, [a], 'the hold released: position 1 is readable and its waiter ran');
});
