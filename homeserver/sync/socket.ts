// WebSocket sync: GET /_matrix/client/unstable/io.superserver/sync, upgraded to a WebSocket, streams
// exactly what GET /sync returns (same JSON, same next_batch tokens), one text frame per batch.
//
// The protocol (README "WebSocket sync"):
//   - query: access_token (or Authorization: Bearer), since, filter, set_presence, full_state;
//   - the token, since and filter are checked BEFORE the upgrade: failures are plain HTTP errors
//     with Matrix JSON (401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN, 400 M_INVALID_PARAM / M_BAD_JSON,
//     429 M_LIMIT_EXCEEDED when the user has too many sockets) and no socket;
//   - then the first frame at once (initial sync, or what is new since `since`, possibly empty), and
//     one frame each time something new arrives, computed from the previous frame's next_batch: the
//     frames chain next_batch → since, so a client that reconnects with its last next_batch resumes
//     with nothing lost or repeated;
//   - the server pings every WS_PING_INTERVAL_MS; a socket that missed the previous pong is
//     terminated. A token that stops being valid closes the socket with 4401 after a last frame
//     {errcode: 'M_UNKNOWN_TOKEN', error}; a client that does not read is closed with 1008, a frame
//     from the client over 64 KiB with 1009, every socket with 1001 on shutdown.
import { IncomingMessage, STATUS_CODES, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import type { Requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { isDatabaseUnavailable } from '../storage/db.ts';
import { parseSyncToken, type SyncToken } from '../storage/stream-token.ts';
import type { SyncFilter } from './filter.ts';
import type { SyncRequest } from './service.ts';

export const SOCKET_SYNC_PATH = '/_matrix/client/unstable/io.superserver/sync';

/** Close codes (README "WebSocket sync"). */
export const CLOSE = {
  goingAway: 1001,
  policy: 1008,
  tooBig: 1009,
  internal: 1011,
  tryAgain: 1013,
  /** The access token is no longer valid (logged out, expired, deactivated). */
  unknownToken: 4401,
} as const;

/** How long one sync round long-polls; a round that times out sends its (empty) batch and starts the next. */
const ROUND_MS = 10 * 60_000;
/** Token re-checks in flight at once during a ping round (each may be a database query). */
const RECHECK_CONCURRENCY = 8;
/** A round that failed on an unavailable database is retried this many times, after about RETRY_MS × n. */
const RETRIES = 5;
const RETRY_MS = 1_000;
/** On shutdown, how long sockets get to answer their close frame before they are cut. */
const CLOSE_GRACE_MS = 1_000;

export interface SyncSocketsOptions {
  /** Access token → requester, exactly as the HTTP routes do (throws MatrixError 401). */
  authenticate(token: string, ip: string | null): Promise<Requester>;
  sync: { sync(me: Requester, req: SyncRequest, signal?: AbortSignal): Promise<Record<string, unknown>> };
  filters: { load(userId: string, raw: unknown): Promise<SyncFilter> };
  log: Logger;
  pingIntervalMs: number;
  maxSocketsPerUser: number;
  /** The client's address behind trusted proxies (http/client-address.ts), as the HTTP routes see it. */
  clientAddress?: (req: IncomingMessage) => string;
  /** Unsent bytes after which a client that does not read is closed (1008). */
  maxBufferedBytes?: number;
  /** Largest frame a client may send (1009 beyond). */
  maxMessageBytes?: number;
  /**
   * Called when a socket shows life (connect, each frame sent, each ping round it answered) with its `set_presence`:
   * the hook for a presence service ("a user goes offline when no sync or socket has been seen").
   */
  onActive?: (me: Requester, setPresence: string | undefined) => void;
}

/** Per-socket state, kept small: 10,000 idle sockets must fit in well under a GiB. */
interface Conn {
  ws: WebSocket;
  me: Requester;
  token: string;
  ip: string | null;
  setPresence: string | undefined;
  abort: AbortController;
  /** Answered the last ping (or has not been pinged yet). */
  alive: boolean;
  /** Seen over the buffer limit at the previous ping round. */
  clogged: boolean;
  /** Rounds failed in a row because the database was unavailable. */
  failures: number;
}

export class SyncSockets {
  private readonly wss: WebSocketServer;
  private readonly conns = new Set<Conn>();
  private readonly perUser = new Map<string, Set<Conn>>();
  private readonly timer: NodeJS.Timeout;
  private readonly maxBuffered: number;
  private closing = false;
  private rechecking = false;
  private closed?: Promise<void>;

  constructor(private readonly opts: SyncSocketsOptions) {
    this.maxBuffered = opts.maxBufferedBytes ?? 4 * 1024 * 1024;
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: opts.maxMessageBytes ?? 64 * 1024,
    });
    // One shared interval pings every socket: no timer per socket.
    this.timer = setInterval(() => this.pingRound(), opts.pingIntervalMs);
    this.timer.unref();
  }

  /** Sockets closed by the server since start, by reason (for logs, tests and benchmarks). */
  readonly stats = { reaped: 0, clogged: 0, revoked: 0 };

  /** Open sockets right now. */
  get size(): number {
    return this.conns.size;
  }

  /**
   * The http server's 'upgrade' listener. Our path with `Upgrade: websocket` is authenticated and
   * upgraded; a WebSocket elsewhere is 404; any other upgrade (e.g. `h2c`) is answered by `fallback`
   * (the normal app) as a plain request.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, fallback?: (req: IncomingMessage, res: ServerResponse) => void): void {
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://x');
    const isWebSocket = (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
    if (!isWebSocket && fallback) {
      answerNormally(req, socket, head, fallback);
      return;
    }
    if (url.pathname !== SOCKET_SYNC_PATH || !isWebSocket) {
      refuse(socket, new MatrixError(404, 'M_UNRECOGNIZED', 'No WebSocket is served here'));
      return;
    }
    void this.accept(req, socket, head, url).catch((err) => {
      if (err instanceof MatrixError) return refuse(socket, err);
      if (isDatabaseUnavailable(err)) return refuse(socket, new MatrixError(503, 'M_UNKNOWN', 'Database unavailable, try again shortly', {}, { 'Retry-After': '5' }));
      this.opts.log.error({ err }, 'websocket upgrade failed');
      refuse(socket, new MatrixError(500, 'M_UNKNOWN', 'Internal server error'));
    });
  }

  private async accept(req: IncomingMessage, socket: Duplex, head: Buffer, url: URL): Promise<void> {
    if (this.closing) throw new MatrixError(503, 'M_UNKNOWN', 'Server is shutting down', {}, { 'Retry-After': '5' });
    const q = url.searchParams;
    for (const [k, v] of q) if (k.includes('\0') || v.includes('\0')) throw new MatrixError(400, 'M_INVALID_PARAM', 'NUL in a query parameter');
    const token = accessToken(req, q);
    const ip = this.opts.clientAddress?.(req) ?? req.socket.remoteAddress ?? null;
    const me = await this.opts.authenticate(token, ip);
    const since = q.get('since') ? parseSyncToken(q.get('since'), 'since') : undefined;
    const fullState = q.get('full_state') === 'true';
    const setPresence = q.get('set_presence') ?? undefined;
    if (setPresence !== undefined && !['online', 'offline', 'unavailable'].includes(setPresence)) {
      throw new MatrixError(400, 'M_INVALID_PARAM', 'set_presence must be online, offline or unavailable');
    }
    const filter = await this.opts.filters.load(me.userId, q.get('filter') ?? undefined);
    if (this.closing) throw new MatrixError(503, 'M_UNKNOWN', 'Server is shutting down', {}, { 'Retry-After': '5' });
    const count = this.perUser.get(me.userId)?.size ?? 0;
    if (count >= this.opts.maxSocketsPerUser) {
      throw new MatrixError(429, 'M_LIMIT_EXCEEDED', `Too many sync sockets for this user (at most ${this.opts.maxSocketsPerUser})`, { retry_after_ms: 5_000 }, { 'Retry-After': '5' });
    }
    if (socket.destroyed) return; // the client went away while we checked
    let upgraded = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      upgraded = true;
      this.open(ws, { ws, me, token, ip, setPresence, abort: new AbortController(), alive: true, clogged: false, failures: 0 }, since, fullState, filter);
    });
    // ws answers a malformed handshake (bad key or version) itself with 400, without the callback.
    if (!upgraded) this.opts.log.debug('websocket handshake refused by ws');
  }

  private open(ws: WebSocket, c: Conn, since: SyncToken | undefined, fullState: boolean, filter: SyncFilter): void {
    this.conns.add(c);
    let mine = this.perUser.get(c.me.userId);
    if (!mine) this.perUser.set(c.me.userId, (mine = new Set()));
    mine.add(c);
    const log = this.opts.log;
    if (log.isLevelEnabled('info')) log.info({ user: c.me.userId, device: c.me.deviceId, sockets: this.conns.size }, 'sync socket opened');
    ws.on('pong', () => { c.alive = true; });
    // Nothing is asked of the client: its text frames are ignored; one over the limit closes (1009, by ws).
    ws.on('message', () => {});
    ws.on('error', (err) => { log.debug({ err: err.message, user: c.me.userId }, 'sync socket error'); });
    ws.once('close', (code) => {
      c.abort.abort();
      this.conns.delete(c);
      const set = this.perUser.get(c.me.userId);
      set?.delete(c);
      if (set?.size === 0) this.perUser.delete(c.me.userId);
      log.debug({ user: c.me.userId, code }, 'sync socket closed');
    });
    this.opts.onActive?.(c.me, c.setPresence);
    this.run(c, { since, timeoutMs: 0, fullState, filter });
  }

  /**
   * One sync round after another: each frame is computed from the previous frame's next_batch.
   * No async function stays suspended across the long wait (a suspended one keeps its registers,
   * and so the last batch, alive): while a socket waits, it holds only its since token and filter.
   */
  private run(c: Conn, req: SyncRequest): void {
    this.opts.sync.sync(c.me, req, c.abort.signal).then(
      (res) => this.deliver(c, req, res),
      (err) => this.fail(c, req, err),
    );
  }

  private async deliver(c: Conn, req: SyncRequest, res: Record<string, unknown>): Promise<void> {
    try {
      if (c.abort.signal.aborted) return;
      const next = parseSyncToken(res.next_batch, 'next_batch');
      // The token is re-checked at each ping round (not per frame: waking 1,000 sockets must not
      // cost 1,000 token queries), and at once for a user named to recheckUser().
      if (!(await this.send(c, JSON.stringify(res)))) return;
      c.failures = 0;
      this.opts.onActive?.(c.me, c.setPresence);
      this.run(c, { since: next, timeoutMs: ROUND_MS, fullState: false, filter: req.filter });
    } catch (err) {
      this.fail(c, req, err);
    }
  }

  /**
   * A round that failed. The database busy or away (a pool wait that timed out when one send woke
   * thousands of sockets, a restart): the same round again after a jittered pause, from the same
   * since, so nothing is lost and no reconnect storm follows; after RETRIES failures in a row, 1013.
   */
  private fail(c: Conn, req: SyncRequest, err: unknown): void {
    if (c.abort.signal.aborted) return;
    if (isDatabaseUnavailable(err)) {
      c.failures++;
      if (c.failures <= RETRIES) {
        const pause = RETRY_MS * c.failures * (0.5 + Math.random());
        setTimeout(() => { if (!c.abort.signal.aborted) this.run(c, req); }, pause).unref();
        return;
      }
      this.opts.log.warn({ user: c.me.userId }, 'sync socket: database unavailable; closing (the client resumes from its last next_batch)');
      this.closeConn(c, CLOSE.tryAgain, 'Database unavailable, reconnect shortly');
    } else {
      this.opts.log.error({ err, user: c.me.userId }, 'sync socket failed');
      this.closeConn(c, CLOSE.internal, 'Internal server error');
    }
  }

  /** Sends one frame; resolves once it is handed to the kernel (so at most one frame waits in memory). */
  private send(c: Conn, text: string): Promise<boolean> {
    const ws = c.ws;
    if (ws.readyState !== WebSocket.OPEN) return Promise.resolve(false);
    if (ws.bufferedAmount > this.maxBuffered) {
      this.closeConn(c, CLOSE.policy, 'Client is not reading');
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      const onAbort = () => resolve(false);
      c.abort.signal.addEventListener('abort', onAbort, { once: true });
      ws.send(text, (err) => {
        c.abort.signal.removeEventListener('abort', onAbort);
        resolve(!err);
      });
    });
  }

  /** False (and the socket closed with 4401 after a last error frame) when the token is no longer valid. */
  private async tokenStillValid(c: Conn): Promise<boolean> {
    try {
      await this.opts.authenticate(c.token, c.ip);
      return true;
    } catch (err) {
      if (err instanceof MatrixError && err.status === 401) {
        this.revoke(c, err);
        return false;
      }
      return true; // the database is away: keep the socket, check again next round
    }
  }

  private revoke(c: Conn, err: MatrixError): void {
    if (c.abort.signal.aborted) return;
    this.stats.revoked++;
    c.abort.abort();
    if (c.ws.readyState !== WebSocket.OPEN) return;
    c.ws.send(JSON.stringify({ errcode: err.errcode, error: err.message, ...err.extra }));
    this.closeConn(c, CLOSE.unknownToken, err.errcode);
  }

  private closeConn(c: Conn, code: number, reason: string): void {
    c.abort.abort();
    if (c.ws.readyState === WebSocket.OPEN || c.ws.readyState === WebSocket.CONNECTING) c.ws.close(code, reason.slice(0, 120));
  }

  /** Every interval: reap sockets that missed the last pong, ping the rest, re-check their tokens. */
  private pingRound(): void {
    for (const c of this.conns) {
      // Over the limit for a whole interval: the client is not reading; do not buffer without bound.
      // (The close frame cannot pass what is stuck before it: the socket is cut at once.)
      const over = c.ws.bufferedAmount > this.maxBuffered;
      if (over && c.clogged) {
        this.stats.clogged++;
        this.closeConn(c, CLOSE.policy, 'Client is not reading');
        c.ws.terminate();
        continue;
      }
      c.clogged = over;
      if (!c.alive) {
        this.stats.reaped++;
        c.abort.abort();
        c.ws.terminate(); // 'close' follows and forgets it
        continue;
      }
      c.alive = false;
      try { c.ws.ping(); } catch { /* closing */ }
    }
    void this.recheckTokens();
  }

  /**
   * Re-checks the tokens of a user's sockets now (for a composition root that learns of a logout,
   * a deleted device or a deactivation): those no longer valid close with 4401.
   */
  recheckUser(userId: string): void {
    for (const c of this.perUser.get(userId) ?? []) if (!c.abort.signal.aborted) void this.tokenStillValid(c);
  }

  /** A logout (or expiry) closes the socket at the latest at the next ping round. */
  private async recheckTokens(): Promise<void> {
    if (this.rechecking) return;
    this.rechecking = true;
    try {
      const all = [...this.conns];
      let i = 0;
      const worker = async () => {
        while (i < all.length && !this.closing) {
          const c = all[i++]!;
          if (c.ws.readyState !== WebSocket.OPEN || c.abort.signal.aborted) continue;
          if ((await this.tokenStillValid(c)) && c.alive) this.opts.onActive?.(c.me, c.setPresence);
        }
      };
      await Promise.all(Array.from({ length: Math.min(RECHECK_CONCURRENCY, all.length) }, worker));
    } finally { this.rechecking = false; }
  }

  /** Shutdown: refuse new sockets, close every open one with 1001 (going away), cut those that do not answer. */
  close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    return (this.closed ??= (async () => {
      this.closing = true;
      clearInterval(this.timer);
      const open = [...this.conns];
      const gone = Promise.all(open.map((c) => new Promise<void>((resolve) => {
        if (c.ws.readyState === WebSocket.CLOSED) return resolve();
        c.ws.once('close', () => resolve());
      })));
      for (const c of open) this.closeConn(c, CLOSE.goingAway, 'Server is shutting down');
      const timer = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([gone, timer]);
      for (const c of this.conns) c.ws.terminate();
      this.wss.close();
    })());
  }
}

