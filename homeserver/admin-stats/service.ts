// Live figures for the admin dashboard (issue 12): messages per minute, rate-limit refusals, workers,
// PostgreSQL and Redis health. Each worker counts what it sees (the events it persisted, the 429s it
// answered); with Redis the counts of every worker are summed there, per minute, and each worker
// publishes a heartbeat so the dashboard lists them all. Without Redis the one process is the server.
import type { Middleware } from 'koa';
import type { Redis } from '../coordination/redis.ts';
import type { AdminStatsStore } from './store.ts';

/** Minutes of history the dashboard's charts show. */
export const MINUTES = 30;
const HEARTBEAT_MS = 5_000;
const WORKER_STALE_MS = 15_000;
const SHARE_MS = 1_000;

export type Counter = 'messages' | 'refusals';

export interface WorkerInfo { id: string; pid: number; started_ts: number; seen_ts: number; rss_bytes: number; heap_used_bytes: number }

export interface StatsDeps {
  store: AdminStatsStore;
  redis?: Redis;
  redisPrefix: string;
  workerId: string;
  /** Total rooms on the server (the admin room list's total). */
  rooms(): Promise<number>;
  onlineWithinMs: number;
  now?: () => number;
}

/** Counts per minute, kept for MINUTES minutes, in this process. */
class MinuteCounts {
  private counts = new Map<number, number>();
  add(minute: number, n: number): void {
    this.counts.set(minute, (this.counts.get(minute) ?? 0) + n);
    for (const m of this.counts.keys()) if (m <= minute - MINUTES) this.counts.delete(m);
  }
  get(minute: number): number { return this.counts.get(minute) ?? 0; }
}

export class AdminStats {
  private local: Record<Counter, MinuteCounts> = { messages: new MinuteCounts(), refusals: new MinuteCounts() };
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private now: () => number;

  constructor(private d: StatsDeps) {
    this.now = d.now ?? Date.now;
  }

  private key(what: string): string { return `${this.d.redisPrefix}admin-stats:${what}`; }

  /** Counts `n` of `what` now; with Redis, in the server-wide count of this minute. */
  count(what: Counter, n = 1): void {
    if (n <= 0) return;
    const minute = Math.floor(this.now() / 60_000);
    this.local[what].add(minute, n);
    const redis = this.d.redis;
    if (redis?.isReady) {
      const key = this.key(`${what}:${minute}`);
      redis.multi().incrBy(key, n).expire(key, (MINUTES + 2) * 60).exec().catch(() => {});
    }
  }

  /** The koa middleware counting the requests refused with 429 (rate limits, overload, connection caps). */
  refusals(): Middleware {
    return async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        if ((err as { status?: unknown }).status === 429) this.count('refusals');
        throw err;
      }
      if (ctx.status === 429) this.count('refusals');
    };
  }

  /** Publishes this worker's heartbeat every few seconds (Redis only). */
  start(): void {
    if (!this.d.redis) return;
    const beat = () => {
      const redis = this.d.redis;
      if (!redis?.isReady) return;
      redis.hSet(this.key('workers'), this.d.workerId, JSON.stringify(this.self())).catch(() => {});
    };
    beat();
    this.timer = setInterval(beat, HEARTBEAT_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.d.redis?.isReady) await this.d.redis.hDel(this.key('workers'), this.d.workerId).catch(() => {});
  }

  private self(): WorkerInfo {
    const mem = process.memoryUsage();
    return { id: this.d.workerId, pid: process.pid, started_ts: this.started, seen_ts: this.now(), rss_bytes: mem.rss, heap_used_bytes: mem.heapUsed };
  }

  /** The last MINUTES minutes of a counter, oldest first (the current, unfinished minute last). */
  private async series(what: Counter, minute: number): Promise<number[]> {
    const minutes = Array.from({ length: MINUTES }, (_, i) => minute - MINUTES + 1 + i);
    const redis = this.d.redis;
    if (redis?.isReady) {
      try {
        const values = await redis.mGet(minutes.map((m) => this.key(`${what}:${m}`)));
        return values.map((v) => (v === null ? 0 : Number(v)));
      } catch { /* Redis failed between the check and the read: this worker's own counts */ }
    }
    return minutes.map((m) => this.local[what].get(m));
  }

  private async workers(): Promise<WorkerInfo[]> {
    const redis = this.d.redis;
    if (!redis?.isReady) return [this.self()];
    try {
      const all = await redis.hGetAll(this.key('workers'));
      const now = this.now();
      const live = Object.values(all).map((v) => JSON.parse(v) as WorkerInfo).filter((w) => now - w.seen_ts < WORKER_STALE_MS);
      if (!live.some((w) => w.id === this.d.workerId)) live.push(this.self());
      return live.sort((a, b) => a.started_ts - b.started_ts);
    } catch {
      return [this.self()];
    }
  }

  private async redisHealth(): Promise<{ configured: boolean; ok: boolean; latency_ms: number | null; error?: string }> {
    const redis = this.d.redis;
    if (!redis) return { configured: false, ok: true, latency_ms: null };
    const start = performance.now();
    try {
      await withTimeout(redis.ping(), 2_000);
      return { configured: true, ok: true, latency_ms: Math.round((performance.now() - start) * 10) / 10 };
    } catch (err) {
      return { configured: true, ok: false, latency_ms: null, error: err instanceof Error ? err.message : String(err) };
    }
  }

  private async postgresHealth(): Promise<{ ok: boolean; latency_ms: number | null; error?: string }> {
    try {
      return { ok: true, latency_ms: await withTimeout(this.d.store.ping(), 2_000) };
    } catch (err) {
      return { ok: false, latency_ms: null, error: err instanceof Error ? err.message : String(err) };
    }
  }

  private recent: { at: number; answer: Promise<Record<string, unknown>> } | undefined;

  /**
   * Everything the dashboard shows, in one answer. A figure that cannot be read is null, never an
   * error. Answers are shared for a second: many open dashboards cost the database one read.
   */
  snapshot(): Promise<Record<string, unknown>> {
    const now = this.now();
    if (this.recent && now - this.recent.at < SHARE_MS) return this.recent.answer;
    const answer = this.read();
    this.recent = { at: now, answer };
    return answer;
  }

  private async read(): Promise<Record<string, unknown>> {
    const now = this.now();
    const minute = Math.floor(now / 60_000);
    const orNull = <T>(p: Promise<T>): Promise<T | null> => p.catch(() => null);
    const [messages, refusals, workers, postgres, redis, accounts, online, rooms] = await Promise.all([
      this.series('messages', minute), this.series('refusals', minute), this.workers(), this.postgresHealth(), this.redisHealth(),
      orNull(this.d.store.accounts(now, 24)), orNull(this.d.store.usersSeenSince(now - this.d.onlineWithinMs)), orNull(this.d.rooms()),
    ]);
    return {
      ts: now,
      users_online: online,
      online_within_ms: this.d.onlineWithinMs,
      users_total: accounts?.total ?? null,
      rooms_total: rooms,
      messages_per_minute: messages,
      refusals_per_minute: refusals,
      registrations_per_hour: accounts?.perHour ?? null,
      workers,
      postgres,
      redis,
    };
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}
