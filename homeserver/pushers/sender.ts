// The HTTP pusher sender: a background job (one worker runs it) that POSTs each notifying push
// action of a user to the push gateway of each of the user's HTTP pushers.
//
// Durability: every pusher keeps `sent_up_to`, the stream position of the last notification handed
// to its gateway (or skipped); it is written after each successful POST. A restart (or the job
// moving to another worker) resumes after it, so nothing is lost or repeated, except that a
// notification whose POST succeeded just before the process died, with its position not yet
// written, is sent once more. The Push Gateway API asks gateways to drop such duplicates by event_id.
import type { Logger } from 'pino';
import type { NotificationFeed, StagedNotification } from '../push/notifications.ts';
import type { EventDetails } from './details.ts';
import { postToGateway } from './gateway.ts';
import { notifies, notifyBody } from './payload.ts';
import type { PusherRow } from './store.ts';

/** The pusher store as the sender needs it (PusherStore; an in-memory one in unit tests). */
export interface PusherRepository {
  allOfKind(kind: string): Promise<PusherRow[]>;
  byId(id: number): Promise<PusherRow | undefined>;
  advance(id: number, pos: number): Promise<boolean>;
  setFailingSince(id: number, ts: number | null): Promise<void>;
  removeById(id: number): Promise<boolean>;
}

export interface SenderOptions {
  /** How often it looks for notifications staged on other workers (and pushers set there). */
  pollMs: number;
  /** A sweep of every pusher at least this often, whatever the stream position says. */
  sweepMs: number;
  /** Back-off after a failed POST: doubles from the initial value up to the maximum. */
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A notification still failing after this long is skipped (so a gateway back after a day is not flooded). */
  giveUpAfterMs: number;
  /** Per POST: the whole exchange, and the most of an answer that is read. */
  timeoutMs: number;
  maxResponseBytes: number;
  /** Notifications read from the feed at a time, and pushers worked on at once. */
  batch: number;
  concurrency: number;
  /** The stream's persisted-up-to position: a poll sweeps only after it moved. */
  currentPosition?: () => number;
}

export const DEFAULT_SENDER_OPTIONS: SenderOptions = {
  pollMs: 2_000,
  sweepMs: 30_000,
  initialBackoffMs: 1_000,
  maxBackoffMs: 10 * 60_000,
  giveUpAfterMs: 24 * 60 * 60_000,
  timeoutMs: 10_000,
  maxResponseBytes: 64 * 1024,
  batch: 50,
  concurrency: 16,
};

interface PusherState {
  row: PusherRow;
  sentUpTo: number;
  failingSince: number | null;
  backoffMs: number;
  retryTimer?: NodeJS.Timeout;
  running?: Promise<void>;
  again: boolean;
  gone: boolean;
}

type Outcome = 'sent' | 'skipped' | 'retry' | 'gone';

export class PusherSender {
  private pushers = new Map<number, PusherState>();
  private byUser = new Map<string, Set<PusherState>>();
  private opts: SenderOptions;
  private pollTimer?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private stopped = true;
  private abort = new AbortController();
  private lastPos: number | undefined;
  private posMovedAt = 0;
  private lastSweep = 0;

