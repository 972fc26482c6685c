// The Lua script that computes the readable position over every worker's floor (needs a Redis:
// TEST_REDIS_URL, default the local one; skipped when none answers).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient } from 'redis';
import { POSITIONS_SCRIPT } from '../../homeserver/coordination/positions.ts';

const url = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const make = () => createClient({ url, socket: { connectTimeout: 1_000, reconnectStrategy: false } });
let client: ReturnType<typeof make> | undefined;
before(async () => {
  const c = make();
  c.on('error', () => {});
  try { await c.connect(); client = c; } catch { client = undefined; }
});
after(async () => { client?.destroy(); });

function state() {
  const p = `unit-${randomBytes(4).toString('hex')}:`;
  const keys = ['floors', 'leases', 'maxdone', 'readable', 'epoch'].map((k) => p + k);
  const channel = `${p}channel`;
  const heard: number[] = [];
  /** One report: worker, floor, done, lease, grace, readable here. Returns [readable, grace]. */
  const report = async (worker: string, o: { floor?: number; done?: number; lease?: number; grace?: number; here?: number } = {}) =>
    (await client!.sendCommand(['EVAL', POSITIONS_SCRIPT, '5', ...keys, worker, o.floor === undefined ? '' : String(o.floor), o.done === undefined ? '' : String(o.done),
      String(o.lease ?? 5_000), String(o.grace ?? 0), channel, o.here === undefined ? '' : String(o.here)])) as [number, number];
  const cleanup = () => client!.del(keys);
  return { report, heard, channel, cleanup };
}

test('readable = min(highest done, every floor), published when it moves, never backwards', async () => {
  assert.ok(client, 'Redis (TEST_REDIS_URL) answers: npm test needs it');
  const s = state();
  const sub = client.duplicate();
  await sub.connect();
  await sub.subscribe(s.channel, (m) => s.heard.push(Number(m)));
  try {
    assert.deepEqual(await s.report('w1', { floor: 10 }), [0, 0], 'nothing done yet');
    assert.deepEqual(await s.report('w2', { done: 15 }), [10, 0], 'w1 may still commit 11..: readers stop at its floor');
    assert.deepEqual(await s.report('w1', { floor: 12 }), [12, 0], 'w1 raised its floor');
    assert.deepEqual(await s.report('w1', { done: 13 }), [15, 0], 'w1 done: up to the highest done');
    assert.deepEqual(await s.report('w3', { floor: 14 }), [15, 0], 'a floor below readable (a stale view) does not move it back');
    assert.deepEqual(await s.report('w3', { done: 16 }), [16, 0]);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(s.heard, [0, 10, 12, 15, 16], 'every advance published, in order');
  } finally {
    sub.destroy();
    await s.cleanup();
  }
});

test('a dead worker\'s floor lapses with its lease', async () => {
  assert.ok(client, 'Redis (TEST_REDIS_URL) answers: npm test needs it');
  const s = state();
  try {
    await s.report('dead', { floor: 5, lease: 100 });
    assert.deepEqual(await s.report('live', { done: 9 }), [5, 0], 'held by the floor');
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(await s.report('live', {}), [9, 0], 'the lease lapsed: readable moves on');
  } finally {
    await s.cleanup();
  }
});

test('a fresh (or restarted) state is not trusted during its grace period; a worker\'s own readable position seeds it', async () => {
  assert.ok(client, 'Redis (TEST_REDIS_URL) answers: npm test needs it');
  const s = state();
  try {
    assert.deepEqual(await s.report('w1', { done: 7, grace: 200 }), [-1, 1], 'in grace: nothing computed');
    assert.deepEqual(await s.report('w1', { here: 3, grace: 200 }), [-1, 1]);
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(await s.report('w1', { here: 40, grace: 200 }), [40, 0], 'what a worker reads already is readable');
    assert.deepEqual(await s.report('w2', { floor: 35, grace: 200 }), [40, 0]);
  } finally {
    await s.cleanup();
  }
});
