import type { Logger } from 'pino';
import type { Db } from '../storage/db.ts';
import type { SharedStream, StreamTracker } from '../storage/stream.ts';
import type { RedisHub } from './hub.ts';

/** A worker's floor lapses this long after its last report (it died; PostgreSQL aborted its transaction). */
export const LEASE_MS = 5_000;
/** Each worker reports at least this often. */
const HEARTBEAT_MS = 1_000;
/**
 * After Redis lost its memory (a restart), its positions are not trusted for this long: every live
 * worker reconnects (at most 2 s apart) and registers its floor again first. Meanwhile, and
 * whenever Redis is away, readers take positions from PostgreSQL.
 */
export const GRACE_MS = 4_000;
/** How often PostgreSQL is asked while Redis is away. */
const POLL_MS = 50;

/**
 * One call per report: records this worker's floor (or removes it), its highest done position,
 * drops floors whose lease lapsed, and publishes the readable position when it moves:
 * readable = min(highest done, every floor), never backwards. While the state is younger than the
 * grace period nothing is published. Returns {readable, in grace (1/0)}.
 *
 * KEYS: floors (hash), leases (zset), maxdone, readable, epoch. ARGV: worker, floor ('' none),
 * done ('' none), lease ms, grace ms, channel.
 */
const SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', KEYS[5])
if not epoch then redis.call('SET', KEYS[5], now); epoch = now else epoch = tonumber(epoch) end
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, w in ipairs(dead) do redis.call('HDEL', KEYS[1], w); redis.call('ZREM', KEYS[2], w) end
local maxdone = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[3] ~= '' and tonumber(ARGV[3]) > maxdone then maxdone = tonumber(ARGV[3]); redis.call('SET', KEYS[3], ARGV[3]) end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1]); redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
end
local prev = tonumber(redis.call('GET', KEYS[4]) or '-1')
if now - epoch < tonumber(ARGV[5]) then return {prev, 1} end
local r = maxdone
for _, f in ipairs(redis.call('HVALS', KEYS[1])) do local v = tonumber(f); if v < r then r = v end end
if r > prev then redis.call('SET', KEYS[4], r); redis.call('PUBLISH', ARGV[6], r); prev = r end
return {prev, 0}
`;

/**
 * The readable position of one sequence-backed stream shared by every worker (Synapse's
 * MultiWriterIdGenerator, with Redis as the meeting point):
 *
 * - before a worker calls nextval it registers a floor (its view of the readable position: any
 *   position allocated later is above everything done before) under its worker id, and waits for
 *   Redis to record it; after commit or rollback it raises or removes the floor (batched);
 * - a Lua script keeps the highest done position and publishes readable = min(done, floors) on a
 *   channel every worker listens to, so nothing in flight anywhere is skipped;
 * - floors carry a lease of LEASE_MS renewed each second: a dead worker's floor lapses (its
 *   transaction was aborted with its connection);
 * - while Redis is away (or just restarted, for GRACE_MS), readers take positions from
 *   PostgreSQL instead (see `checkpoint`), and catch up when it is back.
 */
export class SharedPositions implements SharedStream {
  private tracker!: StreamTracker;
  private sha: string | undefined;
  private pendingDone: number | undefined;
  private flushQueued = false;
  /** The floor Redis holds for us as of the last call sent (null: none; undefined: unknown). */
  private registered: number | null | undefined;
  private lastSend: Promise<unknown> = Promise.resolve();
  private inGrace = true;
  private healthy = false;
  private heartbeat: NodeJS.Timeout | undefined;
  private poller: NodeJS.Timeout | undefined;
  private polling = false;
  private pending: Array<{ last: number; running: Set<string> }> = [];
  private fallbackListeners: Array<(pos: number) => void> = [];
  private healthyListeners: Array<(horizon: number) => void> = [];
  private unhealthyListeners: Array<() => void> = [];
  private closed = false;
  private resyncing = false;
  private horizon = 0;

  constructor(
    private hub: RedisHub,
    private db: Db,
    private log: Logger,
    private name = 'events',
    private sequence = 'stream_positions',
  ) {}

  private keys(): string[] {
    const k = (s: string) => this.hub.key(`stream:${this.name}:${s}`);
    return [k('floors'), k('leases'), k('maxdone'), k('readable'), k('epoch')];
  }

  /** Advances from PostgreSQL while Redis is away: notifications from other workers may be missing. */
  onFallbackAdvance(fn: (pos: number) => void): void { this.fallbackListeners.push(fn); }
  /** Redis is trusted again; every change above `horizon` will be heard (through the hub) before it is readable. */
  onHealthy(fn: (horizon: number) => void): void {
    this.healthyListeners.push(fn);
    if (this.healthy) fn(this.horizon);
  }
  onUnhealthy(fn: () => void): void { this.unhealthyListeners.push(fn); }

  get isHealthy(): boolean { return this.healthy; }

  async attach(tracker: StreamTracker): Promise<number> {
    this.tracker = tracker;
    await this.hub.subscribe(`stream:${this.name}`, (m) => {
      const pos = Number(m);
      if (Number.isSafeInteger(pos)) this.tracker.sharedAdvanced(pos);
    });
    this.hub.onUp((up) => {
      if (up) void this.resync();
      else this.becomeUnhealthy();
    });
    // Where to start: a PostgreSQL checkpoint is always safe (subscribed already: later changes are heard).
    const start = await this.safePosition();
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
    this.startPolling();
    if (this.hub.up) void this.resync();
    return start;
  }

  async lowerFloor(floor: number): Promise<void> {
    if (typeof this.registered === 'number' && this.registered <= floor) {
      await this.lastSend.catch(() => {});
      return;
    }
    await this.send(floor, undefined).catch(() => {});
  }

  changed(maxDone?: number): void {
    if (maxDone !== undefined && (this.pendingDone === undefined || maxDone > this.pendingDone)) this.pendingDone = maxDone;
    if (this.flushQueued) return;
    this.flushQueued = true;
    // After this tick: the notifications the callbacks of `done` publish go out first.
    setImmediate(() => {
      this.flushQueued = false;
      const done = this.pendingDone;
      this.pendingDone = undefined;
      const floor = this.tracker.floor();
      if (done === undefined && this.registered === (floor ?? null)) return;
      this.send(floor, done).catch(() => {
        // Lost with Redis: maxDone is only an optimisation for the others (the floor is re-sent on return).
      });
    });
  }

  /** One report (in order with every other on the command connection). */
  private send(floor: number | undefined, done: number | undefined): Promise<[number, number]> {
    if (!this.hub.cmd.isReady) {
      this.registered = undefined;
      return Promise.reject(new Error('redis is away'));
    }
    this.registered = floor ?? null;
    const p = this.eval([this.hub.workerId, floor === undefined ? '' : String(floor), done === undefined ? '' : String(done), String(LEASE_MS), String(GRACE_MS), this.hub.channel(`stream:${this.name}`)]);
    this.lastSend = p;
    return p.then((r) => {
      this.observeGrace(r[1] === 1);
      return r;
    }, (err) => {
      this.registered = undefined;
      throw err;
    });
  }

  private async eval(args: string[]): Promise<[number, number]> {
    const keys = this.keys();
    const cmd = this.hub.cmd;
    if (this.sha) {
      try {
        return (await cmd.sendCommand(['EVALSHA', this.sha, String(keys.length), ...keys, ...args])) as [number, number];
      } catch (err) {
        if (!String((err as Error).message).includes('NOSCRIPT')) throw err;
      }
    }
    this.sha = (await cmd.sendCommand(['SCRIPT', 'LOAD', SCRIPT])) as string;
    return (await cmd.sendCommand(['EVALSHA', this.sha, String(keys.length), ...keys, ...args])) as [number, number];
  }

  private beat(): void {
    if (this.closed || !this.hub.cmd.isReady) return;
    this.send(this.tracker.floor(), undefined).catch(() => {});
  }

  private observeGrace(grace: boolean): void {
    const was = this.inGrace;
    this.inGrace = grace;
    if (grace && this.healthy) this.becomeUnhealthy();
    if (!grace && was && this.hub.up) void this.resync();
  }

  private becomeUnhealthy(): void {
    if (!this.healthy) { this.startPolling(); return; }
    this.healthy = false;
    this.startPolling();
    for (const l of this.unhealthyListeners) l();
  }

  /**
   * Redis is back (or its grace is over): register our floor, take its readable position, then
   * name the horizon above which every change will be heard before it is readable.
   */
  private async resync(): Promise<void> {
    if (this.resyncing || this.closed) return;
    this.resyncing = true;
    try {
      const [readable, grace] = await this.send(this.tracker.floor(), undefined);
      if (grace === 1 || !this.hub.up) return;
      // Stop PostgreSQL advances first: from here on, positions come only through the hub, in order.
      this.stopPolling();
      const horizon = await this.lastAllocated();
      if (!this.hub.up || this.inGrace) { this.startPolling(); return; }
      this.healthy = true;
      this.horizon = horizon;
      if (readable >= 0) this.tracker.sharedAdvanced(readable);
      this.log.info({ stream: this.name, readable, horizon }, 'stream positions shared through redis');
      for (const l of this.healthyListeners) l(horizon);
    } catch {
      this.startPolling();
    } finally {
      this.resyncing = false;
    }
  }

  private startPolling(): void {
    if (this.poller || this.closed) return;
    this.pending = [];
    this.poller = setInterval(() => void this.poll(), POLL_MS);
    this.poller.unref();
  }

  private stopPolling(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
    this.pending = [];
  }

  private async lastAllocated(): Promise<number> {
    const r = await this.db.raw(`SELECT last_value, is_called FROM ${this.sequence}`);
    const row = r.rows[0] as { last_value: number; is_called: boolean };
    return row.is_called ? Number(row.last_value) : 0;
  }

  /** Transactions running now in this database (by other sessions), as `pid@start`. */
  private async running(): Promise<Set<string>> {
    const r = await this.db.raw(
      `SELECT pid, xact_start::text AS xs FROM pg_stat_activity
       WHERE datname = current_database() AND backend_type = 'client backend' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()`,
    );
    return new Set((r.rows as Array<{ pid: number; xs: string }>).map((x) => `${x.pid}@${x.xs}`));
  }

  /**
   * A PostgreSQL checkpoint, safe without Redis and without the writers' help: read the
   * sequence's last value L, then the transactions running. Any position at or below L was
   * allocated before, by a transaction that has ended or is in that list; once none of them runs
   * any more, everything up to L is committed or rolled back.
   */
  private async checkpoint(): Promise<{ last: number; running: Set<string> }> {
    const last = await this.lastAllocated();
    return { last, running: await this.running() };
  }

  private async poll(): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    try {
      const cp = await this.checkpoint();
      if (!this.poller) return; // healthy again meanwhile: positions come through Redis
      this.pending.push(cp);
      let safe: number | undefined;
      while (this.pending.length && ![...this.pending[0]!.running].some((t) => cp.running.has(t))) safe = this.pending.shift()!.last;
      if (safe !== undefined && this.tracker.sharedAdvanced(safe)) {
        for (const l of this.fallbackListeners) l(safe);
      }
    } catch (err) {
      this.log.debug({ err }, 'position poll failed');
    } finally {
      this.polling = false;
    }
  }

  /** A checkpoint that has resolved (at start); waits for the transactions running at it to end. */
  private async safePosition(): Promise<number> {
    const cp = await this.checkpoint();
    const began = Date.now();
    let warned = false;
    for (;;) {
      const now = await this.running();
      if (![...cp.running].some((t) => now.has(t))) return cp.last;
      if (!warned && Date.now() - began > 3_000) {
        warned = true;
        this.log.warn({ waitingFor: [...cp.running].filter((t) => now.has(t)) }, 'start-up waits for long transactions to end before reading the stream');
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Removes this worker's floor (it has nothing in flight at shutdown) and stops the timers. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.stopPolling();
    if (this.hub.cmd.isReady) await this.send(undefined, undefined).catch(() => {});
  }
}
