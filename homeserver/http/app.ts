import { setMaxListeners } from 'node:events';
import Koa, { type Context, type Middleware } from 'koa';
import Router, { type RouterContext } from '@koa/router';
import type { Logger } from 'pino';
import { MatrixError } from './errors.ts';
import { cors } from './cors.ts';
import { parseJsonObject, readRawBody, refuseNulParams } from './body.ts';
import { isDatabaseUnavailable } from '../storage/db.ts';
import type { AccountService } from '../accounts/service.ts';
// issue 7 (limits7): the client's address behind trusted proxies; rate limits; shedding load.
import { clientAddress, TrustedProxies } from './client-address.ts';
import { RateLimits } from '../limits/service.ts';
import type { OverloadGuard } from '../limits/overload.ts';

export type Handler = (ctx: RouterContext) => Promise<unknown> | unknown;
export type Method = 'get' | 'post' | 'put' | 'delete';
export interface RouteOptions {
  /** true: a valid access token is required; 'optional': used when present. */
  auth?: boolean | 'optional';
  /** Do not read the body as JSON (media uploads). */
  rawBody?: boolean;
  /** issue 11: a larger JSON body than MAX_REQUEST_BYTES (federation transactions of 50 PDUs and 100 EDUs). */
  maxBodyBytes?: number;
  /** issue 9: a locked account may call it (/logout, /logout/all); others answer M_USER_LOCKED. */
  allowLocked?: boolean;
}

/** A path's routing group: its first four segments (fewer for a shorter path). */
function groupKey(path: string): string {
  let end = 0;
  for (let n = 0; n < 5; n++) {
    const i = path.indexOf('/', end + 1);
    if (i < 0) return path;
    end = i;
  }
  return path.slice(0, end);
}

/**
 * The flat route list. Capabilities register their endpoints here; the handler returns the JSON
 * body (200) or sets ctx.status itself.
 */
export class Routes {
  /**
   * One router per path group (the first four segments: `/_matrix/client/v3/rooms`,
   * `/_synapse/admin/v1/users`, …), and one for routes with a parameter among those segments:
   * a request is matched against its group's routes only, not against every route of the server
   * (koa-router tries each route's pattern in turn: with ~400 routes that was 7 % of a send's CPU).
   */
  private groups = new Map<string, { router: Router; dispatch: Middleware }>();
  private readonly anywhere = new Router();
  /** The rate limits handlers call (`r.limits.check('message', userId, ctx)`); main.ts sets them. */
  limits: RateLimits = RateLimits.off();

  /** `bodyTimeoutMs`: a JSON body must arrive whole within it (issue 7: slow clients). */
  constructor(private accounts: AccountService, private maxBodyBytes: number, private bodyTimeoutMs = 0) {}

  /**
   * A client-server endpoint, served under /_matrix/client/{v3,…}. The r0 prefix reaches the
   * same routes through a rewrite to v3 (see createApp), so the router tries half as many routes.
   */
  client(method: Method, path: string, handler: Handler, opts: RouteOptions = {}, versions = ['v3', 'r0']): void {
    for (const v of versions) if (v !== 'r0') this.raw(method, `/_matrix/client/${v}${path}`, handler, opts);
  }

  raw(method: Method, path: string, handler: Handler, opts: RouteOptions = {}): void {
    const key = groupKey(path);
    let router = this.anywhere;
    if (!/[:{(*]/.test(key)) {
      let group = this.groups.get(key);
      if (!group) {
        const r = new Router();
        group = { router: r, dispatch: r.routes() as unknown as Middleware };
        this.groups.set(key, group);
      }
      router = group.router;
    }
    router[method](path, this.wrap(handler, opts));
  }

  /** Whether a route serves this path (with `method`: a route for that method). */
  match(path: string, method: string): { path: boolean; method: boolean } {
    let path_ = false;
    let method_ = false;
    for (const router of [this.groups.get(groupKey(path))?.router, this.anywhere]) {
      if (!router) continue;
      const m = router.match(path, method);
      path_ ||= m.path.length > 0;
      method_ ||= m.route;
    }
    return { path: path_, method: method_ };
  }

  /** The routing middleware: the request's group's routes, then those with early parameters. */
  middleware(): Middleware {
    const anywhere = this.anywhere.routes() as unknown as Middleware;
    return async (ctx, next) => {
      const group = this.groups.get(groupKey(ctx.path));
      if (group) await group.dispatch(ctx, () => anywhere(ctx, next));
      else await anywhere(ctx, next);
    };
  }

  private wrap(handler: Handler, opts: RouteOptions): Middleware {
    return async (ctx) => {
      refuseNulParams((ctx as RouterContext).params, ctx.query);
      // Who is asking comes first: an unauthenticated client gets its 401 at once, without the
      // server buffering (or waiting for) a body it will never use.
      if (opts.auth) {
        const token = accessToken(ctx);
        if (token) ctx.state.requester = await this.accounts.authenticate(token, ctx.ip || null, opts.allowLocked);
        else if (opts.auth === true) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
      }
      if (!opts.rawBody && ctx.method !== 'GET' && ctx.method !== 'HEAD') {
        ctx.state.body = parseJsonObject(await readRawBody(ctx, Math.max(opts.maxBodyBytes ?? 0, this.maxBodyBytes), this.bodyTimeoutMs));
      }
      const result = await handler(ctx as RouterContext);
      if (ctx.body === undefined || ctx.body === null) ctx.body = result ?? {};
    };
  }
}

function accessToken(ctx: Context): string | undefined {
  const header = ctx.get('authorization');
  if (header) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Invalid Authorization header');
    return m[1];
  }
  const q = ctx.query.access_token;
  return typeof q === 'string' && q ? q : undefined;
}

/** Turns errors into the spec's JSON; anything unexpected is M_UNKNOWN 500, logged, never leaked. */
function errors(_log: Logger): Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      if (err instanceof MatrixError) {
        ctx.status = err.status;
        for (const [k, v] of Object.entries(err.headers)) ctx.set(k, v);
        ctx.body = (err as { bare?: boolean }).bare ? { ...err.extra } : { errcode: err.errcode, error: err.message, ...err.extra };
        return;
      }
      if (isDatabaseUnavailable(err)) {
        // The database is down or restarting: the request failed within the bounded wait; retry.
        ctx.status = 503;
        ctx.set('Retry-After', '5');
        ctx.body = { errcode: 'M_UNKNOWN', error: 'Database unavailable, try again shortly' };
        (ctx.state.log as Logger).warn({ err: errorSummary(err), reqId: ctx.state.reqId }, 'database unavailable');
        return;
      }
      ctx.status = 500;
      ctx.body = { errcode: 'M_UNKNOWN', error: 'Internal server error' };
      (ctx.state.log as Logger).error({ err, reqId: ctx.state.reqId }, 'unhandled error');
    }
  };
}

