// One-time nonces (shared-secret registration) are capped and expire, in process and in Redis
// (issue 7: unauthenticated requests issue them, so they must not pile up). Redis: TEST_REDIS_URL,
// default the local one; npm test needs it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient } from 'redis';
import { LocalState, MAX_NONCES, RedisState, type SharedState } from '../../homeserver/coordination/shared-state.ts';
import type { RedisHub } from '../../homeserver/coordination/hub.ts';

const url = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const make = () => createClient({ url, socket: { connectTimeout: 1_000, reconnectStrategy: false } });
let client: ReturnType<typeof make> | undefined;
before(async () => {
  const c = make();
  c.on('error', () => {});
  try { await c.connect(); client = c; } catch { client = undefined; }
});
after(async () => { client?.destroy(); });

/** RedisState needs only the command connection and the key prefix of a hub. */
function redisState(): { state: RedisState; size: () => Promise<number> } {
  assert.ok(client, 'Redis (TEST_REDIS_URL) answers: npm test needs it');
  const prefix = `unit-nonces-${randomBytes(4).toString('hex')}:`;
  const hub = { cmd: client, key: (name: string) => `${prefix}${name}` } as unknown as RedisHub;
  return { state: new RedisState(hub), size: async () => Number(await client!.zCard(`${prefix}nonces:register`)) };
}

async function capAndExpiry(state: SharedState, size: () => Promise<number>): Promise<void> {
  const first = await state.issueNonce('register', 60_000);
  const rest: string[] = [];
  for (let i = 0; i < MAX_NONCES + 200; i++) rest.push(await state.issueNonce('register', 60_000));
  assert.equal(await size(), MAX_NONCES, 'at most MAX_NONCES held');
  assert.equal(await state.consumeNonce('register', first), false, 'the oldest went first');
  const last = rest[rest.length - 1]!;
  assert.equal(await state.consumeNonce('register', last), true, 'a recent one is valid');
  assert.equal(await state.consumeNonce('register', last), false, 'once');
  assert.equal(await state.consumeNonce('other-kind', rest[rest.length - 2]!), false, 'kinds do not mix');

  const short = await state.issueNonce('register', 50);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(await state.consumeNonce('register', short), false, 'an expired nonce is refused');
}

test('in process: nonces capped at MAX_NONCES (oldest dropped), used once, expired refused', async () => {
  const state = new LocalState();
  await capAndExpiry(state, async () => state.nonceCount('register'));
  // Expired nonces are dropped when the next is issued.
  const local = new LocalState();
  for (let i = 0; i < 10; i++) await local.issueNonce('register', 10);
  await new Promise((r) => setTimeout(r, 30));
  await local.issueNonce('register', 60_000);
  assert.equal(local.nonceCount('register'), 1);
});

test('in Redis: the same cap and expiry, shared by every worker', async () => {
  const { state, size } = redisState();
  await capAndExpiry(state, size);
});