/** The access token: `Authorization: Bearer` (as the HTTP API), else `access_token` (browsers cannot set headers on a WebSocket). */
function accessToken(req: IncomingMessage, q: URLSearchParams): string {
  const header = req.headers.authorization;
  if (header) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Invalid Authorization header');
    return m[1]!;
  }
  const t = q.get('access_token');
  if (!t) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
  return t;
}

/** A plain HTTP answer with Matrix error JSON on a socket that is not upgraded; then the socket closes. */
function refuse(socket: Duplex, err: MatrixError): void {
  if (socket.destroyed || !socket.writable) return;
  const body = JSON.stringify({ errcode: err.errcode, error: err.message, ...err.extra });
  const headers = {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
    'Access-Control-Allow-Origin': '*',
    Connection: 'close',
    ...err.headers,
  };
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? ''}\r\n${head}\r\n${body}`);
}

/**
 * An upgrade request that is not ours (e.g. `Upgrade: h2c` from curl --http2): answered by the normal
 * app as plain HTTP/1.1, then closed. Node hands such a request over as ended, without its body: a
 * fresh request with the same head gets what came with the headers (`head`) and what follows on the
 * socket as its body.
 */
function answerNormally(orig: IncomingMessage, socket: Duplex, head: Buffer, app: (req: IncomingMessage, res: ServerResponse) => void): void {
  const length = Number(orig.headers['content-length'] ?? 0);
  if (orig.headers['transfer-encoding'] || !Number.isSafeInteger(length) || length < 0) {
    refuse(socket, new MatrixError(400, 'M_UNRECOGNIZED', 'Send this request without the Upgrade header'));
    return;
  }
  const net = socket as Socket;
  const req = new IncomingMessage(net);
  Object.assign(req, {
    headers: orig.headers, rawHeaders: orig.rawHeaders, method: orig.method, url: orig.url,
    httpVersion: orig.httpVersion, httpVersionMajor: orig.httpVersionMajor, httpVersionMinor: orig.httpVersionMinor,
  });
  let left = length;
  const feed = (chunk: Buffer) => {
    const part = chunk.subarray(0, left);
    left -= part.length;
    if (part.length > 0) req.push(part);
    if (left === 0) {
      socket.off('data', feed);
      req.complete = true; // else IncomingMessage, once read, takes itself for aborted and destroys the socket
      req.push(null);
    }
  };
  feed(head);
  if (left > 0) socket.on('data', feed);
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(net);
  res.on('finish', () => { res.detachSocket(net); socket.end(); });
  app(req, res);
}
