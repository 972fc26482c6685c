// The recent-events cache of /sync against an in-memory "database": what it serves equals what the
// database would answer, concurrent readers share one read, it stays bounded, and a redaction makes
// it read the room again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecentEvents, compileFilter, type RecentEventsSource } from '../../homeserver/rooms/recent-events.ts';
import type { EventRow } from '../../homeserver/rooms/store.ts';
import type { RoomEventFilter } from '../../homeserver/rooms/filter.ts';
import type { TimelineWindow } from '../../homeserver/rooms/sync-read-store.ts';

function row(room: number, pos: number, type = 'm.room.message', sender = '@a:x'): EventRow {
  return {
    event_nid: pos, event_id: `$${pos}`, room_nid: room, room_id: `!r${room}:x`, room_version: '10', stream_pos: pos, depth: pos, type,
    state_key: null, sender, origin_server_ts: pos, state_before: 1, state_after: 1, replaces_nid: null, membership: null,
    redacted_by: null, txn_device: null, txn_id: null, json: '{}',
  } as unknown as EventRow;
}

/** A fake database: rows by room; counts reads; can hold reads until released. */
function fakeDb() {
  const rows: EventRow[] = [];
  let reads = 0;
  let gate: Promise<void> | undefined;
  const source: RecentEventsSource = {
    async timelines(windows: TimelineWindow[], limit: number, filter: RoomEventFilter | undefined) {
      reads++;
      if (gate) await gate;
      const match = compileFilter(filter)!;
      const out = new Map<number, EventRow[]>();
      for (const w of windows) {
        out.set(w.roomNid, rows.filter((r) => r.room_nid === w.roomNid && r.stream_pos > (w.lower ?? 0) && r.stream_pos <= w.upper && match(r))
          .sort((a, b) => b.stream_pos - a.stream_pos).slice(0, limit).map((r) => ({ ...r })));
      }
      return out;
    },
    async statesAtGroups(groups: number[]) { return new Map(groups.map((g) => [g, [] as EventRow[]])); },
    async summaries(nids: number[]) { return new Map(nids.map((n) => [n, { members: [], joined: 0, invited: 0 }])); },
  };
  return {
    rows, source, reads: () => reads,
    hold() { let release!: () => void; gate = new Promise((r) => { release = r; }); return () => { gate = undefined; release(); }; },
  };
}

const ids = (m: Map<number, EventRow[]>, room: number) => (m.get(room) ?? []).map((r) => r.stream_pos);

test('serves what the database would, for any window, limit and filter', async () => {
  const db = fakeDb();
  let pos = 0;
  for (let i = 0; i < 300; i++) db.rows.push(row(1 + (i % 3), ++pos, i % 5 === 0 ? 'm.room.member' : 'm.room.message', i % 2 ? '@a:x' : '@b:x'));
  const cache = new RecentEvents(db.source, { perRoom: 40, maxEvents: 1000 });
  const filters: Array<RoomEventFilter | undefined> = [undefined, { types: ['m.room.message'] }, { not_senders: ['@a:x'] }, { types: ['m.room.*'], senders: ['@b:x'] }];
  for (const upper of [50, 120, 200, 300]) {
    for (const lower of [undefined, 0, 10, upper - 30, upper - 3]) {
      for (const limit of [1, 5, 11, 21, 60]) {
        for (const f of filters) {
          const windows = [1, 2, 3].map((roomNid) => ({ roomNid, lower, upper }));
          const got = await cache.timelines(windows, limit, f);
          const want = await db.source.timelines(windows, limit, f);
          for (const r of [1, 2, 3]) assert.deepEqual(ids(got, r), ids(want, r), `room ${r} (${lower}, ${upper}] limit ${limit} ${JSON.stringify(f)}`);
        }
      }
    }
  }
  assert.ok(cache.stats.hits > cache.stats.windows / 2, `mostly from memory: ${cache.stats.hits} of ${cache.stats.windows}`);
});

test('concurrent readers of a new position share one read', async () => {
  const db = fakeDb();
  for (let p = 1; p <= 10; p++) db.rows.push(row(1, p));
  const cache = new RecentEvents(db.source);
  await cache.timelines([{ roomNid: 1, upper: 10 }], 11, undefined);
  db.rows.push(row(1, 11));
  const before = db.reads();
  const release = db.hold();
  const readers = Array.from({ length: 1000 }, () => cache.timelines([{ roomNid: 1, lower: 10, upper: 11 }], 11, undefined));
  release();
  const results = await Promise.all(readers);
  assert.equal(db.reads() - before, 1, 'one read for a thousand readers');
  for (const r of results) assert.deepEqual(ids(r, 1), [11]);
});

test('stays within its bound of events, dropping the least recently used rooms', async () => {
  const db = fakeDb();
  let pos = 0;
  for (let room = 1; room <= 50; room++) for (let i = 0; i < 20; i++) db.rows.push(row(room, ++pos));
  const cache = new RecentEvents(db.source, { maxEvents: 200, perRoom: 32 });
  for (let room = 1; room <= 50; room++) {
    const got = await cache.timelines([{ roomNid: room, upper: pos }], 11, undefined);
    assert.equal(got.get(room)!.length, 11);
    assert.ok(cache.size().events <= 200 + 32, `bounded: ${cache.size().events}`);
  }
  assert.ok(cache.size().rooms < 50);
});

