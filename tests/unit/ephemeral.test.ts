// Typing and presence state (homeserver/ephemeral/): the in-process and the Redis implementation
// of the same interface behave alike; positions never go backwards; wake-ups are batched; Redis
// keys all expire.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { createClient } from 'redis';
import { SnapshotCache, WakeBatcher, nextPos } from '../../homeserver/ephemeral/positions.ts';
import { LocalTypingState, RedisTypingState, type TypingState } from '../../homeserver/ephemeral/typing.ts';
import { LocalPresenceState, RedisPresenceState, type PresenceState } from '../../homeserver/ephemeral/presence.ts';
import { eventAllowed, limited, roomPasses } from '../../homeserver/ephemeral/filter.ts';
import type { Redis } from '../../homeserver/coordination/redis.ts';

const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean | Promise<boolean>, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

test('positions: at least the clock, always increasing', () => {
  const a = nextPos(0);
  assert.ok(a >= Date.now() - 5);
  const far = Date.now() + 1_000_000;
  assert.equal(nextPos(far), far + 1, 'a burst past the clock keeps counting');
});

test('WakeBatcher: one wake per batch, readable moves just before it; reached() flushes at once', async () => {
  const wakes: Array<[string[], number]> = [];
  let readableAtWake = 0;
  const b = new WakeBatcher(10, (keys, pos) => { readableAtWake = b.readable; wakes.push([keys.sort(), pos]); }, 30);
  b.push(['!a', '@x'], 11);
  b.push(['!b', '@x'], 12);
  assert.equal(b.readable, 10, 'not readable before its wake');
  await until(() => wakes.length === 1);
  assert.deepEqual(wakes[0], [['!a', '!b', '@x'], 12]);
  assert.equal(readableAtWake, 12);
  b.push(['!c'], 13);
  await b.reached(13, 1_000);
  assert.equal(b.readable, 13, 'a waiter flushes its batch at once');
  const t0 = Date.now();
  await b.reached(99, 50);
  assert.ok(Date.now() - t0 >= 40, 'a position never published times out');
  b.stop();
});

test('SnapshotCache: a read under way when its key is invalidated is not stored', async () => {
  const c = new SnapshotCache<number>(10, 60_000);
  let value = 1;
  let release: () => void = () => {};
  const slow = c.getMany(['k'], async () => { const v = value; await new Promise<void>((r) => { release = r; }); return new Map([['k', v]]); });
  value = 2;
  c.invalidate('k');
  release();
  assert.equal((await slow).get('k'), 1);
  assert.equal((await c.getMany(['k'], async () => new Map([['k', value]]))).get('k'), 2, 'the stale read was not cached');
  assert.equal((await c.getMany(['k'], async () => new Map([['k', 3]]))).get('k'), 2, 'the fresh one is');
});

test('filters: types with wildcards, senders, rooms, limit', () => {
  assert.ok(eventAllowed(undefined, 'm.typing'));
  assert.ok(!eventAllowed({ not_types: ['*'] }, 'm.presence'));
  assert.ok(!eventAllowed({ types: [] }, 'm.presence'));
  assert.ok(eventAllowed({ types: ['m.*'] }, 'm.typing'));
  assert.ok(!eventAllowed({ types: ['m.room.*'] }, 'm.typing'));
  assert.ok(!eventAllowed({ senders: ['@a:x'] }, 'm.presence', '@b:x'));
  assert.ok(!eventAllowed({ not_senders: ['@b:x'] }, 'm.presence', '@b:x'));
  assert.ok(!roomPasses({ not_rooms: ['!r'] }, '!r'));
  assert.ok(roomPasses({ rooms: ['!r'] }, '!r'));
  assert.deepEqual(limited({ limit: 2 }, [1, 2, 3]), [1, 2]);
  assert.deepEqual(limited({ limit: 0 }, [1, 2, 3]), [1, 2, 3]);
});

