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

// ---- Several workers: the tracker with a SharedStream (coordination/positions.ts in production).

import type { SharedStream } from '../../homeserver/storage/stream.ts';

/** A SharedStream that records what the tracker tells it; the test moves the shared position. */
function fakeShared(start: number) {
  const calls: Array<{ kind: 'lower' | 'changed'; floor?: number; done?: number }> = [];
  let tracker!: StreamTracker;
  const shared: SharedStream = {
    attach: async (t) => { tracker = t; return start; },
    lowerFloor: async (floor) => { calls.push({ kind: 'lower', floor }); },
    changed: (done) => { calls.push({ kind: 'changed', done }); },
  };
  return { shared, calls, tracker: () => tracker };
}

test('shared: current() is the position every worker has persisted, never backwards, never past an own write in flight', async () => {
  const db = fakeDb(100);
  const f = fakeShared(100);
  const t = await StreamTracker.open(db, f.shared);
  assert.equal(t.current(), 100, 'starts where SharedStream.attach says');
  assert.equal(t.sharedAdvanced(105), true);
  assert.equal(t.current(), 105);
  assert.equal(t.sharedAdvanced(103), false, 'an older announcement does not move it back');
  assert.equal(t.current(), 105);
  const p = await t.allocate(db); // 101 in this fake sequence: below what the others announced
  assert.equal(t.current(), Math.min(105, p - 1), 'an own write in flight caps it');
  t.done([p]);
  assert.equal(t.current(), 105);
});

test('shared: the floor is registered before nextval, raised after it, removed when done', async () => {
  const db = fakeDb(10);
  const f = fakeShared(10);
  const t = await StreamTracker.open(db, f.shared);
  t.sharedAdvanced(10);
  let floorDuringAllocation: number | undefined;
  const [p] = await t.reserve(async () => {
    floorDuringAllocation = t.floor();
    const r = await db.raw("SELECT nextval('stream_positions') AS pos");
    return [Number(r.rows[0].pos)];
  });
  assert.deepEqual(f.calls[0], { kind: 'lower', floor: 10 }, 'registered at the readable position first');
  assert.equal(floorDuringAllocation, 10);
  assert.equal(t.floor(), p! - 1, 'in flight: just below the position');
  t.done([p!]);
  assert.equal(t.floor(), undefined, 'nothing in flight: no floor');
  assert.deepEqual(f.calls.at(-1), { kind: 'changed', done: p }, 'done positions reported');
});

test('shared: whenVisible runs once this worker\'s own writes are done (to publish); whenReadable once every worker\'s are', async () => {
  const db = fakeDb(0);
  const f = fakeShared(0);
  const t = await StreamTracker.open(db, f.shared);
  const a = await t.allocate(db); // 1
  const b = await t.allocate(db); // 2
  const fired: string[] = [];
  t.done([b]);
  t.whenVisible(b, () => fired.push('visible b'));
  t.whenReadable(b, () => fired.push('readable b'));
  assert.deepEqual(fired, [], 'own position 1 still in flight');
  t.done([a]);
  assert.deepEqual(fired, ['visible b'], 'own writes done: the notification may be published');
  t.sharedAdvanced(1);
  assert.deepEqual(fired, ['visible b'], 'readable only up to 1 so far');
  t.sharedAdvanced(2);
  assert.deepEqual(fired, ['visible b', 'readable b']);
  // settled(): a write answers once it is readable everywhere.
  const c = await t.allocate(db);
  t.done([c]);
  let settled = false;
  const s = t.settled().then(() => { settled = true; });
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false);
  t.sharedAdvanced(c);
  await s;
  assert.equal(settled, true);
});
