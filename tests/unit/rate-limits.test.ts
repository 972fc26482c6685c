// The token bucket's arithmetic (limits/bucket.ts), the in-process limiter's bounds, the Redis
// limiter's Lua script giving the same answers, and the client address behind trusted proxies.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { createClient } from 'redis';
import { pino } from 'pino';
import { MAX_ESCALATION, step, type BucketState, type Rule } from '../../homeserver/limits/bucket.ts';
import { LocalRateLimiter, RedisRateLimiter } from '../../homeserver/limits/limiter.ts';
import { RateLimits } from '../../homeserver/limits/service.ts';
import { LIMITERS, LIMITER_NAMES, type Rules } from '../../homeserver/limits/rules.ts';
import { type MatrixError, forbidden } from '../../homeserver/http/errors.ts';
import type { Context } from 'koa';
import { TrustedProxies, clientAddress } from '../../homeserver/http/client-address.ts';
import { loadConfig } from '../../homeserver/config.ts';
import { StartupError } from '../../homeserver/startup-error.ts';
import type { Redis } from '../../homeserver/coordination/redis.ts';

const rule: Rule = { perSecond: 2, burst: 3 };

/** Runs actions at the given times (ms) against one bucket, returning the decisions. */
function run(times: number[], r = rule, cost = 1): Array<{ allowed: boolean; retryAfterMs: number }> {
  let state: BucketState | undefined;
  return times.map((t) => {
    const s = step(state, r, cost, t);
    if (s.decision.allowed) state = s.next;
    return s.decision;
  });
}

describe('token bucket', () => {
  test('a burst is allowed at once, the next action waits for one token', () => {
    const d = run([0, 0, 0, 0]);
    assert.deepEqual(d.map((x) => x.allowed), [true, true, true, false]);
    assert.equal(d[3]!.retryAfterMs, 500); // 2 tokens a second: one token in 500 ms
  });

  test('tokens refill at per_second, never above the burst', () => {
    // Three at 0; at 500 ms one token is back; at 10 s the bucket is full (3), not 20.
    const d = run([0, 0, 0, 500, 501, 10_000, 10_000, 10_000, 10_000]);
    assert.deepEqual(d.map((x) => x.allowed), [true, true, true, true, false, true, true, true, false]);
  });

  test('a refused action consumes nothing', () => {
    let state: BucketState | undefined;
    for (let i = 0; i < 3; i++) state = step(state, rule, 1, 0).next;
    for (let i = 0; i < 100; i++) assert.equal(step(state, rule, 1, 100).decision.allowed, false);
    assert.equal(step(state, rule, 1, 500).decision.allowed, true);
  });

  test('cost 0 asks without paying', () => {
    let state: BucketState | undefined;
    for (let i = 0; i < 5; i++) {
      const s = step(state, rule, 0, 0);
      assert.equal(s.decision.allowed, true);
      state = s.next;
    }
    assert.equal(state, undefined, 'asking leaves no bucket behind');
  });

  test('a negative cost refunds, never above the burst', () => {
    let state: BucketState | undefined;
    for (let i = 0; i < 3; i++) state = step(state, rule, 1, 0).next;
    assert.equal(step(state, rule, 1, 0).decision.allowed, false);
    state = step(state, rule, -1, 0).next;
    assert.equal(step(state, rule, 1, 0).decision.allowed, true);
    // Refunding a full bucket leaves no bucket.
    assert.equal(step(undefined, rule, -1, 0).next, undefined);
  });

  test('a bucket that is full again is forgotten', () => {
    const s1 = step(undefined, rule, 1, 0);
    assert.ok(s1.next);
    assert.ok(s1.ttlMs > 0 && s1.ttlMs <= 1500 + 1000, `ttl ${s1.ttlMs}`);
    const s2 = step(s1.next, rule, 0, 10_000);
    assert.equal(s2.next, undefined);
  });

  test('escalating: each strike past the burst doubles the wait, up to the cap; a full bucket forgets', () => {
    const r: Rule = { perSecond: 1, burst: 2 };
    let state: BucketState | undefined;
    let t = 0;
    const waits: number[] = [];
    for (let i = 0; i < 12; i++) {
      let s = step(state, r, 1, t, true);
      if (!s.decision.allowed) {
        waits.push(s.decision.retryAfterMs);
        t += s.decision.retryAfterMs;
        s = step(state, r, 1, t, true);
      }
      assert.ok(s.decision.allowed);
      state = s.next;
    }
    // After the burst of 2: 1 s, 2 s, 4 s … then flat at 2^MAX_ESCALATION s.
    assert.equal(waits[0], 1000);
    for (let i = 1; i < waits.length; i++) assert.ok(waits[i]! >= waits[i - 1]!, `waits grow: ${waits.join(', ')}`);
    assert.equal(Math.max(...waits), 1000 * 2 ** MAX_ESCALATION);
    // Long enough later the bucket is full: strikes forgotten, the burst is back.
    const later = t + 3600_000;
    assert.equal(step(state, r, 1, later, true).decision.allowed, true);
    assert.equal(step(state, r, 1, later, true).next?.strikes, 1);
  });
});

