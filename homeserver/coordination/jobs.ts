import pg from 'pg';
import type { Logger } from 'pino';

/** Work that must run on exactly one worker (presence timeouts, pushers, profile propagation…). */
export interface BackgroundJob {
  start(): Promise<void> | void;
  stop(): Promise<void> | void;
}

/** The advisory lock key (a constant: one job runner per database). */
const LOCK_KEY = 0x5375_7000 + 6; // "Sup" + issue 6
/** How often a worker that does not hold the lock tries to take it, and the holder checks its connection. */
const TRY_MS = 1_000;

/**
 * Runs the registered background jobs on exactly one worker: the one holding a PostgreSQL
 * advisory lock on a connection of its own. When that worker dies its connection closes, the
 * lock is free at once, and another worker takes over within TRY_MS. A holder whose connection
 * breaks stops its jobs before anyone else can start them again (it cannot tell whether the lock
 * is still its own).
 *
 * Alone (`connection` undefined: one process, no shared database), jobs start at once.
 */
export class BackgroundJobs {
  private jobs: Array<{ name: string; job: BackgroundJob }> = [];
  private running = false;
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private busy: Promise<void> = Promise.resolve();

  constructor(private connection: string | object | undefined, private log: Logger) {}

  register(name: string, job: BackgroundJob): void {
    this.jobs.push({ name, job });
    if (this.running) void this.serial(() => this.startOne(name, job));
  }

  /** Whether this worker runs the jobs now. */
  get leader(): boolean {
    return this.running;
  }

  async start(): Promise<void> {
    if (this.connection === undefined) {
      await this.serial(() => this.begin());
      return;
    }
    await this.serial(() => this.tryTake());
    this.timer = setInterval(() => void this.serial(() => (this.running ? this.check() : this.tryTake())), TRY_MS);
    this.timer.unref();
  }

  /** Stops the jobs (if they run here) and gives the lock up. */
  async stop(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.serial(async () => {
      await this.end();
      await this.client?.end().catch(() => {});
      this.client = undefined;
    });
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    this.busy = this.busy.then(fn).catch((err) => this.log.error({ err }, 'background jobs: lock handling failed'));
    return this.busy;
  }

  private async tryTake(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.client) {
        const c = new pg.Client(typeof this.connection === 'string' ? { connectionString: this.connection } : (this.connection as pg.ClientConfig));
        c.on('error', () => {}); // seen by check()
        await c.connect();
        await c.query("SET application_name = 'super-server jobs'");
        this.client = c;
      }
      const r = await this.client.query('SELECT pg_try_advisory_lock($1) AS ok', [LOCK_KEY]);
      if (r.rows[0].ok) await this.begin();
    } catch (err) {
      this.log.debug({ err }, 'background jobs: lock not reachable');
      await this.client?.end().catch(() => {});
      this.client = undefined;
    }
  }

  private async check(): Promise<void> {
    try {
      await this.client!.query('SELECT 1');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'background jobs: lost the lock connection; stopping them here');
      await this.end();
      await this.client?.end().catch(() => {});
      this.client = undefined;
    }
  }

  private async begin(): Promise<void> {
    if (this.running || this.closed) return;
    this.running = true;
    this.log.info({ pid: process.pid, jobs: this.jobs.map((j) => j.name) }, 'background jobs run on this worker');
    for (const { name, job } of this.jobs) await this.startOne(name, job);
  }

  private async startOne(name: string, job: BackgroundJob): Promise<void> {
    try { await job.start(); } catch (err) { this.log.error({ err, job: name }, 'background job failed to start'); }
  }

  private async end(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    for (const { name, job } of [...this.jobs].reverse()) {
      try { await job.stop(); } catch (err) { this.log.error({ err, job: name }, 'background job failed to stop'); }
    }
    if (this.client) await this.client.query('SELECT pg_advisory_unlock($1)', [LOCK_KEY]).catch(() => {});
  }
}