// ---- the same behaviour from both implementations -------------------------------------------

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
let redis: Redis | undefined;
async function redisOrSkip(): Promise<Redis | undefined> {
  if (redis) return redis;
  const client = createClient({ url: REDIS_URL, socket: { connectTimeout: 1_000, reconnectStrategy: false } });
  client.on('error', () => {});
  try { await client.connect(); } catch { return undefined; }
  return (redis = client as unknown as Redis);
}
after(async () => { redis?.destroy(); });

type Wakes = Array<{ keys: string[]; pos: number }>;
const impls: Array<{ name: string; typing: (w: Wakes) => Promise<{ s: TypingState; prefix?: string } | undefined>; presence: (w: Wakes) => Promise<{ s: PresenceState; prefix?: string } | undefined> }> = [
  {
    name: 'in process',
    typing: async (w) => ({ s: new LocalTypingState((keys, pos) => w.push({ keys, pos })) }),
    presence: async (w) => ({ s: new LocalPresenceState((keys, pos) => w.push({ keys, pos })) }),
  },
  {
    name: 'redis',
    typing: async (w) => {
      const r = await redisOrSkip();
      if (!r) return undefined;
      const prefix = `unit-${randomBytes(4).toString('hex')}:`;
      const s = new RedisTypingState(r, prefix, (keys, pos) => w.push({ keys, pos }), log);
      await s.start();
      return { s, prefix };
    },
    presence: async (w) => {
      const r = await redisOrSkip();
      if (!r) return undefined;
      const prefix = `unit-${randomBytes(4).toString('hex')}:`;
      const s = new RedisPresenceState(r, prefix, (keys, pos) => w.push({ keys, pos }), log);
      await s.start();
      return { s, prefix };
    },
  },
];

/** Every key under the prefix has a TTL (nothing grows without bound). */
async function allExpire(prefix: string): Promise<void> {
  const keys = await redis!.keys(`${prefix}*`);
  assert.ok(keys.length > 0);
  for (const k of keys) assert.ok(Number(await redis!.pTTL(k)) > 0, `${k} has a TTL`);
}