  constructor(
    private repo: PusherRepository,
    private feed: NotificationFeed,
    private details: EventDetails,
    private log: Logger,
    opts: Partial<SenderOptions> = {},
  ) {
    this.opts = { ...DEFAULT_SENDER_OPTIONS, ...opts };
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    this.abort = new AbortController();
    await this.reload();
    this.lastSweep = Date.now();
    this.lastPos = this.opts.currentPosition?.();
    this.posMovedAt = Date.now();
    // What was left over from before the start is sent in the background: start-up does not wait.
    this.polling = this.sweep().catch((err) => this.log.warn({ err }, 'pusher sweep failed')).finally(() => {
      this.polling = undefined;
      this.schedulePoll();
    });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.pollTimer);
    this.abort.abort();
    for (const s of this.pushers.values()) clearTimeout(s.retryTimer);
    await this.polling;
    await Promise.all([...this.pushers.values()].map((s) => s.running));
    this.pushers.clear();
    this.byUser.clear();
  }

  /** New notifications for these users are durable (the feed's `notified` topic, this worker). */
  wake(userIds: string[]): void {
    if (this.stopped) return;
    for (const u of userIds) for (const s of this.byUser.get(u) ?? []) void this.process(s);
  }

  /** These pushers were set or removed on this worker: take the change now, not at the next poll. */
  async pusherChanged(ids: number[]): Promise<void> {
    if (this.stopped) return;
    for (const id of ids) {
      const row = await this.repo.byId(id);
      if (row?.kind !== 'http') {
        this.drop(id);
        continue;
      }
      const s = this.track(row);
      // Set again (a new URL, say): a back-off meant for the old settings ends now, as a new pusher.
      if (s.retryTimer) {
        clearTimeout(s.retryTimer);
        s.retryTimer = undefined;
        s.backoffMs = this.opts.initialBackoffMs;
        void this.process(s);
      }
    }
  }

  /** Waits until no pusher is being worked on (tests). */
  async idle(): Promise<void> {
    for (;;) {
      const running = [...this.pushers.values()].map((s) => s.running).filter(Boolean);
      if (!running.length && !this.polling) return;
      await Promise.all([...running, this.polling]);
    }
  }

  // ---- pushers in memory --------------------------------------------------------------------

  private track(row: PusherRow): PusherState {
    const known = this.pushers.get(row.id);
    if (known) {
      known.row = row;
      known.sentUpTo = Math.max(known.sentUpTo, row.sent_up_to);
      return known;
    }
    const s: PusherState = { row, sentUpTo: row.sent_up_to, failingSince: row.failing_since, backoffMs: this.opts.initialBackoffMs, again: false, gone: false };
    this.pushers.set(row.id, s);
    let set = this.byUser.get(row.user_id);
    if (!set) this.byUser.set(row.user_id, (set = new Set()));
    set.add(s);
    return s;
  }

  private drop(id: number): void {
    const s = this.pushers.get(id);
    if (!s) return;
    s.gone = true;
    clearTimeout(s.retryTimer);
    this.pushers.delete(id);
    const set = this.byUser.get(s.row.user_id);
    set?.delete(s);
    if (set && !set.size) this.byUser.delete(s.row.user_id);
  }

  /** Brings the set of pushers in line with the table (pushers set or removed on other workers). */
  private async reload(): Promise<void> {
    const rows = await this.repo.allOfKind('http');
    const seen = new Set<number>();
    for (const row of rows) {
      seen.add(row.id);
      this.track(row);
    }
    for (const id of [...this.pushers.keys()]) if (!seen.has(id)) this.drop(id);
  }

  // ---- polling ------------------------------------------------------------------------------

  private schedulePoll(): void {
    if (this.stopped) return;
    this.pollTimer = setTimeout(() => {
      this.polling = this.poll().catch((err) => this.log.warn({ err }, 'pusher poll failed')).finally(() => {
        this.polling = undefined;
        this.schedulePoll();
      });
    }, this.opts.pollMs);
    this.pollTimer.unref();
  }

  /**
   * Reloads the pushers, then sweeps them all if the stream moved lately (notifications staged on
   * other workers wake nobody here) or a while has passed. "Lately" spans two polls: staging may
   * become durable a little after the position that it belongs to.
   */
  private async poll(): Promise<void> {
    await this.reload();
    const now = Date.now();
    const pos = this.opts.currentPosition?.();
    if (pos !== this.lastPos) {
      this.lastPos = pos;
      this.posMovedAt = now;
    }
    const moved = pos === undefined || now - this.posMovedAt <= 2 * this.opts.pollMs;
    if (moved || now - this.lastSweep >= this.opts.sweepMs) {
      this.lastSweep = now;
      await this.sweep();
    }
  }

  /** Works on every pusher, at most `concurrency` at once. */
  private async sweep(): Promise<void> {
    const queue = [...this.pushers.values()];
    const worker = async () => {
      for (let s = queue.shift(); s && !this.stopped; s = queue.shift()) await this.process(s);
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency, queue.length) }, worker));
  }

  // ---- sending ------------------------------------------------------------------------------

  /** Sends what is pending for one pusher; one run per pusher at a time (a wake during it runs again). */
  private process(s: PusherState): Promise<void> {
    if (s.running) {
      s.again = true;
      return s.running;
    }
    if (s.retryTimer || s.gone || this.stopped) return Promise.resolve();
    s.running = (async () => {
      try {
        do {
          s.again = false;
          await this.drain(s);
        } while (s.again && !s.retryTimer && !s.gone && !this.stopped);
      } catch (err) {
        // The feed or the database failed: try again at the next poll.
        this.log.warn({ err, pusher: s.row.id }, 'pusher run failed');
      } finally {
        s.running = undefined;
      }
    })();
    return s.running;
  }

  private async drain(s: PusherState): Promise<void> {
    for (;;) {
      if (this.stopped || s.gone) return;
      const batch = await this.feed.after(s.row.user_id, s.sentUpTo, this.opts.batch);
      for (const n of batch) {
        if (this.stopped || s.gone) return;
        if (n.streamPos <= s.sentUpTo) continue;
        const outcome = await this.sendOne(s, n);
        if (outcome === 'retry') return this.retryLater(s);
        if (outcome === 'gone') return this.drop(s.row.id);
        s.sentUpTo = n.streamPos;
        s.backoffMs = this.opts.initialBackoffMs;
        s.failingSince = null;
        if (!(await this.repo.advance(s.row.id, n.streamPos))) return this.drop(s.row.id);
      }
      if (batch.length < this.opts.batch) return;
    }
  }

  private retryLater(s: PusherState): void {
    if (this.stopped || s.gone) return;
    const delay = s.backoffMs;
    s.backoffMs = Math.min(s.backoffMs * 2, this.opts.maxBackoffMs);
    s.retryTimer = setTimeout(() => {
      s.retryTimer = undefined;
      void this.process(s);
    }, delay);
    s.retryTimer.unref();
  }

  private async sendOne(s: PusherState, n: StagedNotification): Promise<Outcome> {
    if (!notifies(n.actions)) return 'skipped';
    const event = await this.details(n.eventId);
    if (!event) return 'skipped';
    const unread = await this.feed.unreadCount(s.row.user_id);
    const url = s.row.data.url;
    if (typeof url !== 'string') return 'skipped';
    const body = notifyBody(s.row, event, n.actions, unread);
    const res = await postToGateway(url, body, { timeoutMs: this.opts.timeoutMs, maxResponseBytes: this.opts.maxResponseBytes, signal: this.abort.signal });
    if (res.ok) {
      if (res.rejected.includes(s.row.pushkey)) {
        // The gateway says this pushkey is dead (expired, uninstalled app): the spec says stop.
        this.log.info({ pusher: s.row.id, appId: s.row.app_id }, 'push gateway rejected the pushkey: removing the pusher');
        await this.repo.removeById(s.row.id);
        return 'gone';
      }
      return 'sent';
    }
    if (this.stopped) return 'retry';
    if (!res.retry) {
      this.log.warn({ pusher: s.row.id, eventId: n.eventId, reason: res.reason }, 'push gateway refused a notification: skipping it');
      return 'skipped';
    }
    const now = Date.now();
    if (s.failingSince === null) {
      s.failingSince = now;
      await this.repo.setFailingSince(s.row.id, now);
    }
    if (now - s.failingSince >= this.opts.giveUpAfterMs) {
      this.log.warn({ pusher: s.row.id, eventId: n.eventId, reason: res.reason }, 'push gateway failing for too long: skipping a notification');
      return 'skipped';
    }
    this.log.info({ pusher: s.row.id, reason: res.reason, retryInMs: s.backoffMs }, 'push failed: backing off');
    return 'retry';
  }
}
