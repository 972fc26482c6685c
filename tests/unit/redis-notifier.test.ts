// The Redis notifier's rules, with a stand-in hub: a notification from another worker wakes local
// waiters only once its position is readable here; while Redis is away "unchanged" is never
// answered, and waiters wake as positions move; when it is back everyone wakes once more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RedisNotifier } from '../../homeserver/realtime/redis-notifier.ts';
import { LocalNotifier } from '../../homeserver/realtime/notifier.ts';
import { StreamTracker, type SharedStream } from '../../homeserver/storage/stream.ts';
import { STREAMS, type SyncToken } from '../../homeserver/storage/stream-token.ts';
import type { RedisHub } from '../../homeserver/coordination/hub.ts';
import type { SharedPositions } from '../../homeserver/coordination/positions.ts';
import type { Db } from '../../homeserver/storage/db.ts';
import { pino } from 'pino';

const log = pino({ level: 'silent' });

function token(pos: number): SyncToken {
  const t = {} as SyncToken;
  for (const s of STREAMS) t[s] = 0;
  return { ...t, events: pos, accountData: pos };
}

async function setup(start = 10) {
  const handlers = new Map<string, (m: string) => void>();
  const upListeners: Array<(up: boolean) => void> = [];
  const published: string[] = [];
  const hub = {
    workerId: 'me',
    subscribe: async (name: string, fn: (m: string) => void) => { handlers.set(name, fn); },
    publish: async (_name: string, m: string) => { published.push(m); return true; },
    onUp: (fn: (up: boolean) => void) => { upListeners.push(fn); },
  } as unknown as RedisHub;
  const fallback: Array<(p: number) => void> = [];
  const healthy: Array<(h: number) => void> = [];
  const unhealthy: Array<() => void> = [];
  const positions = {
    onFallbackAdvance: (fn: (p: number) => void) => fallback.push(fn),
    onHealthy: (fn: (h: number) => void) => healthy.push(fn),
    onUnhealthy: (fn: () => void) => unhealthy.push(fn),
  } as unknown as SharedPositions;
  const shared: SharedStream = { attach: async () => start, lowerFloor: async () => {}, changed: () => {} };
  const tracker = await StreamTracker.open({} as Db, shared);
  const notifier = new RedisNotifier(hub, log);
  await notifier.start();
  const local = new LocalNotifier(token(start));
  notifier.attach(local, tracker, positions);
  const fromOther = (stream: string, keys: string[], pos: number) => handlers.get('notify')!(JSON.stringify({ w: 'other', s: stream, k: keys, p: pos }));
  return { notifier, tracker, published, fromOther, fallback, healthy, unhealthy, upListeners };
}

test('another worker\'s notification wakes a waiter only once its position is readable here', async () => {
  const t = await setup(10);
  t.healthy.forEach((h) => h(10)); // Redis trusted: changedSince answers from memory
  let woken = false;
  const waiting = t.notifier.wait(['!room'], token(10), 5_000).then((w) => { woken = w; });
  t.fromOther('events', ['!room'], 12);
  await new Promise((r) => setImmediate(r));
  assert.equal(woken, false, 'position 12 is not readable here yet');
  assert.equal(t.notifier.changedSince('events', ['!room'], 10), false, 'nor announced to readers');
  t.tracker.sharedAdvanced(12);
  await waiting;
  assert.equal(woken, true);
  assert.equal(t.notifier.changedSince('events', ['!room'], 10), true);
  assert.equal(t.notifier.changedSince('events', ['!other'], 10), false);
});

test('a local notification is published for the others and delivered here once readable', async () => {
  const t = await setup(5);
  t.notifier.notify('events', ['!a', '@u:x'], 6);
  assert.deepEqual(JSON.parse(t.published[0]!), { w: 'me', s: 'events', k: ['!a', '@u:x'], p: 6 });
  let woken = false;
  const waiting = t.notifier.wait(['@u:x'], token(5), 5_000).then((w) => { woken = w; });
  await new Promise((r) => setImmediate(r));
  assert.equal(woken, false);
  t.tracker.sharedAdvanced(6);
  await waiting;
  assert.equal(woken, true);
});

test('while Redis is away nothing is answered "unchanged", positions read from PostgreSQL wake everyone; on return everyone wakes again', async () => {
  const t = await setup(20);
  t.healthy.forEach((h) => h(20));
  assert.equal(t.notifier.changedSince('events', ['!r'], 20), false);
  t.unhealthy.forEach((u) => u());
  assert.equal(t.notifier.changedSince('events', ['!r'], 20), undefined, 'ask the database');
  let woken = false;
  const waiting = t.notifier.wait(['!r'], token(20), 5_000).then((w) => { woken = w; });
  t.tracker.sharedAdvanced(25);
  t.fallback.forEach((f) => f(25));
  await waiting;
  assert.equal(woken, true, 'woken by a position read from PostgreSQL');
  // Back: changes above the horizon are heard again; below it, the database decides.
  t.healthy.forEach((h) => h(30));
  assert.equal(t.notifier.changedSince('events', ['!r'], 25), undefined, 'below the horizon notifications may have been missed: the database decides');
  assert.equal(await t.notifier.wait(['!r'], token(20), 5_000), true, 'a waiter behind the readable position returns at once');
  let third = false;
  const waiting3 = t.notifier.wait(['!quiet'], token(25), 5_000).then((w) => { third = w; });
  await new Promise((r) => setImmediate(r));
  assert.equal(third, false);
  t.tracker.sharedAdvanced(30);
  await waiting3;
  assert.equal(third, true, 'woken once more when the horizon is readable');
  assert.equal(t.notifier.changedSince('events', ['!r'], 30), false, 'above the horizon: from memory again');
});

test('streams kept outside the tracker (typing, presence…) are delivered at once; before the first one is heard, the data decides', async () => {
  const t = await setup(1);
  assert.equal(t.notifier.changedSince('typing', ['!r'], 40), undefined, 'what others notified before this worker listened is unknown');
  let woken = false;
  const waiting = t.notifier.wait(['!r'], token(1), 5_000).then((w) => { woken = w; });
  t.fromOther('typing', ['!r'], 50);
  await waiting;
  assert.equal(woken, true, 'no position gate for these');
  assert.equal(t.notifier.changedSince('typing', ['!r'], 50), false);
  assert.equal(t.notifier.changedSince('typing', ['!r'], 49), undefined, 'before the first one heard: still unknown');
  t.fromOther('typing', ['!r'], 60);
  assert.equal(t.notifier.changedSince('typing', ['!r'], 55), true);
  assert.equal(t.notifier.changedSince('typing', ['!q'], 55), false);
  // Redis lost: unknown again until heard again.
  t.upListeners.forEach((u) => u(false));
  assert.equal(t.notifier.changedSince('typing', ['!q'], 60), undefined);
});
