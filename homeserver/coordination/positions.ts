import pg from 'pg';
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
 * readable = max(before, the caller's own readable position, min(highest done, every floor)).
 * While the state is younger than the grace period nothing is computed. Returns {readable, in
 * grace (1/0)}.
 *
 * KEYS: floors (hash), leases (zset), maxdone, readable, epoch. ARGV: worker, floor ('' none),
 * done ('' none), lease ms, grace ms, channel, readable here ('' none).
 */
export const POSITIONS_SCRIPT = `
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
if ARGV[7] ~= '' and tonumber(ARGV[7]) > r then r = tonumber(ARGV[7]) end
if r > prev then redis.call('SET', KEYS[4], r); redis.call('PUBLISH', ARGV[6], r); prev = r end
return {prev, 0}
`;

/** Advisory locks (two-int form) whose first key starts here carry PostgreSQL floors: key1 = base + floor / 2^31, key2 = floor % 2^31. */
const PG_FLOOR_BASE = 0x4600_0000;
const PG_SPLIT = 2 ** 31;
/** After Redis is lost, PostgreSQL floors are trusted once every worker had time to notice and register there. */
export const ENTRY_DELAY_MS = 1_500;
/** A worker keeps registering floors in PostgreSQL this long after Redis is trusted again (the others may not be yet). */
const LINGER_MS = 3_000;

/**
 * This worker's floor in PostgreSQL, while Redis is not trusted: a shared advisory lock, held on
 * a connection of its own, whose key is the floor. A dead worker's locks vanish with its
 * connection. Readers then take readable = min(last allocated, every such floor), reading the
 * sequence first: a position at or below the value read was allocated before, so either it is
 * done or its worker's floor (registered before it allocated) is still there.
 */
class PgFloors {
  private client: pg.Client | undefined;
  held: number | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(private connection: string | object, private log: Logger) {}

  async connect(): Promise<void> {
    const c = new pg.Client(typeof this.connection === 'string' ? { connectionString: this.connection } : (this.connection as pg.ClientConfig));
    c.on('error', (err) => this.log.warn({ err: err.message }, 'stream floor connection failed'));
    await c.connect();
    await c.query("SET application_name = 'super-server floors'");
    this.client = c;
  }

  /** Holds `floor` (undefined: nothing) instead of what was held; in order with earlier calls. */
  set(floor: number | undefined): Promise<void> {
    const run = async () => {
      if (floor === this.held || !this.client) return;
      const old = this.held;
      const key = (f: number) => [PG_FLOOR_BASE + Math.floor(f / PG_SPLIT), f % PG_SPLIT];
      if (floor !== undefined && old !== undefined) {
        await this.client.query('SELECT pg_advisory_lock_shared($1, $2), pg_advisory_unlock_shared($3, $4)', [...key(floor), ...key(old)]);
      } else if (floor !== undefined) {
        await this.client.query('SELECT pg_advisory_lock_shared($1, $2)', key(floor));
      } else {
        await this.client.query('SELECT pg_advisory_unlock_shared($1, $2)', key(old!));
      }
      this.held = floor;
    };
    this.queue = this.queue.then(run, run);
    return this.queue;
  }

  /** The lowest floor any worker holds in this database (undefined: none). */
  static async lowest(db: Db): Promise<number | undefined> {
    const r = await db.raw(
      `SELECT min((classid::bigint - ?) * ? + objid::bigint) AS f FROM pg_locks
       WHERE locktype = 'advisory' AND objsubid = 2 AND granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND classid::bigint >= ? AND classid::bigint < ?`,
      [PG_FLOOR_BASE, PG_SPLIT, PG_FLOOR_BASE, PG_FLOOR_BASE + 2 ** 24],
    );
    const f = r.rows[0]?.f;
    return f === null || f === undefined ? undefined : Number(f);
  }

  async close(): Promise<void> {
    await this.queue.catch(() => {});
    await this.client?.end().catch(() => {});
  }
}

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
 * - while Redis is away, or just restarted (its state is trusted after GRACE_MS, once every live
 *   worker registered again), each worker registers its floor in PostgreSQL too (PgFloors) and
 *   readers poll PostgreSQL; they catch up through Redis when it is back.
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
  /** When positions stopped coming from Redis (PostgreSQL floors are trusted ENTRY_DELAY_MS later). */
  private unhealthySince = 0;
  private healthySince = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private poller: NodeJS.Timeout | undefined;
  private polling = false;
  private fallbackListeners: Array<(pos: number) => void> = [];
  private healthyListeners: Array<(horizon: number) => void> = [];
  private unhealthyListeners: Array<() => void> = [];
  private closed = false;
  private resyncing = false;
  private horizon = 0;
  private pgFloors: PgFloors;

  constructor(
    private hub: RedisHub,
    private db: Db,
    connection: string | object,
    private log: Logger,
    private name = 'events',
    private sequence = 'stream_positions',
  ) {
    this.pgFloors = new PgFloors(connection, log);
  }

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

  /** Whether floors go to PostgreSQL too (readers may be polling it). */
  private get pgActive(): boolean {
    return !this.healthy || Date.now() - this.healthySince < LINGER_MS;
  }

  async attach(tracker: StreamTracker): Promise<number> {
    this.tracker = tracker;
    await this.pgFloors.connect();
    await this.hub.subscribe(`stream:${this.name}`, (m) => {
      const pos = Number(m);
      if (Number.isSafeInteger(pos)) this.tracker.sharedAdvanced(pos);
    });
    this.hub.onUp((up) => {
      if (up) void this.resync();
      else this.becomeUnhealthy();
    });
    // Where to start: Redis' readable position when its state is trusted; otherwise (a fresh or
    // restarted Redis: every worker registers in PostgreSQL meanwhile) PostgreSQL's.
    let start: number | undefined;
    try {
      const [readable, grace] = await this.send(undefined, undefined);
      if (grace === 0 && readable >= 0) start = readable;
    } catch {
      // Away: PostgreSQL below.
    }
    if (start === undefined) start = await this.fromPostgres();
    this.unhealthySince = Date.now() - ENTRY_DELAY_MS; // nobody can have relied on us in Redis yet
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
    this.startPolling();
    if (this.hub.up) void this.resync();
    return start;
  }

  async lowerFloor(floor: number): Promise<void> {
    const pg = this.pgActive && (this.pgFloors.held === undefined || this.pgFloors.held > floor) ? this.pgFloors.set(floor) : undefined;
    if (typeof this.registered === 'number' && this.registered <= floor) {
      await this.lastSend.catch(() => {});
    } else {
      await this.send(floor, undefined).catch(() => {});
    }
    if (pg) await pg.catch((err) => this.log.warn({ err: err.message }, 'stream floor not registered in PostgreSQL'));
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
      if (this.pgActive || this.pgFloors.held !== undefined) {
        this.pgFloors.set(this.pgActive ? floor : undefined).catch((err) => this.log.warn({ err: err.message }, 'stream floor not updated in PostgreSQL'));
      }
      if (done === undefined && this.registered === (floor ?? null)) return;
      this.send(floor, done).catch(() => {
        // Lost with Redis: the floor is sent again on return; `done` only helps the others along.
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
    // What is readable here helps a worker that starts (or Redis after a restart) to a position.
    const here = this.healthy ? String(this.tracker.current()) : '';
    const p = this.eval([this.hub.workerId, floor === undefined ? '' : String(floor), done === undefined ? '' : String(done), String(LEASE_MS), String(GRACE_MS), this.hub.channel(`stream:${this.name}`), here]);
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
    this.sha = (await cmd.sendCommand(['SCRIPT', 'LOAD', POSITIONS_SCRIPT])) as string;
    return (await cmd.sendCommand(['EVALSHA', this.sha, String(keys.length), ...keys, ...args])) as [number, number];
  }

  private beat(): void {
    if (this.closed) return;
    if (!this.pgActive && this.pgFloors.held !== undefined) this.pgFloors.set(undefined).catch(() => {});
    if (!this.hub.cmd.isReady) return;
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
    this.unhealthySince = Date.now();
    // What this worker has in flight is now registered where the others will look.
    this.pgFloors.set(this.tracker.floor()).catch(() => {});
    this.startPolling();
    this.log.warn({ stream: this.name }, 'stream positions read from PostgreSQL until Redis is back');
    for (const l of this.unhealthyListeners) l();
  }

  /**
   * Redis is back (or its grace is over): register our floor, take its readable position, then
   * name the horizon above which every change will be heard before it is readable.
   */
  private async resync(): Promise<void> {
    if (this.resyncing || this.closed || this.healthy) return;
    this.resyncing = true;
    try {
      const [readable, grace] = await this.send(this.tracker.floor(), undefined);
      if (grace === 1 || !this.hub.up) return;
      // Stop PostgreSQL advances first: from here on, positions come only through the hub, in order.
      this.stopPolling();
      const horizon = await this.lastAllocated();
      if (!this.hub.up || this.inGrace) { this.startPolling(); return; }
      this.healthy = true;
      this.healthySince = Date.now();
      this.horizon = horizon;
      if (readable >= 0) this.tracker.sharedAdvanced(readable);
      this.log.info({ stream: this.name, readable, horizon }, 'stream positions shared through redis');
      for (const l of this.healthyListeners) l(horizon);
    } catch {
      if (!this.healthy) this.startPolling();
    } finally {
      this.resyncing = false;
    }
  }

  private startPolling(): void {
    if (this.poller || this.closed) return;
    this.poller = setInterval(() => void this.poll(), POLL_MS);
    this.poller.unref();
  }

  private stopPolling(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = undefined;
  }

  private async lastAllocated(): Promise<number> {
    const r = await this.db.raw(`SELECT last_value, is_called FROM ${this.sequence}`);
    const row = r.rows[0] as { last_value: number; is_called: boolean };
    return row.is_called ? Number(row.last_value) : 0;
  }

  /** Readable by PostgreSQL's account: the sequence first, then every worker's floor there. */
  private async fromPostgres(): Promise<number> {
    const last = await this.lastAllocated();
    const lowest = await PgFloors.lowest(this.db);
    return lowest === undefined ? last : Math.min(last, lowest);
  }

  private async poll(): Promise<void> {
    if (this.polling || this.closed || Date.now() - this.unhealthySince < ENTRY_DELAY_MS) return;
    // Redis answers and trusts its state: the others register there, not in PostgreSQL. Wait for
    // the resync (a stall, never a skip).
    if (this.hub.cmd.isReady && !this.inGrace) return;
    this.polling = true;
    try {
      const safe = await this.fromPostgres();
      if (!this.poller) return; // healthy again meanwhile: positions come through Redis
      if (this.tracker.sharedAdvanced(safe)) for (const l of this.fallbackListeners) l(safe);
    } catch (err) {
      this.log.debug({ err }, 'position poll failed');
    } finally {
      this.polling = false;
    }
  }

  /** Removes this worker's floors (it has nothing in flight at shutdown) and stops the timers. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.stopPolling();
    if (this.hub.cmd.isReady) await this.send(undefined, undefined).catch(() => {});
    await this.pgFloors.close();
  }
}
