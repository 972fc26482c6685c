import type { Logger } from 'pino';
import { STREAMS, type StreamName, type SyncToken } from '../storage/stream-token.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { RedisHub } from '../coordination/hub.ts';
import type { SharedPositions } from '../coordination/positions.ts';
import type { LocalNotifier, Notifier } from './notifier.ts';

/**
 * The notifier of several workers: each notification is published on Redis (channel `notify`)
 * and every worker feeds it to its own LocalNotifier, where the long-polls and sockets wait.
 *
 * For the streams whose positions come from the shared tracker (events, account data), a
 * notification from another worker is delivered here only once this worker's tracker can read
 * its position (`whenReadable`): woken readers then see what woke them. The writer publishes it
 * before it reports the position done (see StreamTracker.whenVisible), and every message of this
 * worker arrives on one subscriber connection, in Redis' order: a notification is always heard
 * before its position becomes readable here, so `changedSince` never answers "unchanged" for a
 * change this worker can already read.
 *
 * While Redis is away notifications are lost: `changedSince` answers "ask the database"
 * (undefined), each position advance read from PostgreSQL wakes every waiter behind it, and when
 * Redis is back every waiter wakes once more at the horizon from which nothing is missed.
 */
/** While Redis is away, waiters wake at most this often (positions then come from PostgreSQL). */
const FALLBACK_WAKE_MS = 200;

export class RedisNotifier implements Notifier {
  /** changedSince(pos) of a tracked stream is only answered from memory for pos at or above this. */
  private trackedFrom = Number.POSITIVE_INFINITY;
  /** The same for the other streams (undefined: known since start). */
  private otherFrom: Partial<Record<StreamName, number>> = {};
  private wasDown = false;

  private local!: LocalNotifier;
  private tracker!: StreamTracker;
  /** Heard before attach (while the tracker found its start position): replayed then. */
  private early: string[] | undefined = [];

  constructor(
    private hub: RedisHub,
    private log: Logger,
    /** The streams whose positions the shared tracker hands out. */
    private tracked: ReadonlySet<StreamName> = new Set<StreamName>(['events', 'accountData']),
  ) {
    // What other workers notified before this one listened is unknown: ask the data until a
    // notification of the stream is heard (from then on memory is complete above it).
    for (const st of STREAMS) if (!this.tracked.has(st)) this.otherFrom[st] = Number.POSITIVE_INFINITY;
  }

  /**
   * Wires the local notifier and the tracker (opened after `start`, so that every change above
   * its start position is heard).
   */
  attach(local: LocalNotifier, tracker: StreamTracker, positions: SharedPositions): void {
    this.local = local;
    this.tracker = tracker;
    // Each step read from PostgreSQL may hide changes for anyone: wake every waiter behind it, at
    // most every FALLBACK_WAKE_MS (each woken sync reads the database).
    let latest = 0;
    let pending = false;
    positions.onFallbackAdvance((pos) => {
      latest = Math.max(latest, pos);
      if (pending) return;
      pending = true;
      setTimeout(() => {
        pending = false;
        for (const s of this.tracked) this.local.notifyAll(s, latest);
      }, FALLBACK_WAKE_MS);
    });
    positions.onUnhealthy(() => {
      this.trackedFrom = Number.POSITIVE_INFINITY;
    });
    positions.onHealthy((horizon) => {
      this.trackedFrom = horizon;
      const now = this.tracker.current();
      for (const s of this.tracked) this.local.notifyAll(s, now);
      this.tracker.whenReadable(horizon, () => {
        for (const s of this.tracked) this.local.notifyAll(s, horizon);
      });
    });
    this.hub.onUp((up) => {
      const others = STREAMS.filter((s) => !this.tracked.has(s));
      if (!up) {
        this.wasDown = true;
        for (const s of others) this.otherFrom[s] = Number.POSITIVE_INFINITY;
        return;
      }
      if (!this.wasDown) return;
      // Changes of the other streams during the outage were not heard: every waiter looks once.
      for (const s of others) this.local.wakeAll(s);
    });
    const early = this.early ?? [];
    this.early = undefined;
    for (const m of early) this.receive(m);
  }

  /** Subscribes; call once, before the tracker is opened. */
  async start(): Promise<void> {
    await this.hub.subscribe('notify', (m) => {
      if (this.early) this.early.push(m);
      else this.receive(m);
    });
  }

  notify(stream: StreamName, keys: Iterable<string>, pos: number): void {
    const list = [...keys];
    if (this.otherFrom[stream] === Number.POSITIVE_INFINITY) this.otherFrom[stream] = pos;
    this.hub.publish('notify', JSON.stringify({ w: this.hub.workerId, s: stream, k: list, p: pos }));
    this.deliver(stream, list, pos);
  }

  /**
   * A change of a stream that carries its own wake-ups over Redis (typing, presence: their Lua
   * scripts publish, every worker hears): wakes this worker's waiters only, and from then on this
   * worker's memory of the stream is complete.
   */
  heard(stream: StreamName, keys: Iterable<string>, pos: number): void {
    if (!this.tracked.has(stream) && this.otherFrom[stream] === Number.POSITIVE_INFINITY) this.otherFrom[stream] = pos;
    this.deliver(stream, [...keys], pos);
  }

  private receive(message: string): void {
    let m: { w?: unknown; s?: unknown; k?: unknown; p?: unknown };
    try { m = JSON.parse(message); } catch { return; }
    if (m.w === this.hub.workerId) return;
    if (typeof m.s !== 'string' || !(STREAMS as readonly string[]).includes(m.s) || !Array.isArray(m.k) || typeof m.p !== 'number') {
      this.log.warn({ message: message.slice(0, 200) }, 'ignoring a malformed notification');
      return;
    }
    const stream = m.s as StreamName;
    if (!this.tracked.has(stream) && this.otherFrom[stream] === Number.POSITIVE_INFINITY) this.otherFrom[stream] = m.p;
    this.deliver(stream, m.k.filter((k): k is string => typeof k === 'string'), m.p);
  }

  private deliver(stream: StreamName, keys: string[], pos: number): void {
    if (this.tracked.has(stream)) this.tracker.whenReadable(pos, () => this.local.notify(stream, keys, pos));
    else this.local.notify(stream, keys, pos);
  }

  wait(keys: Iterable<string>, since: SyncToken, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return this.local.wait(keys, since, timeoutMs, signal);
  }

  changedSince(stream: StreamName, keys: Iterable<string>, pos: number): boolean | undefined {
    const from = this.tracked.has(stream) ? this.trackedFrom : this.otherFrom[stream];
    if (from !== undefined && pos < from) return undefined;
    return this.local.changedSince(stream, keys, pos);
  }
}