describe('in-process limiter', () => {
  test('buckets full again are swept; the map never exceeds its capacity', async () => {
    let clock = 0;
    const l = new LocalRateLimiter(() => clock, 1_000);
    try {
      for (let i = 0; i < 5_000; i++) await l.take(`k${i}`, rule);
      assert.ok(l.size <= 1_000, `size ${l.size}`);
      clock = 60_000;
      l.sweep();
      assert.equal(l.size, 0);
    } finally { l.close(); }
  });

  test('reset forgets a bucket', async () => {
    const l = new LocalRateLimiter(() => 0);
    try {
      for (let i = 0; i < 3; i++) await l.take('x', rule);
      assert.equal((await l.take('x', rule)).allowed, false);
      await l.reset('x');
      assert.equal((await l.take('x', rule)).allowed, true);
    } finally { l.close(); }
  });
});

describe('rate limits service', () => {
  const rules = (over: Partial<Rules>): Rules => ({ ...Object.fromEntries(LIMITER_NAMES.map((n) => [n, { perSecond: LIMITERS[n].perSecond, burst: LIMITERS[n].burst }])), ...over }) as Rules;
  const ctx = (requester?: object) => ({ ip: '192.0.2.1', state: { requester } }) as unknown as Context;

  test('concurrent wrong passwords: no more reach the password check than the failed-login burst', async () => {
    const l = new LocalRateLimiter();
    const limits = new RateLimits(l, rules({ login_failed: { perSecond: 0.001, burst: 3 }, login_address: { perSecond: 1, burst: 1000 } }), undefined, undefined, 'example.org');
    let checked = 0;
    const attempt = async () => { checked++; await new Promise((r) => setTimeout(r, 20)); throw forbidden('Invalid username or password'); };
    const answers = await Promise.allSettled(Array.from({ length: 20 }, () => limits.login(ctx(), '@Bob:example.org', attempt)));
    const codes = answers.map((a) => ((a as PromiseRejectedResult).reason as MatrixError).errcode);
    assert.equal(checked, 3);
    assert.equal(codes.filter((c) => c === 'M_FORBIDDEN').length, 3);
    assert.equal(codes.filter((c) => c === 'M_LIMIT_EXCEEDED').length, 17);
    // `bob` is the same account as `@Bob:example.org`.
    await assert.rejects(limits.login(ctx(), 'bob', attempt), (e: MatrixError) => e.errcode === 'M_LIMIT_EXCEEDED');
    l.close();
  });

  test('a success clears the failures; admins and 0/0 overrides are exempt from per-user limits', async () => {
    const l = new LocalRateLimiter();
    const overrides = new Map([['@bot:x', { messagesPerSecond: 0, burstCount: 0 }]]);
    const store = { get: async (u: string) => overrides.get(u), set: async () => {}, delete: async () => {} };
    const limits = new RateLimits(l, rules({ login_failed: { perSecond: 0.001, burst: 2 }, message: { perSecond: 0.001, burst: 1 } }), store, undefined, 'x');
    await assert.rejects(limits.login(ctx(), 'carol', async () => { throw forbidden('no'); }));
    await limits.login(ctx(), 'carol', async () => 'ok');
    await assert.rejects(limits.login(ctx(), 'carol', async () => { throw forbidden('no'); }), (e: MatrixError) => e.errcode === 'M_FORBIDDEN');
    await assert.rejects(limits.login(ctx(), 'carol', async () => { throw forbidden('no'); }), (e: MatrixError) => e.errcode === 'M_FORBIDDEN');
    for (const who of [{ userId: '@admin:x', isAdmin: true }, { userId: '@bot:x', isAdmin: false }]) {
      for (let i = 0; i < 5; i++) await limits.check('message', who.userId, ctx(who));
    }
    await limits.check('message', '@dave:x', ctx({ userId: '@dave:x', isAdmin: false }));
    await assert.rejects(limits.check('message', '@dave:x', ctx({ userId: '@dave:x', isAdmin: false })), (e: MatrixError) => e.status === 429 && e.headers['Retry-After'] === String(Math.ceil((e.extra.retry_after_ms as number) / 1000)));
    l.close();
  });

  test('pace waits a short wait out, refuses a long one', async () => {
    const l = new LocalRateLimiter();
    const limits = new RateLimits(l, rules({ sync: { perSecond: 10, burst: 1 } }), undefined, undefined);
    await limits.pace('sync', 't', ctx(), 1_000);
    const t0 = performance.now();
    await limits.pace('sync', 't', ctx(), 1_000);
    assert.ok(performance.now() - t0 >= 50, 'the second waited for its token');
    await assert.rejects(limits.pace('sync', 't', ctx(), 10), (e: MatrixError) => e.errcode === 'M_LIMIT_EXCEEDED');
    l.close();
  });

  test('off: nothing is refused', async () => {
    const limits = RateLimits.off();
    for (let i = 0; i < 100; i++) await limits.check('registration', '192.0.2.1', ctx());
  });
});

