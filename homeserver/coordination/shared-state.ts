import { randomBytes } from 'node:crypto';
import type { RedisHub } from './hub.ts';

/**
 * Nonces outstanding at once, per kind. Unauthenticated requests issue them (the shared-secret
 * registration nonce): past the cap the oldest is dropped, so a flood cannot grow memory or Redis
 * without bound; it can only make a real caller ask again.
 */
export const MAX_NONCES = 1_000;

/**
 * Small pieces of state every worker must agree on: one-time nonces and short-lived locks. In
 * Redis when there is one (keys under REDIS_PREFIX), in this process otherwise.
 */
export interface SharedState {
  /** A fresh one-time nonce, valid for `ttlMs` (at most MAX_NONCES of a kind are valid at once). */
  issueNonce(kind: string, ttlMs: number): Promise<string>;
  /** True once for a nonce that was issued and has not expired; false after. */
  consumeNonce(kind: string, nonce: string): Promise<boolean>;
  /** Takes `name` for `ttlMs` with this value; the value holding it otherwise. */
  tryLock(name: string, value: string, ttlMs: number): Promise<{ ok: true } | { ok: false; holder: string }>;
  unlock(name: string, value: string): Promise<void>;
}

export class LocalState implements SharedState {
  /** Per kind, nonce → expiry, in issue order (a Map keeps insertion order: the first is the oldest). */
  private nonces = new Map<string, Map<string, number>>();
  private locks = new Map<string, { value: string; until: number }>();

  async issueNonce(kind: string, ttlMs: number): Promise<string> {
    const nonce = randomBytes(16).toString('hex');
    const now = Date.now();
    let ofKind = this.nonces.get(kind);
    if (!ofKind) this.nonces.set(kind, (ofKind = new Map()));
    // Every nonce of a kind has the same lifetime, so the expired ones are at the front.
    for (const [n, until] of ofKind) {
      if (until >= now && ofKind.size < MAX_NONCES) break;
      ofKind.delete(n);
    }
    ofKind.set(nonce, now + ttlMs);
    return nonce;
  }

  async consumeNonce(kind: string, nonce: string): Promise<boolean> {
    const ofKind = this.nonces.get(kind);
    const until = ofKind?.get(nonce);
    ofKind?.delete(nonce);
    return until !== undefined && until >= Date.now();
  }

  /** Nonces held (for tests of the cap). */
  nonceCount(kind: string): number {
    return this.nonces.get(kind)?.size ?? 0;
  }

  async tryLock(name: string, value: string, ttlMs: number): Promise<{ ok: true } | { ok: false; holder: string }> {
    const held = this.locks.get(name);
    if (held && held.until > Date.now()) return { ok: false, holder: held.value };
    this.locks.set(name, { value, until: Date.now() + ttlMs });
    return { ok: true };
  }

  async unlock(name: string, value: string): Promise<void> {
    if (this.locks.get(name)?.value === value) this.locks.delete(name);
  }
}

const UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/** Nonces of a kind in one sorted set scored by expiry: expired ones and those past the cap are dropped on each issue. */
const ISSUE_NONCE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`;
/** True (1) once for a nonce still in the set and not expired. */
const CONSUME_NONCE = `
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(expiry) < tonumber(ARGV[2]) then return 0 end
return 1`;

export class RedisState implements SharedState {
  constructor(private hub: RedisHub) {}

  async issueNonce(kind: string, ttlMs: number): Promise<string> {
    const nonce = randomBytes(16).toString('hex');
    const now = Date.now();
    await this.hub.cmd.sendCommand(['EVAL', ISSUE_NONCE, '1', this.hub.key(`nonces:${kind}`), String(now), String(now + ttlMs), nonce, String(MAX_NONCES), String(ttlMs)]);
    return nonce;
  }

  async consumeNonce(kind: string, nonce: string): Promise<boolean> {
    return Number(await this.hub.cmd.sendCommand(['EVAL', CONSUME_NONCE, '1', this.hub.key(`nonces:${kind}`), nonce, String(Date.now())])) === 1;
  }

  async tryLock(name: string, value: string, ttlMs: number): Promise<{ ok: true } | { ok: false; holder: string }> {
    const key = this.hub.key(`lock:${name}`);
    const r = await this.hub.cmd.sendCommand(['SET', key, value, 'NX', 'PX', String(ttlMs), 'GET']);
    if (r === null) return { ok: true };
    return { ok: false, holder: String(r) };
  }

  async unlock(name: string, value: string): Promise<void> {
    await this.hub.cmd.sendCommand(['EVAL', UNLOCK, '1', this.hub.key(`lock:${name}`), value]);
  }
}