for (const impl of impls) {
  describe(`typing state (${impl.name})`, () => {
    test('start, renew (no wake), stop, expire (a wake), positions increasing', async () => {
      const wakes: Wakes = [];
      const made = await impl.typing(wakes);
      assert.ok(made, 'Redis (TEST_REDIS_URL) answers: npm test needs it');
      const { s } = made;
      try {
        const p0 = s.current();
        await s.set('!r:x', '@a:x', Date.now() + 60_000);
        await until(() => wakes.length === 1);
        assert.deepEqual(wakes[0]!.keys, ['!r:x']);
        assert.ok(s.current() > p0 && s.current() === wakes[0]!.pos);
        assert.deepEqual((await s.read(['!r:x', '!none:x'])).get('!r:x')?.userIds, ['@a:x']);
        assert.equal((await s.read(['!none:x'])).size, 0);
        await s.set('!r:x', '@a:x', Date.now() + 60_000);
        await sleep(50);
        assert.equal(wakes.length, 1, 'a renewal wakes nobody');
        await s.set('!r:x', '@b:x', Date.now() + 150);
        await until(() => wakes.length === 2);
        assert.deepEqual([...(await s.read(['!r:x'])).get('!r:x')!.userIds].sort(), ['@a:x', '@b:x']);
        await until(() => wakes.length === 3); // b ran out: woken without a request
        assert.ok(wakes[2]!.pos > wakes[1]!.pos);
        assert.deepEqual((await s.read(['!r:x'])).get('!r:x')?.userIds, ['@a:x']);
        await s.set('!r:x', '@a:x', 0);
        await until(() => wakes.length === 4);
        const after = (await s.read(['!r:x'])).get('!r:x')!;
        assert.deepEqual(after.userIds, []);
        assert.equal(after.pos, wakes[3]!.pos);
        if (made.prefix) await allExpire(made.prefix);
      } finally { s.stop(); }
    });
  });

  describe(`presence state (${impl.name})`, () => {
    test('transitions, the change log, sightings and timeouts', async () => {
      const wakes: Wakes = [];
      const made = await impl.presence(wakes);
      assert.ok(made, 'Redis (TEST_REDIS_URL) answers: npm test needs it');
      const { s } = made;
      try {
        // A fresh Redis starts at 0 (and positions from the clock): a token from a second ago.
        const p0 = Math.max(s.current(), Date.now() - 1_000);
        assert.equal((await s.get(['@a:x'])).get('@a:x')!.presence, 'offline', 'unknown users are offline');
        let r = await s.apply('@a:x', { kind: 'online', granularityMs: Number.MAX_SAFE_INTEGER }, ['@a:x', '!r:x']);
        assert.equal(r.state, 'online');
        await s.reached(r.pos, 1_000);
        assert.equal(s.current(), r.pos);
        assert.deepEqual(wakes.at(-1)!.keys.sort(), ['!r:x', '@a:x']);
        // Already online: nothing to tell.
        r = await s.apply('@a:x', { kind: 'online', granularityMs: Number.MAX_SAFE_INTEGER }, ['@a:x']);
        assert.equal(r.pos, 0);
        r = await s.apply('@a:x', { kind: 'unavailable' }, ['@a:x']);
        assert.equal(r.state, 'online', 'set_presence=unavailable does not demote an online user');
        r = await s.apply('@b:x', { kind: 'set', presence: 'unavailable', statusMsg: 'away' }, ['@b:x']);
        await s.reached(r.pos, 1_000);
        const rec = (await s.get(['@b:x'])).get('@b:x')!;
        assert.equal(rec.presence, 'unavailable');
        assert.equal(rec.status_msg, 'away');
        assert.deepEqual((await s.changed(p0, s.current()))!.sort(), ['@a:x', '@b:x']);
        assert.deepEqual(await s.changed(s.current(), s.current()), []);
        assert.deepEqual((await s.notOffline()).sort(), ['@a:x', '@b:x']);
        // Sightings: tracked users are refreshed, offline ones reported.
        assert.deepEqual(await s.seen(['@a:x', '@c:x']), ['@c:x']);
        const cutoff = Date.now() + 10;
        await sleep(20);
        assert.deepEqual((await s.timedOut(cutoff)).sort(), ['@a:x', '@b:x']);
        // A sighting after the cutoff saves a user from the timeout.
        await s.seen(['@a:x']);
        r = await s.apply('@a:x', { kind: 'timeout', cutoff }, ['@a:x']);
        assert.equal(r.state, 'online');
        r = await s.apply('@b:x', { kind: 'timeout', cutoff }, ['@b:x']);
        assert.equal(r.state, 'offline');
        await s.reached(r.pos, 1_000);
        assert.equal((await s.get(['@b:x'])).get('@b:x')!.status_msg, 'away', 'timing out keeps the status message');
        assert.deepEqual(await s.notOffline(), ['@a:x']);
        assert.equal(await s.changed(Date.now() - 2 * 24 * 3600_000, s.current()), undefined, 'a token older than the log: full list');
        // A join: the joiner is woken and the room is listed after the token; announcing an online
        // user logs them again, an offline one not.
        const before = s.current();
        await s.joined('@a:x', '!new:x');
        await until(() => wakes.at(-1)!.keys.includes('@a:x') && s.current() > before);
        assert.deepEqual(await s.joinedRooms('@a:x', before, s.current()), ['!new:x']);
        assert.deepEqual(await s.joinedRooms('@a:x', s.current(), s.current()), []);
        const mid = s.current();
        await s.announce('@b:x', ['!new:x']); // offline: nothing
        await s.announce('@a:x', ['!new:x']);
        await until(() => s.current() > mid);
        assert.deepEqual(await s.changed(mid, s.current()), ['@a:x']);
        assert.equal((await s.get(['@a:x'])).get('@a:x')!.presence, 'online', 'no state change');
        if (made.prefix) await allExpire(made.prefix);
      } finally { s.stop(); }
    });
  });
}
