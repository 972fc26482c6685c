// The token bucket, as pure arithmetic: the in-process limiter runs it, the Redis limiter's Lua
// script (redis-limiter.ts) is the same steps line for line, and the unit tests check it.
//
// Synapse's rc_* semantics: a bucket holds at most `burst` tokens and refills `perSecond` tokens a
// second; an action costs one token and is refused (consuming nothing) when the bucket cannot pay.
// A full bucket is no bucket: it is dropped, so only clients that acted recently take memory.

/** One limit: Synapse's `per_second` and `burst_count`. */
export interface Rule {
  perSecond: number;
  burst: number;
}

/** What a bucket remembers between actions. */
export interface BucketState {
  tokens: number;
  /** When `tokens` was computed (ms). */
  at: number;
  /** Escalating buckets: payments since the bucket was last full (each one past the burst halves the refill). */
  strikes: number;
}

export interface Decision {
  allowed: boolean;
  /** Refused: how long until the action would be allowed (ms, at least 1). */
  retryAfterMs: number;
}

/**
 * The refill of an escalating bucket is halved for every strike past the burst, at most this many
 * times: after failed logins the wait grows 1×, 2×, 4× … 64× the normal refill, then stays there.
 */
export const MAX_ESCALATION = 6;

/** The refill rate of a bucket in this state. */
export function refillRate(rule: Rule, strikes: number): number {
  const over = Math.min(Math.max(strikes - rule.burst, 0), MAX_ESCALATION);
  return rule.perSecond / 2 ** over;
}

export interface Step {
  decision: Decision;
  /** The state to keep; undefined: forget the bucket (full again, or never touched). */
  next: BucketState | undefined;
  /** How long the kept state matters (ms): by then the bucket is full again. */
  ttlMs: number;
}

/**
 * One action against a bucket. `cost` 0 asks without paying (allowed when one token is there), a
 * negative cost refunds; `escalate` counts the payment as a strike (failed logins).
 */
export function step(previous: BucketState | undefined, rule: Rule, cost: number, now: number, escalate = false): Step {
  // A bucket full again is forgotten with its strikes, as its key expires in Redis.
  const state = previous && !isFull(previous, rule, now) ? previous : undefined;
  let strikes = state?.strikes ?? 0;
  const rate = refillRate(rule, strikes);
  const elapsed = state ? Math.max(0, now - state.at) : 0;
  let tokens = state ? Math.min(rule.burst, state.tokens + (elapsed / 1000) * rate) : rule.burst;
  if (cost < 0) {
    // A refund (an action paid for in advance that did not happen): always allowed, never above the burst.
    tokens = Math.min(rule.burst, tokens - cost);
    if (tokens >= rule.burst && strikes === 0) return { decision: { allowed: true, retryAfterMs: 0 }, next: undefined, ttlMs: 0 };
    return { decision: { allowed: true, retryAfterMs: 0 }, next: { tokens, at: now, strikes }, ttlMs: ttl(rule, tokens, strikes) };
  }
  const need = Math.max(cost, 1);
  if (tokens < need) {
    const retryAfterMs = rate > 0 ? Math.max(1, Math.ceil(((need - tokens) / rate) * 1000)) : 2 ** 31 - 1;
    return { decision: { allowed: false, retryAfterMs }, next: state, ttlMs: ttl(rule, tokens, strikes) };
  }
  tokens -= cost;
  if (escalate && cost > 0) strikes++;
  // Full again with nothing to remember: the bucket goes.
  if (tokens >= rule.burst && strikes === 0) return { decision: { allowed: true, retryAfterMs: 0 }, next: undefined, ttlMs: 0 };
  return { decision: { allowed: true, retryAfterMs: 0 }, next: { tokens, at: now, strikes }, ttlMs: ttl(rule, tokens, strikes) };
}

/** Time until a bucket with these tokens is full again (and its strikes forgotten with it). */
function ttl(rule: Rule, tokens: number, strikes: number): number {
  const rate = refillRate(rule, strikes);
  if (rate <= 0) return 24 * 3600_000;
  return Math.ceil(((rule.burst - tokens) / rate) * 1000) + 1000;
}

/** Whether a state has refilled completely by `now` (and so can be forgotten). */
export function isFull(state: BucketState, rule: Rule, now: number): boolean {
  return state.tokens + ((now - state.at) / 1000) * refillRate(rule, state.strikes) >= rule.burst;
}