test('a redaction among new events makes the room read again: the redacted row is served redacted', async () => {
  const db = fakeDb();
  for (let p = 1; p <= 5; p++) db.rows.push(row(1, p));
  const cache = new RecentEvents(db.source);
  const first = await cache.timelines([{ roomNid: 1, upper: 5 }], 11, undefined);
  assert.equal(first.get(1)!.find((r) => r.stream_pos === 3)!.redacted_by, null);
  // Event 6 redacts event 3 (the database marks the target in the same write).
  db.rows.find((r) => r.stream_pos === 3)!.redacted_by = '$6';
  db.rows.push(row(1, 6, 'm.room.redaction'));
  const after = await cache.timelines([{ roomNid: 1, upper: 6 }], 11, undefined);
  assert.equal(after.get(1)!.find((r) => r.stream_pos === 3)!.redacted_by, '$6');
  // A reader still at position 5 gets the fresh rows too (never the stale copy).
  const old = await cache.timelines([{ roomNid: 1, upper: 5 }], 11, undefined);
  assert.equal(old.get(1)!.find((r) => r.stream_pos === 3)!.redacted_by, '$6');
});

test('never reads beyond the position asked for', async () => {
  const db = fakeDb();
  for (let p = 1; p <= 10; p++) db.rows.push(row(1, p));
  const cache = new RecentEvents(db.source);
  const got = await cache.timelines([{ roomNid: 1, upper: 7 }], 20, undefined);
  assert.deepEqual(ids(got, 1), [7, 6, 5, 4, 3, 2, 1]);
  // Events 8..10 exist in the database but above the ceiling: a later reader at 10 reads them then.
  const later = await cache.timelines([{ roomNid: 1, lower: 7, upper: 10 }], 20, undefined);
  assert.deepEqual(ids(later, 1), [10, 9, 8]);
});

test('compileFilter matches like filterSql: * is a wildcard, _ and % are literal, empty lists match nothing', () => {
  const m = (f: RoomEventFilter, type: string, sender = '@a:x') => compileFilter(f)!(row(1, 1, type, sender));
  assert.equal(m({ types: ['m.room.*'] }, 'm.room.message'), true);
  assert.equal(m({ types: ['m.room.*'] }, 'm.roomy'), false);
  assert.equal(m({ types: ['m_room%'] }, 'm.room.message'), false);
  assert.equal(m({ types: ['m_room%'] }, 'm_room%'), true);
  assert.equal(m({ types: [] }, 'm.room.message'), false);
  assert.equal(m({ not_types: [] }, 'm.room.message'), true);
  assert.equal(m({ senders: [] }, 'm.room.message'), false);
  assert.equal(m({ not_senders: ['@a:x'] }, 'm.room.message'), false);
  assert.equal(m({ types: ['M.ROOM.*'] }, 'm.room.message'), false, 'case-sensitive like LIKE');
  assert.equal(compileFilter({ contains_url: true }), undefined, 'contains_url is left to the database');
});

test('fed by the one writer: its rows served without a read, a quiet room brought forward without one, the same answers as the database', async () => {
  const db = fakeDb();
  const last = new Map<number, number>();
  const cache = new RecentEvents(db.source, { perRoom: 40, maxEvents: 1000 });
  cache.trustWriter({ lastCommitted: (nid) => last.get(nid) });
  let pos = 0;
  const write = (room: number, type = 'm.room.message') => {
    const before = last.get(room) ?? 0;
    const r = row(room, ++pos, type);
    db.rows.push(r);
    last.set(room, pos);
    return { before, rows: [r] };
  };
  for (let i = 0; i < 20; i++) write(1 + (i % 2));
  const windows = (upper: number, lower?: number) => [1, 2].map((roomNid) => ({ roomNid, lower, upper }));
  await cache.timelines(windows(pos), 10, undefined);
  const readsAfterWarm = db.reads();
  // Writes in room 1 only, each handed over as it becomes readable: room 2 is quiet.
  for (let i = 0; i < 30; i++) {
    const w = write(1);
    cache.written(1, w.before, w.rows);
    const since = pos - 3;
    const got = await cache.timelines(windows(pos, since), 10, undefined);
    const want = await db.source.timelines(windows(pos, since), 10, undefined);
    for (const r of [1, 2]) assert.deepEqual(ids(got, r), ids(want, r), `room ${r} at ${pos}`);
  }
  assert.equal(db.reads() - readsAfterWarm, 30, 'only the comparison reads: the cache read nothing');
  // A write the cache was not told of (another path, or a lost hand-over) is read, not missed.
  write(2);
  const got = await cache.timelines(windows(pos, pos - 1), 10, undefined);
  assert.deepEqual(ids(got, 2), [pos]);
  // A redaction is not appended: the room is read again (and what it redacts with it).
  const red = write(1, 'm.room.redaction');
  const before = db.reads();
  cache.written(1, red.before, red.rows);
  const after = await cache.timelines(windows(pos, pos - 1), 10, undefined);
  assert.deepEqual(ids(after, 1), [pos]);
  assert.ok(db.reads() > before, 'the redaction made the cache read the room');
  // Rows handed over out of order (the cache is not at the room's previous position) are ignored.
  const a = write(1);
  const b = write(1);
  cache.written(1, b.before, b.rows);
  const late = await cache.timelines(windows(pos, pos - 2), 10, undefined);
  assert.deepEqual(ids(late, 1), [b.rows[0]!.stream_pos, a.rows[0]!.stream_pos]);
});
