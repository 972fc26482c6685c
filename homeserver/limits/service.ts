import type { Context } from 'koa';
import type { Logger } from 'pino';
import { LruCache } from '../cache/lru.ts';
import type { Requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import type { Rule } from './bucket.ts';
import type { RateLimiter } from './limiter.ts';
import { PER_USER, type LimiterName, type Rules } from './rules.ts';
import type { Override } from './store.ts';

/** Where overrides are kept (limits/store.ts). */
export interface OverrideSource {
  get(userId: string): Promise<Override | undefined>;
  set(userId: string, o: Override): Promise<void>;
  delete(userId: string): Promise<void>;
}

/** An override read from the database serves this long (and is dropped at once on a change, on every worker). */
const OVERRIDE_CACHE_MS = 30_000;

/**
 * The rate limits every route calls: `check(name, key, ctx)` pays one token from the named
 * limiter's bucket for `key` or throws 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After.
 * Off (RATE_LIMITS=off): every check passes.
 */
export class RateLimits {
  private overrides = new LruCache<string, { o: Override | null; at: number }>(10_000);
  /** Called after an override changed here, so other workers drop their cached copy. */
  overrideChanged: (userId: string) => void = () => {};

  constructor(
    private limiter: RateLimiter | undefined,
    readonly rules: Rules,
    private store: OverrideSource | undefined,
    private log: Logger | undefined,
    private serverName = '',
  ) {}

  /** Limits that never refuse (RATE_LIMITS=off, and Routes built without limits in unit tests). */
  static off(): RateLimits {
    return new RateLimits(undefined, {} as Rules, undefined, undefined);
  }

  get enabled(): boolean { return this.limiter !== undefined; }

  /**
   * Pays `cost` tokens (0: only checks that one is there) from `name`'s bucket for `key`. The
   * acting user (ctx.state.requester) is exempt if an admin, and has their override applied to
   * the per-user limiters.
   */
  async check(name: LimiterName, key: string, ctx?: Context, cost = 1): Promise<void> {
    if (!this.limiter) return;
    const rule = await this.ruleFor(name, ctx?.state.requester as Requester | undefined);
    if (!rule) return;
    const d = await this.limiter.take(`rl:${name}:${key}`, rule, cost);
    if (!d.allowed) this.refuse(name, key, d.retryAfterMs, ctx);
  }

  /**
   * As check(), but a short wait is waited out instead of refused (at most `maxWaitMs` in all):
   * for actions a client repeats on its own, where an answer a moment later is better than an
   * error (a /sync held back carries more when it comes).
   */
  async pace(name: LimiterName, key: string, ctx: Context, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    if (!this.limiter) return;
    const rule = await this.ruleFor(name, ctx.state.requester as Requester | undefined);
    if (!rule) return;
    let waited = 0;
    for (;;) {
      const d = await this.limiter.take(`rl:${name}:${key}`, rule, 1);
      if (d.allowed) return;
      if (waited + d.retryAfterMs > maxWaitMs || signal?.aborted) this.refuse(name, key, d.retryAfterMs, ctx);
      await new Promise((r) => setTimeout(r, d.retryAfterMs));
      waited += d.retryAfterMs;
    }
  }

  /**
   * Around one password login (Synapse's rc_login): attempts per client address, successful logins
   * per account, failed ones per account, escalating (each failure past the burst doubles the wait);
   * a success clears the failures. Both per-account buckets are paid before the password is
   * checked (concurrent guesses cannot all slip past a bucket that is about to be empty) and set
   * right after: a failure gives back the success token, a success clears the failures.
   */
  async login<T>(ctx: Context, account: string, attempt: () => Promise<T>): Promise<T> {
    const limiter = this.limiter;
    if (!limiter || (ctx.state.requester as Requester | undefined)?.isAdmin) return attempt();
    const who = this.accountKey(account);
    await this.check('login_address', ctx.ip, ctx);
    await this.check('login_account', who, ctx);
    const failedKey = `rl:login_failed:${who}`;
    const failed = await limiter.take(failedKey, this.rules.login_failed, 1, true);
    if (!failed.allowed) {
      await limiter.take(`rl:login_account:${who}`, this.rules.login_account, -1);
      this.refuse('login_failed', who, failed.retryAfterMs, ctx);
    }
    let result: T;
    try {
      result = await attempt();
    } catch (err) {
      // Not a wrong password (a deactivated account, a server error): neither bucket keeps it.
      const wrongPassword = err instanceof MatrixError && err.status === 403 && err.errcode === 'M_FORBIDDEN';
      if (!wrongPassword) await limiter.take(failedKey, this.rules.login_failed, -1);
      await limiter.take(`rl:login_account:${who}`, this.rules.login_account, -1);
      throw err;
    }
    await limiter.reset(failedKey);
    return result;
  }

  /** `@Alice:server`, `alice` → `alice`; another server's id stays whole (lower case). */
  private accountKey(account: string): string {
    const lower = account.toLowerCase();
    const suffix = `:${this.serverName.toLowerCase()}`;
    return lower.startsWith('@') && lower.endsWith(suffix) ? lower.slice(1, -suffix.length) : lower;
  }

  private async ruleFor(name: LimiterName, me: Requester | undefined): Promise<Rule | undefined> {
    if (me?.isAdmin) return undefined;
    if (!me || !PER_USER.has(name)) return this.rules[name];
    const o = await this.override(me.userId);
    if (!o) return this.rules[name];
    if (o.messagesPerSecond === 0 && o.burstCount === 0) return undefined;
    return { perSecond: o.messagesPerSecond, burst: Math.max(1, o.burstCount) };
  }

  private refuse(name: LimiterName, key: string, retryAfterMs: number, ctx: Context | undefined): never {
    const log = (ctx?.state.log as Logger | undefined) ?? this.log;
    if (ctx) ctx.state.limiter = name;
    log?.info({ limiter: name, key, retryAfterMs, reqId: ctx?.state.reqId }, 'rate limited');
    throw new MatrixError(429, 'M_LIMIT_EXCEEDED', `Too many requests (${name}); try again in ${Math.ceil(retryAfterMs / 1000)} s`,
      { retry_after_ms: retryAfterMs }, { 'Retry-After': String(Math.ceil(retryAfterMs / 1000)) });
  }

  // ---- per-user overrides (Synapse's admin API override_ratelimit) -----------------------------

  async override(userId: string): Promise<Override | undefined> {
    if (!this.store) return undefined;
    const cached = this.overrides.get(userId);
    if (cached && Date.now() - cached.at < OVERRIDE_CACHE_MS) return cached.o ?? undefined;
    const o = await this.store.get(userId);
    this.overrides.set(userId, { o: o ?? null, at: Date.now() });
    return o;
  }

  async setOverride(userId: string, o: Override): Promise<void> {
    if (!this.store) throw new MatrixError(500, 'M_UNKNOWN', 'Rate limit overrides are not stored here');
    await this.store.set(userId, o);
    this.dropOverride(userId);
    this.overrideChanged(userId);
  }

  async deleteOverride(userId: string): Promise<void> {
    if (!this.store) return;
    await this.store.delete(userId);
    this.dropOverride(userId);
    this.overrideChanged(userId);
  }

  /** Another worker changed `userId`'s override (undefined: forget them all). */
  dropOverride(userId?: string): void {
    if (userId === undefined) this.overrides = new LruCache(10_000);
    else this.overrides.delete(userId);
  }

  close(): void { this.limiter?.close(); }
}
