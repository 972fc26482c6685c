import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { MatrixError } from '../http/errors.ts';

export interface OverloadOptions {
  /** Requests being answered at once, long-polls aside. */
  maxRequests: number;
  /** Of those, writes: the bound of the write path (the room engine's queues fill from here). */
  maxWrites: number;
  /** /sync long-polls one access token may hold open at once. */
  maxLongPollsPerToken: number;
}

/** How long a shed client is asked to wait: long enough for a queue to drain, short enough not to lose a user. */
const SHED_RETRY_MS = 1_000;
/** At most one "shedding" log line this often (a flood must not flood the log too). */
const LOG_EVERY_MS = 5_000;

/**
 * Overload: past a bounded number of requests in flight the server answers 503 M_LIMIT_EXCEEDED
 * with Retry-After at once, before reading a body or touching the database, instead of queueing
 * without bound (memory) and answering everyone late (latency). When the flood stops, the counts
 * fall and every request is served again: there is nothing to reset.
 *
 * Long-polls (/sync with a timeout) mostly wait, so they are not counted as work; what bounds them
 * is a cap per access token (a client needs one, two while it switches filters).
 */
export class OverloadGuard {
  private work = 0;
  private writes = 0;
  private polls = new Map<string, number>();
  /** Requests refused since start, by reason (logged, and read by tests through the log). */
  readonly shed = { requests: 0, writes: 0, longPolls: 0 };
  private lastLog = 0;

  constructor(private opts: OverloadOptions, private log: Logger) {}

  get inFlight(): { work: number; writes: number; longPollTokens: number } {
    return { work: this.work, writes: this.writes, longPollTokens: this.polls.size };
  }

  middleware(): Middleware {
    return async (ctx, next) => {
      const token = isLongPoll(ctx.method, ctx.path, ctx.query.timeout) ? accessToken(ctx.get('authorization'), ctx.query.access_token) : undefined;
      if (token !== undefined) {
        const held = this.polls.get(token) ?? 0;
        if (held >= this.opts.maxLongPollsPerToken) {
          this.refuse(ctx, 'longPolls', 429, `Too many /sync long-polls for this access token (at most ${this.opts.maxLongPollsPerToken} at once)`);
        }
        this.polls.set(token, held + 1);
        try { await next(); } finally {
          const left = (this.polls.get(token) ?? 1) - 1;
          if (left <= 0) this.polls.delete(token); else this.polls.set(token, left);
        }
        return;
      }
      if (ctx.method === 'OPTIONS') return next();
      const write = ctx.method !== 'GET' && ctx.method !== 'HEAD';
      if (this.work >= this.opts.maxRequests) this.refuse(ctx, 'requests', 503, 'The server is overloaded; try again shortly');
      if (write && this.writes >= this.opts.maxWrites) this.refuse(ctx, 'writes', 503, 'The server is overloaded with writes; try again shortly');
      this.work++;
      if (write) this.writes++;
      try { await next(); } finally {
        this.work--;
        if (write) this.writes--;
      }
    };
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

/** GET /sync with a timeout above 0: a request that waits rather than works. */
function isLongPoll(method: string, path: string, timeout: unknown): boolean {
  return method === 'GET' && path.startsWith('/_matrix/client/') && path.endsWith('/sync') && typeof timeout === 'string' && Number(timeout) > 0;
}

function accessToken(header: string, query: unknown): string {
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (m) return m[1]!;
  return typeof query === 'string' ? query : '';
}
