import { randomBytes } from 'node:crypto';
import type { RedisHub } from './hub.ts';

/**
 * Small pieces of state every worker must agree on: one-time nonces and short-lived locks. In
 * Redis when there is one (keys under REDIS_PREFIX), in this process otherwise.
 */
export interface SharedState {
  /** A fresh one-time nonce, valid for `ttlMs`. */
  issueNonce(kind: string, ttlMs: number): Promise<string>;
  /** True once for a nonce that was issued and has not expired; false after. */
  consumeNonce(kind: string, nonce: string): Promise<boolean>;
  /** Takes `name` for `ttlMs` with this value; the value holding it otherwise. */
  tryLock(name: string, value: string, ttlMs: number): Promise<{ ok: true } | { ok: false; holder: string }>;
  unlock(name: string, value: string): Promise<void>;
}

export class LocalState implements SharedState {
  private nonces = new Map<string, number>();
  private locks = new Map<string, { value: string; until: number }>();

  async issueNonce(kind: string, ttlMs: number): Promise<string> {
    const nonce = randomBytes(16).toString('hex');
    const now = Date.now();
    for (const [n, until] of this.nonces) if (until < now) this.nonces.delete(n);
    this.nonces.set(`${kind}:${nonce}`, now + ttlMs);
    return nonce;
  }

  async consumeNonce(kind: string, nonce: string): Promise<boolean> {
    const until = this.nonces.get(`${kind}:${nonce}`);
    this.nonces.delete(`${kind}:${nonce}`);
    return until !== undefined && until >= Date.now();
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

export class RedisState implements SharedState {
  constructor(private hub: RedisHub) {}

  async issueNonce(kind: string, ttlMs: number): Promise<string> {
    const nonce = randomBytes(16).toString('hex');
    await this.hub.cmd.sendCommand(['SET', this.hub.key(`nonce:${kind}:${nonce}`), '1', 'PX', String(ttlMs)]);
    return nonce;
  }

  async consumeNonce(kind: string, nonce: string): Promise<boolean> {
    return (await this.hub.cmd.sendCommand(['GETDEL', this.hub.key(`nonce:${kind}:${nonce}`)])) !== null;
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
