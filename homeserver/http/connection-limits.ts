// Issue 7 (abuse limits): what one client can hold open. Timeouts against slow clients (headers,
// whole request, idle keep-alive), caps on connections per address and in all, on /sync long-polls
// per user and per address, and on WebSocket sync sockets per address.
import { STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import type { Requester } from './context.ts';
import { MatrixError } from './errors.ts';

export interface ConnectionLimitOptions {
  /** The header block must arrive within this (a socket that never sends one is closed then too). */
  headersTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this. */
  requestTimeoutMs: number;
  /** An idle keep-alive socket is closed after this. */
  keepAliveTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  maxLongPollsPerUser: number;
  maxLongPollsPerAddress: number;
  wsMaxSocketsPerAddress: number;
  /** Addresses the per-address connection cap does not apply to (a reverse proxy carries everyone's connections). */
  exempt?: (address: string) => boolean;
  /** The client's address of a request (behind a trusted proxy, the one its headers name). */
  clientAddress?: (req: IncomingMessage) => string;
  /** The user behind an access token, or undefined (a request that will fail its own auth). */
  authenticate: (token: string, ip: string | null) => Promise<Requester>;
  log: Logger;
}

/** How often node looks for requests past their header and request timeouts (its default, 30 s, would let them run long past). */
const TIMEOUT_CHECK_MS = 1_000;
/** What a refused long-poll is told to wait before trying again. */
const RETRY_AFTER_MS = 2_000;
/** Refusals are logged at most this often (a flood must not flood the log too). */
const LOG_EVERY_MS = 10_000;

/** +1 / −1 on a counter map that never keeps a zero (it holds only what is open now). */
function add(map: Map<string, number>, key: string, delta: number): number {
  const n = (map.get(key) ?? 0) + delta;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
  return n;
}

export class ConnectionLimits {
  private connections = new Map<string, number>();
  private pollsByUser = new Map<string, number>();
  private pollsByAddress = new Map<string, number>();
  private socketsByAddress = new Map<string, number>();
  private refusals = new Map<string, number>();
  private lastLog = 0;

  constructor(private opts: ConnectionLimitOptions) {}

  /** Options for http.createServer: node checks its timeouts every TIMEOUT_CHECK_MS. */
  static serverOptions(): { connectionsCheckingInterval: number } {
    return { connectionsCheckingInterval: TIMEOUT_CHECK_MS };
  }

  /** Applies the timeouts and the connection caps to the server. */
  attach(server: Server): void {
    server.headersTimeout = this.opts.headersTimeoutMs;
    // Node needs the request timeout to be at least the headers timeout.
    server.requestTimeout = Math.max(this.opts.requestTimeoutMs, this.opts.headersTimeoutMs);
    server.keepAliveTimeout = this.opts.keepAliveTimeoutMs;
    // Past this node closes new sockets at once, before any of our code runs.
    server.maxConnections = this.opts.maxConnections;
    server.on('connection', (socket: Socket) => this.onConnection(socket));
  }

  private onConnection(socket: Socket): void {
    const address = socket.remoteAddress ?? '';
    if (this.opts.exempt?.(address)) return;
    if (add(this.connections, address, 1) > this.opts.maxConnectionsPerAddress) {
      add(this.connections, address, -1);
      this.refused('connections per address', address);
      // Nothing has been read yet: there is no request to answer, only a socket to close.
      socket.destroy();
      return;
    }
    socket.once('close', () => add(this.connections, address, -1));
  }

  /**
   * Caps /sync long-polls (a timeout above 0) per user and per address: one more is refused with
   * 429 M_LIMIT_EXCEEDED. A sync that answers at once is not counted.
   */
  longPolls(): Middleware {
    return async (ctx, next) => {
      if (ctx.method !== 'GET' || !/^\/_matrix\/client\/v3\/sync\/?$/.test(ctx.path) || !(Number(ctx.query.timeout) > 0)) return next();
      const address = ctx.ip || '';
      const user = await this.userOf(ctx.get('authorization'), ctx.query.access_token, address);
      if ((this.pollsByAddress.get(address) ?? 0) >= this.opts.maxLongPollsPerAddress) throw this.tooMany('long-polls per address', address);
      if (user && (this.pollsByUser.get(user) ?? 0) >= this.opts.maxLongPollsPerUser) throw this.tooMany('long-polls per user', user);
      add(this.pollsByAddress, address, 1);
      if (user) add(this.pollsByUser, user, 1);
      try {
        await next();
      } finally {
        add(this.pollsByAddress, address, -1);
        if (user) add(this.pollsByUser, user, -1);
      }
    };
  }

  /** The user of a request's token; undefined when it has none or a bad one (its handler answers that). */
  private async userOf(header: string, query: unknown, ip: string): Promise<string | undefined> {
    const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1] ?? (typeof query === 'string' && query ? query : undefined);
    if (!token) return undefined;
    try {
      return (await this.opts.authenticate(token, ip || null)).userId;
    } catch {
      return undefined;
    }
  }

  /**
   * Counts a WebSocket upgrade against its address: true if it may go on (and is counted until its
   * socket closes); false if it was refused here (429, socket closed).
   */
  admitUpgrade(req: IncomingMessage, socket: Duplex): boolean {
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return true;
    // Counted per client: behind a proxy, the address its headers name.
    const address = this.opts.clientAddress?.(req) ?? req.socket.remoteAddress ?? '';
    if ((this.socketsByAddress.get(address) ?? 0) >= this.opts.wsMaxSocketsPerAddress) {
      const err = this.tooMany('WebSocket sockets per address', address);
      const body = JSON.stringify({ errcode: err.errcode, error: err.message, ...err.extra });
      socket.end(`HTTP/1.1 429 ${STATUS_CODES[429]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nRetry-After: ${Math.ceil(RETRY_AFTER_MS / 1000)}\r\nConnection: close\r\n\r\n${body}`);
      return false;
    }
    add(this.socketsByAddress, address, 1);
    socket.once('close', () => add(this.socketsByAddress, address, -1));
    return true;
  }

  private tooMany(limiter: string, who: string): MatrixError {
    this.refused(limiter, who);
    return new MatrixError(429, 'M_LIMIT_EXCEEDED', `Too many open ${limiter}`, { retry_after_ms: RETRY_AFTER_MS }, { 'Retry-After': String(Math.ceil(RETRY_AFTER_MS / 1000)) });
  }

  /** Counts a refusal; the log names the limiter, once per LOG_EVERY_MS with the counts since. */
  private refused(limiter: string, who: string): void {
    add(this.refusals, limiter, 1);
    const now = Date.now();
    if (now - this.lastLog < LOG_EVERY_MS) return;
    this.lastLog = now;
    this.opts.log.warn({ refused: Object.fromEntries(this.refusals), last: { limiter, who } }, 'connection limits refused clients');
    this.refusals.clear();
  }
}
