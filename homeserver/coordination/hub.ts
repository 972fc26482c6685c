import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Redis } from './redis.ts';

/**
 * The workers' meeting point in Redis: one command connection and ONE subscriber connection for
 * every channel of this worker (stream positions, notifications, cache invalidations). One
 * subscriber keeps Redis' order: a notification published before a position advance is heard
 * before it.
 *
 * `up` is true while both connections work and the subscription is proved live (a probe published
 * on the command connection came back on the subscriber); listeners hear every change.
 */
export class RedisHub {
  readonly workerId = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private handlers = new Map<string, Array<(message: string) => void>>();
  private upListeners: Array<(up: boolean) => void> = [];
  private isUp = false;
  private probing = false;
  private probeWaiters = new Map<string, () => void>();
  private timer: NodeJS.Timeout;
  private closed = false;

  private constructor(readonly cmd: Redis, readonly sub: Redis, readonly prefix: string, private log: Logger) {
    const down = () => this.setUp(false);
    for (const c of [cmd, sub]) {
      c.on('error', down);
      c.on('end', down);
      c.on('reconnecting', down);
      c.on('ready', () => void this.probe());
    }
    // A lost probe or a missed event: look again every second.
    this.timer = setInterval(() => { if (!this.isUp) void this.probe(); }, 1_000);
    this.timer.unref();
  }

  static async connect(cmd: Redis, prefix: string, log: Logger): Promise<RedisHub> {
    const sub = cmd.duplicate();
    sub.on('error', () => {}); // reported by the command connection's listener in redis.ts
    await sub.connect();
    const hub = new RedisHub(cmd, sub, prefix, log);
    await sub.subscribe(hub.channel('hub'), (m) => hub.probeWaiters.get(m)?.());
    await hub.probe();
    return hub;
  }

  channel(name: string): string {
    return `${this.prefix}${name}`;
  }

  key(name: string): string {
    return `${this.prefix}${name}`;
  }

  get up(): boolean {
    return this.isUp;
  }

  onUp(listener: (up: boolean) => void): void {
    this.upListeners.push(listener);
  }

  /** Listens on a channel (prefixed here). Subscriptions survive reconnects (the client renews them). */
  async subscribe(name: string, handler: (message: string) => void): Promise<void> {
    const channel = this.channel(name);
    const list = this.handlers.get(channel);
    if (list) { list.push(handler); return; }
    this.handlers.set(channel, [handler]);
    await this.sub.subscribe(channel, (message) => {
      for (const h of this.handlers.get(channel) ?? []) {
        try { h(message); } catch (err) { this.log.error({ err, channel }, 'redis message handler failed'); }
      }
    });
  }

  /**
   * Publishes on a channel (prefixed here); resolves once Redis has handed it to the subscribers
   * (false when Redis is away: the message is lost).
   */
  publish(name: string, message: string): Promise<boolean> {
    if (!this.cmd.isReady) return Promise.resolve(false);
    return this.cmd.publish(this.channel(name), message).then(() => true, () => false);
  }

  private setUp(up: boolean): void {
    if (this.closed || up === this.isUp) return;
    this.isUp = up;
    this.log[up ? 'info' : 'warn'](up ? 'redis coordination live' : 'redis coordination lost: reading positions from PostgreSQL until it is back');
    for (const l of this.upListeners) {
      try { l(up); } catch (err) { this.log.error({ err }, 'redis up/down listener failed'); }
    }
  }

  /** Publishes a token and waits (bounded) to hear it on the subscriber: the subscription is live. */
  private async probe(): Promise<void> {
    if (this.probing || this.closed || !this.cmd.isReady || !this.sub.isReady) return;
    this.probing = true;
    const token = randomBytes(8).toString('hex');
    try {
      const heard = new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 1_000);
        this.probeWaiters.set(token, () => { clearTimeout(t); resolve(true); });
      });
      await this.cmd.publish(this.channel('hub'), token);
      if (await heard) this.setUp(true);
    } catch {
      // Down again: the next 'ready' or the timer probes again.
    } finally {
      this.probeWaiters.delete(token);
      this.probing = false;
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.sub.destroy();
  }
}
