import type { Logger } from 'pino';
import type { Redis } from '../coordination/redis.ts';
import { MAX_ESCALATION, isFull, step, type BucketState, type Decision, type Rule } from './bucket.ts';

/**
 * Token buckets keyed by a string (limiter name + user, address or room). The in-process
 * implementation serves one worker; the Redis one is shared by every worker on REDIS_PREFIX.
 */
export interface RateLimiter {
  /** Pays `cost` tokens (0: only asks; negative: refunds) from `key`'s bucket; `escalate` counts it as a strike. */
  take(key: string, rule: Rule, cost?: number, escalate?: boolean): Promise<Decision>;
  /** Forgets `key`'s bucket (a successful login clears its failures). */
  reset(key: string): Promise<void>;
  close(): void;
}

/** Buckets kept at most (an address-rotating flood cannot grow the map past this). */
const LOCAL_CAPACITY = 100_000;
/** How often buckets that are full again are swept out. */
const SWEEP_MS = 10_000;

export class LocalRateLimiter implements RateLimiter {
  // A Map keeps insertion order: re-inserting on use makes the first entry the least recently used.
  private buckets = new Map<string, { state: BucketState; rule: Rule }>();
  private timer: NodeJS.Timeout;

  constructor(private now: () => number = Date.now, private capacity = LOCAL_CAPACITY) {
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  get size(): number { return this.buckets.size; }

  async take(key: string, rule: Rule, cost = 1, escalate = false): Promise<Decision> {
    return this.takeSync(key, rule, cost, escalate);
  }

  takeSync(key: string, rule: Rule, cost = 1, escalate = false): Decision {
    const held = this.buckets.get(key);
    const s = step(held?.state, rule, cost, this.now(), escalate);
    if (!s.decision.allowed) return s.decision;
    if (held) this.buckets.delete(key);
    if (s.next) {
      // Full: the least recently used bucket goes (it is the most likely to be full again anyway).
      if (this.buckets.size >= this.capacity) this.buckets.delete(this.buckets.keys().next().value as string);
      this.buckets.set(key, { state: s.next, rule });
    }
    return s.decision;
  }

  async reset(key: string): Promise<void> { this.buckets.delete(key); }

  /** Drops every bucket that has refilled completely. */
  sweep(): void {
    const now = this.now();
    for (const [key, b] of this.buckets) if (isFull(b.state, b.rule, now)) this.buckets.delete(key);
  }

  close(): void { clearInterval(this.timer); }
}

/**
 * bucket.ts's step() in Lua, atomic in Redis. The clock is Redis's own (TIME), so workers whose
 * clocks differ still agree. Fields: t tokens, a when (ms), s strikes. Returns {allowed, retryAfterMs}.
 */
export const TAKE_SCRIPT = `
local rate0 = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local escalate = tonumber(ARGV[4])
local maxEsc = tonumber(ARGV[5])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function rate(strikes)
  local over = math.min(math.max(strikes - burst, 0), maxEsc)
  return rate0 / (2 ^ over)
end
local h = redis.call('HMGET', KEYS[1], 't', 'a', 's')
local tokens = burst
local strikes = 0
if h[1] then
  local s = tonumber(h[3]) or 0
  local t = tonumber(h[1]) + math.max(0, now - tonumber(h[2])) / 1000 * rate(s)
  if t < burst then
    tokens = t
    strikes = s
  end
end
if cost < 0 then
  tokens = math.min(burst, tokens - cost)
  if tokens >= burst and strikes == 0 then
    redis.call('DEL', KEYS[1])
    return {1, 0}
  end
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'a', tostring(now), 's', tostring(strikes))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate(strikes) * 1000) + 1000)
  return {1, 0}
end
local need = math.max(cost, 1)
if tokens < need then
  return {0, math.max(1, math.ceil((need - tokens) / rate(strikes) * 1000))}
end
tokens = tokens - cost
if escalate == 1 and cost > 0 then strikes = strikes + 1 end
if tokens >= burst and strikes == 0 then
  redis.call('DEL', KEYS[1])
  return {1, 0}
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'a', tostring(now), 's', tostring(strikes))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate(strikes) * 1000) + 1000)
return {1, 0}
`;

export class RedisRateLimiter implements RateLimiter {
  private sha: string | undefined;
  private outage = false;

  constructor(private redis: Redis, private prefix: string, private log: Logger) {}

  async take(key: string, rule: Rule, cost = 1, escalate = false): Promise<Decision> {
    const args = [String(rule.perSecond), String(rule.burst), String(cost), escalate ? '1' : '0', String(MAX_ESCALATION)];
    try {
      let r: unknown;
      try {
        this.sha ??= String(await this.redis.sendCommand(['SCRIPT', 'LOAD', TAKE_SCRIPT]));
        r = await this.redis.sendCommand(['EVALSHA', this.sha, '1', this.prefix + key, ...args]);
      } catch (err) {
        // Redis restarted and forgot the script: load it again once.
        if (!/NOSCRIPT/.test((err as Error).message)) throw err;
        this.sha = undefined;
        r = await this.redis.sendCommand(['EVAL', TAKE_SCRIPT, '1', this.prefix + key, ...args]);
      }
      if (this.outage) { this.outage = false; this.log.info('rate limits in redis answer again'); }
      const [allowed, wait] = r as [number, number];
      return { allowed: allowed === 1, retryAfterMs: Number(wait) };
    } catch (err) {
      // Redis away: every request would fail if limits failed closed; they fail open, said once.
      if (!this.outage) { this.outage = true; this.log.warn({ err: (err as Error).message }, 'rate limits unavailable (redis): allowing requests until it answers'); }
      return { allowed: true, retryAfterMs: 0 };
    }
  }

  async reset(key: string): Promise<void> {
    await this.redis.sendCommand(['DEL', this.prefix + key]).catch(() => {});
  }

  close(): void {}
}