/** A database outage fails many requests at once: log what failed, not a stack per request. */
function errorSummary(err: unknown): { message: string; code?: string } {
  const e = err as { message?: string; code?: string };
  return { message: String(e?.message ?? err), ...(e?.code ? { code: e.code } : {}) };
}

/**
 * The requests being answered, for a draining shutdown: `shutdown` aborts long-polls (they answer
 * at once with what they have), `idle()` resolves when the last in-flight request is answered.
 */
export class InFlight {
  private count = 0;
  private waiters: Array<() => void> = [];
  readonly shutdown = new AbortController();

  /** What long-polls run at shutdown: a Set, since an EventTarget listener each costs O(listeners) to add and remove. */
  private shutdownHooks = new Set<() => void>();

  constructor() {
    setMaxListeners(0, this.shutdown.signal);
    this.shutdown.signal.addEventListener('abort', () => {
      for (const hook of this.shutdownHooks) hook();
      this.shutdownHooks.clear();
    }, { once: true });
  }

  /** Runs `hook` when the server starts shutting down (at once if it has); returns its removal. */
  whenShuttingDown(hook: () => void): () => void {
    if (this.shutdown.signal.aborted) {
      hook();
      return () => {};
    }
    this.shutdownHooks.add(hook);
    return () => this.shutdownHooks.delete(hook);
  }

  get size(): number { return this.count; }

  middleware(): Middleware {
    return async (ctx, next) => {
      this.count++;
      ctx.state.shutdown = this.shutdown.signal;
      ctx.state.inFlight = this;
      // Keep-alive connections must not carry new requests into a server that is going away.
      if (this.shutdown.signal.aborted) ctx.set('Connection', 'close');
      try { await next(); } finally {
        if (--this.count === 0) for (const w of this.waiters.splice(0)) w();
      }
    };
  }

  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

let nextRequest = 1;

/** One log line per request, with latency; never the query string (it may hold a token). */
function requestLog(log: Logger): Middleware {
  return async (ctx, next) => {
    const start = process.hrtime.bigint();
    ctx.state.reqId = `${process.pid.toString(36)}-${(nextRequest++).toString(36)}`;
    ctx.state.log = log;
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const requester = ctx.state.requester as { userId?: string } | undefined;
      // A refusal names the limiter (rate limits, overload) that made it.
      if (log.isLevelEnabled('info')) log.info({ reqId: ctx.state.reqId, method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(ms * 10) / 10, user: requester?.userId, ip: ctx.ip, ...(ctx.state.limiter ? { limiter: ctx.state.limiter } : {}) }, 'request');
    }
  };
}

/** issue 7 (limits7): whose headers name the client; what sheds load. */
export interface EdgeOptions {
  trustedProxies?: TrustedProxies;
  overload?: OverloadGuard;
  /** issue 9 (mod9): refusals before any other work (IP / CIDR bans), right after the error handler. */
  early?: Middleware[];
}

export function createApp(routes: Routes, log: Logger, extra: Middleware[] = [], inFlight?: InFlight, edge: EdgeOptions = {}): Koa {
  const app = new Koa();
  // koa's own proxy mode believes any X-Forwarded-For; ctx.ip is set from client-address.ts instead.
  app.proxy = false;
  const trusted = edge.trustedProxies ?? new TrustedProxies('');
  if (inFlight) app.use(inFlight.middleware());
  app.use(async (ctx, next) => {
    ctx.request.ip = clientAddress(ctx.req, trusted);
    await next();
  });
  app.use(requestLog(log));
  app.use(errors(log));
  for (const m of edge.early ?? []) app.use(m);
  app.use(cors);
  if (edge.overload) app.use(edge.overload.middleware());
  app.use(async (ctx, next) => {
    // r0 is the old name of v3: one set of routes serves both.
    if (ctx.path.startsWith('/_matrix/client/r0/')) ctx.path = '/_matrix/client/v3/' + ctx.path.slice('/_matrix/client/r0/'.length);
    await next();
  });
  for (const m of extra) app.use(m);
  app.use(routes.middleware());
  app.use(async (ctx) => {
    // Nothing matched: 405 when the path exists with another method, else 404, both M_UNRECOGNIZED.
    if (ctx.body !== undefined && ctx.body !== null) return;
    if (routes.match(ctx.path, ctx.method).path) throw new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
    throw new MatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
  });
  return app;
}
