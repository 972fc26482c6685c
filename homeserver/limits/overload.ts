import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { createHash } from 'node:crypto';
import { MatrixError } from '../http/errors.ts';
import type { RateLimits } from './service.ts';

export interface OverloadOptions {
  /** Requests being answered at once, long-polls aside. */
  maxRequests: number;
  /** Of those, writes: the bound of the write path (the room engine's queues fill from here). */
  maxWrites: number;
  /** /sync requests (long-polls or not) one access token may have in flight at once. */
  maxSyncsPerToken: number;
}

/** How long a shed client is asked to wait: long enough for a queue to drain, short enough not to lose a user. */
const SHED_RETRY_MS = 1_000;
/** The longest a /sync over RC_SYNC is held back before it is refused instead. */
const SYNC_MAX_WAIT_MS = 1_000;
/** At most one "shedding" log line this often (a flood must not flood the log too). */
const LOG_EVERY_MS = 5_000;

/**
 * Overload: past a bounded number of requests in flight the server answers 503 M_LIMIT_EXCEEDED
 * with Retry-After at once, before reading a body or touching the database, instead of queueing
 * without bound (memory) and answering everyone late (latency). When the flood stops, the counts
 * fall and every request is served again: there is nothing to reset.
 *
 * Long-polls (/sync with a timeout) mostly wait, so they are not counted as work; what bounds them
 * is a cap on the /sync requests of one access token in flight (429).
 */
export class OverloadGuard {
  private work = 0;
  private writes = 0;
  private polls = new Map<string, number>();
  /** Requests refused since start, by reason (logged, and read by tests through the log). */
  readonly shed = { requests: 0, writes: 0, syncs: 0 };
  private lastLog = 0;

  constructor(private opts: OverloadOptions, private log: Logger, private limits?: RateLimits) {}

  get inFlight(): { work: number; writes: number; syncTokens: number } {
    return { work: this.work, writes: this.writes, syncTokens: this.polls.size };
  }

  middleware(): Middleware {
    return async (ctx, next) => {
      if (isSync(ctx.method, ctx.path)) {
        // One client needs one /sync at a time (two while it switches filters); more from one
        // token is a flood, whether it waits (long-polls) or asks again and again (an old since).
        const token = accessToken(ctx.get('authorization'), ctx.query.access_token);
        const held = this.polls.get(token) ?? 0;
        if (held >= this.opts.maxSyncsPerToken) {
          this.refuse(ctx, 'syncs', 429, `Too many /sync requests in flight for this access token (at most ${this.opts.maxSyncsPerToken})`);
        }
        this.polls.set(token, held + 1);
        try {
          // And a rate (RC_SYNC): asking again at once with an old `since` is answered at once each
          // time. Past the rate a /sync waits its turn (up to a second) rather than failing: the
          // client sees a later, fuller answer, a flood sees at most MAX_SYNCS_PER_TOKEN waiting.
          if (this.limits?.enabled) await this.limits.pace('sync', createHash('sha256').update(token).digest('base64url').slice(0, 22), ctx, SYNC_MAX_WAIT_MS, ctx.state.shutdown as AbortSignal | undefined);
          // A long-poll mostly waits: it is not counted as work.
          if (Number(ctx.query.timeout) > 0) await next();
          else await this.counted(ctx, false, next);
        } finally {
          const left = (this.polls.get(token) ?? 1) - 1;
          if (left <= 0) this.polls.delete(token); else this.polls.set(token, left);
        }
        return;
      }
      if (ctx.method === 'OPTIONS') return next();
      await this.counted(ctx, ctx.method !== 'GET' && ctx.method !== 'HEAD', next);
    };
  }

  /** Counts a request as work while it runs; refused at once past the caps. */
  private async counted(ctx: { state: Record<string, unknown> }, write: boolean, next: () => Promise<unknown>): Promise<void> {
    if (this.work >= this.opts.maxRequests) this.refuse(ctx, 'requests', 503, 'The server is overloaded; try again shortly');
    if (write && this.writes >= this.opts.maxWrites) this.refuse(ctx, 'writes', 503, 'The server is overloaded with writes; try again shortly');
    this.work++;
    if (write) this.writes++;
    try { await next(); } finally {
      this.work--;
      if (write) this.writes--;
    }
  }

  private refuse(ctx: { state: Record<string, unknown> }, reason: keyof OverloadGuard['shed'], status: number, message: string): never {
    this.shed[reason]++;
    ctx.state.limiter = `overload:${reason}`;
    const now = Date.now();
    if (now - this.lastLog > LOG_EVERY_MS) {
      this.lastLog = now;
      this.log.warn({ shed: this.shed, inFlight: this.inFlight }, 'overloaded: shedding requests');
    }
    throw new MatrixError(status, 'M_LIMIT_EXCEEDED', message, { retry_after_ms: SHED_RETRY_MS }, { 'Retry-After': String(SHED_RETRY_MS / 1000) });
  }
}

function isSync(method: string, path: string): boolean {
  return method === 'GET' && path.startsWith('/_matrix/client/') && path.endsWith('/sync');
}

function accessToken(header: string, query: unknown): string {
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (m) return m[1]!;
  return typeof query === 'string' ? query : '';
}