describe('redis limiter', () => {
  let redis: Redis | undefined;
  after(() => { redis?.destroy(); });

  test('the Lua script agrees with the arithmetic, keys carry a TTL, full buckets leave no key', async () => {
    const client = createClient({ url: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379', socket: { connectTimeout: 1_000, reconnectStrategy: false } });
    client.on('error', () => {});
    await client.connect();
    redis = client as unknown as Redis;
    const prefix = `unit-rl-${randomBytes(4).toString('hex')}:`;
    const l = new RedisRateLimiter(redis, prefix, pino({ level: 'silent' }));
    const slow: Rule = { perSecond: 0.5, burst: 3 };
    const d = [];
    for (let i = 0; i < 4; i++) d.push(await l.take('a', slow));
    assert.deepEqual(d.map((x) => x.allowed), [true, true, true, false]);
    assert.ok(d[3]!.retryAfterMs > 1500 && d[3]!.retryAfterMs <= 2000, `retry ${d[3]!.retryAfterMs}`);
    const ttl = Number(await redis.sendCommand(['PTTL', `${prefix}a`]));
    assert.ok(ttl > 0 && ttl <= 7_000, `ttl ${ttl}`);
    // Asking only (cost 0) writes nothing.
    assert.equal((await l.take('b', slow, 0)).allowed, true);
    assert.equal(Number(await redis.sendCommand(['EXISTS', `${prefix}b`])), 0);
    // Escalation: strikes are remembered in the hash.
    for (let i = 0; i < 3; i++) await l.take('f', slow, 1, true);
    assert.equal(String(await redis.sendCommand(['HGET', `${prefix}f`, 's'])), '3');
    // A refund gives a token back.
    assert.equal((await l.take('a', slow)).allowed, false);
    await l.take('a', slow, -1);
    assert.equal((await l.take('a', slow)).allowed, true);
    await l.reset('f');
    assert.equal(Number(await redis.sendCommand(['EXISTS', `${prefix}f`])), 0);
    // A fast bucket refills: after its refill time, allowed again.
    const fast: Rule = { perSecond: 20, burst: 1 };
    assert.equal((await l.take('c', fast)).allowed, true);
    assert.equal((await l.take('c', fast)).allowed, false);
    await new Promise((r) => setTimeout(r, 80));
    assert.equal((await l.take('c', fast)).allowed, true);
    await redis.sendCommand(['DEL', `${prefix}a`, `${prefix}c`]);
  });
});

describe('client address', () => {
  const req = (peer: string, headers: Record<string, string> = {}) => ({ socket: { remoteAddress: peer }, headers }) as unknown as IncomingMessage;
  const loopback = new TrustedProxies('127.0.0.1/8,::1');

  test('a peer that is not a trusted proxy is the client, whatever its headers say', () => {
    const other = new TrustedProxies('10.0.0.1');
    assert.equal(clientAddress(req('127.0.0.1', { 'x-forwarded-for': '1.2.3.4' }), other), '127.0.0.1');
    assert.equal(clientAddress(req('203.0.113.9', { 'x-forwarded-for': '1.2.3.4', forwarded: 'for=5.6.7.8' }), loopback), '203.0.113.9');
    assert.equal(clientAddress(req('::ffff:203.0.113.9'), loopback), '203.0.113.9');
  });

  test('behind a trusted proxy: the nearest hop that is not a trusted proxy', () => {
    assert.equal(clientAddress(req('127.0.0.1', { 'x-forwarded-for': '198.51.100.7' }), loopback), '198.51.100.7');
    // A client-written first entry is skipped: the proxy appended the address it saw.
    assert.equal(clientAddress(req('127.0.0.1', { 'x-forwarded-for': '6.6.6.6, 198.51.100.7' }), loopback), '198.51.100.7');
    assert.equal(clientAddress(req('::1', { 'x-forwarded-for': '198.51.100.7, 127.0.0.2' }), loopback), '198.51.100.7');
    assert.equal(clientAddress(req('127.0.0.1', { forwarded: 'for="[2001:db8::1]:4711";proto=https' }), loopback), '2001:db8::1');
    assert.equal(clientAddress(req('127.0.0.1', { forwarded: 'for=192.0.2.60:80, for=198.51.100.7' }), loopback), '198.51.100.7');
    // Garbage stops the walk at the proxy that wrote it.
    assert.equal(clientAddress(req('127.0.0.1', { 'x-forwarded-for': 'not-an-ip' }), loopback), '127.0.0.1');
    assert.equal(clientAddress(req('127.0.0.1', { forwarded: 'for=unknown' }), loopback), '127.0.0.1');
    assert.equal(clientAddress(req('127.0.0.1'), loopback), '127.0.0.1');
    assert.equal(clientAddress(req('127.0.0.1', { 'x-forwarded-for': '198.51.100.7' }), new TrustedProxies('')), '127.0.0.1');
  });

  test('TRUSTED_PROXIES and the limits are checked at start-up', () => {
    assert.throws(() => new TrustedProxies('127.0.0.1/33'), StartupError);
    assert.throws(() => new TrustedProxies('localhost'), StartupError);
    assert.throws(() => loadConfig({ TRUSTED_PROXIES: '10.0.0.0/8,nope' }), /TRUSTED_PROXIES.*"nope"/);
    assert.throws(() => loadConfig({ RC_MESSAGE_PER_SECOND: '0' }), /RC_MESSAGE_PER_SECOND="0" is not valid/);
    assert.throws(() => loadConfig({ RC_MESSAGE_BURST: 'lots' }), /RC_MESSAGE_BURST/);
    assert.throws(() => loadConfig({ RATE_LIMITS: 'maybe' }), /RATE_LIMITS accepts on or off/);
    const c = loadConfig({ RC_LOGIN_ADDRESS_PER_SECOND: '0.5', RC_LOGIN_ADDRESS_BURST: '7', ROOMS_PER_HOUR: '36' });
    assert.deepEqual(c.rateLimitRules.login_address, { perSecond: 0.5, burst: 7 });
    assert.deepEqual(c.rateLimitRules.rooms_per_hour, { perSecond: 0.01, burst: 36 });
    assert.equal(c.rateLimits, true, 'limits are on by default');
    assert.equal(loadConfig({ RATE_LIMITS: 'off' }).rateLimits, false);
    assert.ok(c.trustedProxies.empty, 'no proxy is trusted unless configured');
    const behindCaddy = loadConfig({ TRUSTED_PROXIES: '127.0.0.1/8,::1' }).trustedProxies;
    assert.ok(behindCaddy.has('127.0.0.53') && behindCaddy.has('::1') && !behindCaddy.has('10.0.0.1'));
  });
});
