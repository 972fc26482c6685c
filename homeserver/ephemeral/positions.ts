import type { Logger } from 'pino';
import type { Redis } from '../coordination/redis.ts';

/**
 * Positions of the streams kept outside PostgreSQL (typing, presence). They must never go
 * backwards, not even across a restart or a switch between the in-process and the Redis
 * implementation: a position is the larger of "last + 1" and the wall clock in milliseconds, so
 * a restarted process (or a Redis that lost its counter) starts past every token it ever gave.
 */
export function nextPos(last: number): number {
  return Math.max(last + 1, Date.now());
}

/**
 * Lua: the next position of the counter at KEYS[n] (the same rule as nextPos, atomically), to be
 * pasted into a script that stores the change under that position in the same call, so a reader
 * never sees position N+1 without N. `now` must be a Lua number in the script.
 */
export const LUA_NEXT_POS = (key: string) => `
local pos = redis.call('INCR', ${key})
if pos < now then redis.call('SET', ${key}, string.format('%d', now)); pos = now end`;

/** A wake-up published by a Lua script: the stream position now readable and the notifier keys. */
export interface Published {
  pos: number;
  keys: string[];
}

/**
 * The other end of the Lua scripts' PUBLISH: a connection of its own in subscriber mode, calling
 * `onMessage` on every worker (the publishing one too) in the order Redis published.
 */
export class Subscription {
  private client: Redis | undefined;

  constructor(private redis: Redis, private channel: string, private onMessage: (m: Published) => void, private log: Logger) {}

  async start(): Promise<void> {
    const client = this.redis.duplicate();
    client.on('error', () => { /* the main client logs outages; this one reconnects by itself */ });
    await client.connect();
    await client.subscribe(this.channel, (raw: string) => {
      try {
        this.onMessage(JSON.parse(raw) as Published);
      } catch (err) {
        this.log.warn({ err, channel: this.channel }, 'unreadable wake-up message');
      }
    });
    this.client = client;
  }

  stop(): void {
    this.client?.destroy();
    this.client = undefined;
  }
}

/**
 * Wakes in batches: changes within `delayMs` of the first one become readable together and wake
 * the union of their keys once, with the newest position (a burst of presence changes, such as a
 * sweep taking many users offline, wakes each long-poll once, not once per change). The readable
 * position moves only here, just before the wake, so no reader sees a position nobody was woken for.
 */
export class WakeBatcher {
  private keys = new Set<string>();
  private newest = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Callers waiting for a position to be readable; a batch holding one is woken at once. */
  private waiters: Array<{ pos: number; resolve: () => void }> = [];

  constructor(public readable: number, private wake: (keys: string[], pos: number) => void, private delayMs: number) {}

  push(keys: Iterable<string>, pos: number): void {
    for (const k of keys) this.keys.add(k);
    if (pos > this.newest) this.newest = pos;
    if (this.delayMs <= 0 || this.waiters.some((w) => w.pos <= this.newest)) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.delayMs);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.newest > this.readable) this.readable = this.newest;
    const keys = [...this.keys];
    this.keys.clear();
    if (keys.length) this.wake(keys, this.readable);
    const ready = this.waiters.filter((w) => w.pos <= this.readable);
    if (ready.length) {
      this.waiters = this.waiters.filter((w) => w.pos > this.readable);
      for (const w of ready) w.resolve();
    }
  }

  /**
   * Resolves once `pos` is readable (its batch is woken at once rather than after the delay), or
   * after `timeoutMs`: a /sync that changed its user's presence then reads past that change.
   */
  reached(pos: number, timeoutMs: number): Promise<void> {
    if (pos <= this.readable) return Promise.resolve();
    if (pos <= this.newest) {
      this.flush();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const w = { pos, resolve: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => { this.waiters = this.waiters.filter((x) => x !== w); resolve(); }, timeoutMs);
      this.waiters.push(w);
    });
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}

/**
 * A bounded cache of values read from Redis, shared by every /sync of this worker that a wake-up
 * sends to read the same thing (1,000 members of a room woken by one typing change read the
 * room's typing once). `invalidate` runs when a published change names the key, before that
 * change becomes readable; a read that was under way then is not stored (generation check).
 */
export class SnapshotCache<V> {
  private values = new Map<string, { at: number; value: V }>();
  private generation = new Map<string, number>();

  constructor(private capacity: number, private ttlMs: number) {}

  invalidate(key: string): void {
    this.values.delete(key);
    this.generation.set(key, (this.generation.get(key) ?? 0) + 1);
    if (this.generation.size > this.capacity) this.generation.delete(this.generation.keys().next().value as string);
  }

  /** The cached values of `keys`, loading the missing ones with one call of `load`. */
  async getMany(keys: string[], load: (missing: string[]) => Promise<Map<string, V>>): Promise<Map<string, V>> {
    const now = Date.now();
    const out = new Map<string, V>();
    const missing: string[] = [];
    for (const k of keys) {
      const hit = this.values.get(k);
      if (hit && now - hit.at < this.ttlMs) out.set(k, hit.value);
      else missing.push(k);
    }
    if (!missing.length) return out;
    const before = missing.map((k) => this.generation.get(k) ?? 0);
    const loaded = await load(missing);
    missing.forEach((k, i) => {
      const v = loaded.get(k);
      if (v === undefined) return;
      out.set(k, v);
      if ((this.generation.get(k) ?? 0) !== before[i]) return;
      if (this.values.size >= this.capacity) this.values.delete(this.values.keys().next().value as string);
      this.values.set(k, { at: now, value: v });
    });
    return out;
  }
}
