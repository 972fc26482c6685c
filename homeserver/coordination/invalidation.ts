import type { Logger } from 'pino';
import type { RedisHub } from './hub.ts';

/**
 * Cross-worker cache invalidation: `emit(topic, key)` runs the topic's handlers here at once and,
 * through Redis, on every other worker (in one process, only here). Published on the same
 * connection, before the writer reports its stream position done, so another worker drops its
 * entry before its readers can read past the change (see RedisHub).
 *
 * While Redis is away invalidations are lost: every handler's `reset` (drop everything) runs when
 * the connection drops and again when it is back.
 */
export class InvalidationBus {
  private pending = new Set<Promise<boolean>>();
  private handlers = new Map<string, { one: (key: string) => void; reset: () => void }[]>();

  constructor(private hub: RedisHub | undefined, private log: Logger) {}

  async start(): Promise<void> {
    if (!this.hub) return;
    const hub = this.hub;
    await hub.subscribe('invalidate', (message) => {
      let m: { w?: unknown; t?: unknown; k?: unknown };
      try { m = JSON.parse(message); } catch { return; }
      if (m.w === hub.workerId || typeof m.t !== 'string' || typeof m.k !== 'string') return;
      this.run(m.t, m.k);
    });
    hub.onUp(() => this.resetAll());
  }

  /** `one(key)` drops one entry; `reset()` drops all of them. */
  on(topic: string, one: (key: string) => void, reset: () => void): void {
    const list = this.handlers.get(topic) ?? [];
    list.push({ one, reset });
    this.handlers.set(topic, list);
  }

  emit(topic: string, key: string): void {
    this.run(topic, key);
    this.emitElsewhere(topic, key);
  }

  /** Runs the topic's handlers on the other workers only (this one already did what they do). */
  emitElsewhere(topic: string, key: string): void {
    if (!this.hub) return;
    const sent = this.hub.publish('invalidate', JSON.stringify({ w: this.hub.workerId, t: topic, k: key }));
    this.pending.add(sent);
    void sent.finally(() => this.pending.delete(sent));
  }

  /** Resolves once every invalidation emitted so far reached Redis' subscribers (a write answers after it). */
  async flushed(): Promise<void> {
    if (this.pending.size) await Promise.all([...this.pending]);
  }

  private run(topic: string, key: string): void {
    for (const h of this.handlers.get(topic) ?? []) {
      try { h.one(key); } catch (err) { this.log.error({ err, topic }, 'cache invalidation failed'); }
    }
  }

  private resetAll(): void {
    for (const list of this.handlers.values()) for (const h of list) {
      try { h.reset(); } catch (err) { this.log.error({ err }, 'cache reset failed'); }
    }
  }
}
