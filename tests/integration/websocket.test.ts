// WebSocket sync (GET /_matrix/client/unstable/io.superserver/sync upgraded): the same JSON as /sync,
// pushed as it happens; resume from next_batch; authentication before the upgrade; logout (4401),
// dead sockets reaped, shutdown (1001), limits; the same tests in-process and on Redis.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { SyncSockets } from '../../homeserver/sync/socket.ts';
import { MatrixError } from '../../homeserver/http/errors.ts';
import WebSocket from 'ws';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, roomApi, type Credentials } from '../helpers/client.ts';
import { specChecker } from '../helpers/openapi.ts';

const C = '/_matrix/client/v3';
const WS_PATH = '/_matrix/client/unstable/io.superserver/sync';
const PING_MS = 300;
const TOKEN_LIFETIME_MS = 1_500;
// Presence off: frames are compared with /sync read a moment apart, and presence moves in between.
const ENV = { PRESENCE: 'off', WS_PING_INTERVAL_MS: String(PING_MS), WS_MAX_SOCKETS_PER_USER: '3', ACCESS_TOKEN_LIFETIME_MS: String(TOKEN_LIFETIME_MS) };

type Frame = Record<string, any>;

/** A client socket: frames in arrival order, `next()` waits for the next unread one. */
interface Client {
  ws: WebSocket;
  frames: Frame[];
  next(timeoutMs?: number): Promise<Frame>;
  /** Waits until a frame satisfies `pred` (reading on from the current position). */
  until(pred: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  closed: Promise<{ code: number; reason: string }>;
}

function wsUrl(base: string, query: Record<string, string | undefined>): string {
  const u = new URL(WS_PATH, base.replace(/^http/, 'ws'));
  for (const [k, v] of Object.entries(query)) if (v !== undefined) u.searchParams.set(k, v);
  return u.toString();
}

async function connect(base: string, query: Record<string, string | undefined>, opts: WebSocket.ClientOptions = {}): Promise<Client> {
  const ws = new WebSocket(wsUrl(base, query), opts);
  const frames: Frame[] = [];
  let read = 0;
  let wake: (() => void) | undefined;
  ws.on('message', (data) => { frames.push(JSON.parse(String(data))); wake?.(); });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => { wake?.(); resolve({ code, reason: String(reason) }); }));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected HTTP ${res.statusCode}`)));
  });
  const next = async (timeoutMs = 10_000): Promise<Frame> => {
    const end = Date.now() + timeoutMs;
    while (read >= frames.length) {
      if (ws.readyState === WebSocket.CLOSED) throw new Error('socket closed while waiting for a frame');
      const left = end - Date.now();
      if (left <= 0) throw new Error('no frame within the timeout');
      await new Promise<void>((r) => { wake = r; setTimeout(r, left).unref(); });
    }
    return frames[read++]!;
  };
  const until = async (pred: (f: Frame) => boolean, timeoutMs = 10_000): Promise<Frame> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const f = await next(Math.max(1, end - Date.now()));
      if (pred(f)) return f;
    }
  };
  return { ws, frames, next, until, closed };
}

/** A socket's close, or a failure after `ms` (a socket the server should have closed must not hang the test). */
function within<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms).unref())]);
}

/** The HTTP answer to an upgrade that is refused (no socket). */
function refused(base: string, query: Record<string, string | undefined>, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(base, query), { headers });
    ws.on('open', () => { ws.terminate(); reject(new Error('upgrade was accepted')); });
    ws.on('error', () => {});
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
    });
  });
}

/** `unsigned.age` and presence's `last_active_ago` are computed when a batch is read: the fields that legitimately differ between two reads. */
function withoutAge(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutAge);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'age' && k !== 'last_active_ago').map(([k, x]) => [k, withoutAge(x)]));
  }
  return v;
}

const bodies = (f: Frame, roomId: string): string[] =>
  (f.rooms?.join?.[roomId]?.timeline?.events ?? []).filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);

for (const mode of ['in-process', 'redis'] as const) {
  describe(`websocket sync (${mode})`, () => {
    let server: TestServer;
    let alice: Credentials;
    let bob: Credentials;
    const base = () => server.baseUrl;
    const { call, create, send, room } = roomApi(base);
    const sync = async (who: Credentials, query = '') => {
      const res = await call('GET', `${C}/sync?${query}`, { token: who.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };
    const join = async (who: Credentials, roomId: string) => {
      const res = await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: who.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    };
    const open: Client[] = [];
    const client = async (who: Credentials, query: Record<string, string | undefined> = {}, opts?: WebSocket.ClientOptions) => {
      const c = await connect(base(), { access_token: who.accessToken, ...query }, opts);
      open.push(c);
      return c;
    };

    before(async () => {
      server = await startServer({ redis: mode === 'redis', env: ENV });
      alice = await registerUser(server.baseUrl);
      bob = await registerUser(server.baseUrl);
    });
    after(async () => {
      for (const c of open) c.ws.terminate();
      await server?.stop();
    });

    test('a send by another user arrives over the socket with the JSON /sync returns from the same since', async () => {
      const bob = await registerUser(base());
      const roomId = await create(alice, { preset: 'public_chat', name: 'WS1' });
      await join(bob, roomId);
      const initial = await sync(bob);
      const ws = await client(bob, { since: initial.next_batch });
      const first = await ws.next();
      assert.deepEqual(withoutAge(first), withoutAge(await sync(bob, `since=${initial.next_batch}`)), 'the first frame is /sync from since');
      const eventId = await send(alice, roomId, 'over the socket');
      const pushed = await ws.next();
      assert.ok(pushed.rooms.join[roomId].timeline.events.some((e: any) => e.event_id === eventId), 'the event is pushed');
      assert.deepEqual(withoutAge(pushed), withoutAge(await sync(bob, `since=${first.next_batch}`)), 'the frame is exactly /sync from the previous next_batch');
      const { problem } = specChecker().check({ method: 'GET', path: `${C}/sync`, status: 200, contentType: 'application/json', body: pushed, isJson: true });
      assert.equal(problem, undefined, `frame matches the /sync response schema: ${problem}`);
      // Without since: the initial sync, as GET /sync gives it.
      const fresh = await client(bob);
      const init = await fresh.next();
      assert.ok(init.rooms.join[roomId], 'initial sync frame has the room');
      assert.deepEqual(bodies(init, roomId), ['over the socket']);
      // Text frames from the client are ignored; the stream goes on.
      fresh.ws.send('hello server');
      fresh.ws.send(JSON.stringify({ type: 'anything' }));
      await send(alice, roomId, 'still streaming');
      const more = await fresh.until((f) => bodies(f, roomId).length > 0);
      assert.deepEqual(bodies(more, roomId), ['still streaming']);
    });

    test('resume from next_batch after a reconnect mid-way: 50 sends, nothing lost or repeated', async () => {
      const bob = await registerUser(base());
      const roomId = await create(alice, { preset: 'public_chat' });
      await join(bob, roomId);
      const start = (await sync(bob)).next_batch;
      const got: string[] = [];
      let last = start;
      let reconnects = 0;
      let ws = await client(bob, { since: start });
      const sending = (async () => { for (let i = 0; i < 50; i++) await send(alice, roomId, `m${i}`); })();
      while (got.length < 50) {
        const f = await ws.next(15_000);
        got.push(...bodies(f, roomId));
        last = f.next_batch;
        // Drop the connection abruptly twice mid-way and resume from the last next_batch received.
        if ((reconnects === 0 && got.length >= 15) || (reconnects === 1 && got.length >= 35)) {
          ws.ws.terminate();
          reconnects++;
          ws = await client(bob, { since: last });
        }
      }
      await sending;
      assert.equal(reconnects, 2);
      assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `m${i}`));
      // And nothing more is pending: /sync from the last next_batch has none of them.
      assert.deepEqual(bodies(await sync(bob, `since=${last}`), roomId), []);
    });

    test('authentication and parameters are checked before the upgrade', async () => {
      let r = await refused(base(), {});
      assert.equal(r.status, 401);
      assert.equal(r.body.errcode, 'M_MISSING_TOKEN');
      r = await refused(base(), { access_token: 'syt_not_a_token' });
      assert.equal(r.status, 401);
      assert.equal(r.body.errcode, 'M_UNKNOWN_TOKEN');
      assert.equal(r.body.soft_logout, false);
      r = await refused(base(), {}, { authorization: 'Basic abc' });
      assert.equal(r.status, 401);
      assert.equal(r.body.errcode, 'M_MISSING_TOKEN');
      r = await refused(base(), { access_token: bob.accessToken, since: 'garbage' });
      assert.equal(r.status, 400);
      assert.equal(r.body.errcode, 'M_INVALID_PARAM');
      r = await refused(base(), { access_token: bob.accessToken, since: 's99999999999999999999' });
      assert.equal(r.status, 400);
      // A bad filter: the same answer as /sync gives.
      for (const filter of ['{"room": ', '{"room": {"timeline": {"limit": "x"}}}', '12345678', 'abc']) {
        const viaSync = await call('GET', `${C}/sync?filter=${encodeURIComponent(filter)}`, { token: bob.accessToken });
        r = await refused(base(), { access_token: bob.accessToken, filter });
        assert.equal(r.status, viaSync.status, filter);
        assert.equal(r.body.errcode, viaSync.body.errcode, filter);
      }
      r = await refused(base(), { access_token: bob.accessToken, set_presence: 'dancing' });
      assert.equal(r.status, 400);
      // A plain GET (no Upgrade) is a clear error, not a hang.
      const plain = await fetch(base() + WS_PATH, { headers: { authorization: `Bearer ${bob.accessToken}` } });
      assert.equal(plain.status, 400);
      assert.equal(((await plain.json()) as { errcode: string }).errcode, 'M_UNRECOGNIZED');
      // The Authorization header works as well as access_token; a filter id too.
      const filterId = (await call('POST', `${C}/user/${encodeURIComponent(bob.userId)}/filter`, { token: bob.accessToken, body: { room: { timeline: { limit: 1 } } } })).body.filter_id;
      const c = await connect(base(), { filter: filterId, set_presence: 'online' }, { headers: { authorization: `Bearer ${bob.accessToken}` } });
      open.push(c);
      assert.match((await c.next()).next_batch, /^s\d+/);
    });

    test('other upgrade requests are answered as plain requests; a WebSocket elsewhere is 404', async () => {
      // e.g. curl --http2 on cleartext sends "Upgrade: h2c": the normal answer, no upgrade.
      const answer = await new Promise<{ status: number; body: any }>((resolve, reject) => {
        const req = httpRequest(`${base()}/_matrix/client/versions`, { headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': '' } }, (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
        });
        req.on('upgrade', () => reject(new Error('upgraded')));
        req.on('error', reject);
        req.end();
      });
      assert.equal(answer.status, 200);
      assert.ok(Array.isArray(answer.body.versions));
      // With a body, sent with the headers or after them: the body reaches the route.
      for (const late of [false, true]) {
        const body = JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: bob.userId }, password: 'wrong' });
        const login = await new Promise<{ status: number; body: any }>((resolve, reject) => {
          const req = httpRequest(`${base()}${C}/login`, {
            method: 'POST',
            headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': '', 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
          }, (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
          });
          req.on('error', reject);
          if (late) { req.flushHeaders(); setTimeout(() => req.end(body), 100); } else req.end(body);
        });
        assert.equal(login.status, 403, JSON.stringify(login.body));
        assert.equal(login.body.errcode, 'M_FORBIDDEN');
      }
      const elsewhere = await new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`${base().replace(/^http/, 'ws')}${C}/sync?access_token=${bob.accessToken}`);
        ws.on('open', () => { ws.terminate(); reject(new Error('upgrade was accepted')); });
        ws.on('error', () => {});
        ws.on('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode!); });
      });
      assert.equal(elsewhere, 404);
    });

    test('sockets per user are limited (429 M_LIMIT_EXCEEDED before the upgrade)', async () => {
      const carol = await registerUser(base());
      const three = [await client(carol), await client(carol), await client(carol)];
      const r = await refused(base(), { access_token: carol.accessToken });
      assert.equal(r.status, 429);
      assert.equal(r.body.errcode, 'M_LIMIT_EXCEEDED');
      three[0]!.ws.close();
      await within(three[0]!.closed);
      // A closed socket frees its slot (the server may see the close a moment later).
      let again: Client | undefined;
      const end = Date.now() + 5_000;
      while (!again) {
        try { again = await client(carol); } catch (e) { if (Date.now() > end) throw e; await new Promise((res) => setTimeout(res, 50)); }
      }
      assert.match((await again.next()).next_batch, /^s\d+/);
    });

    test('logout closes the socket with 4401 after a last M_UNKNOWN_TOKEN frame', async () => {
      const dave = await registerUser(base());
      const ws = await client(dave);
      await ws.next();
      const t0 = Date.now();
      const res = await call('POST', `${C}/logout`, { token: dave.accessToken, body: {} });
      assert.equal(res.status, 200);
      const { code } = await within(ws.closed);
      assert.equal(code, 4401);
      assert.ok(Date.now() - t0 < PING_MS * 3 + 2_000, `closed within a ping round (${Date.now() - t0} ms)`);
      const lastFrame = ws.frames.at(-1)!;
      assert.equal(lastFrame.errcode, 'M_UNKNOWN_TOKEN');
      assert.equal(typeof lastFrame.error, 'string');
      // And the token can no longer open one.
      const r = await refused(base(), { access_token: dave.accessToken });
      assert.equal(r.status, 401);
    });

    test('an access token that expires closes its socket with 4401 and soft_logout; expired, it is refused', async () => {
      const u = await registerUser(base());
      const login = await call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.userId }, password: u.password, refresh_token: true } });
      assert.equal(login.status, 200);
      assert.equal(login.body.expires_in_ms, TOKEN_LIFETIME_MS);
      const ws = await connect(base(), { access_token: login.body.access_token });
      open.push(ws);
      await ws.next();
      const { code } = await within(ws.closed, TOKEN_LIFETIME_MS + PING_MS * 2 + 5_000);
      assert.equal(code, 4401);
      const last = ws.frames.at(-1)!;
      assert.equal(last.errcode, 'M_UNKNOWN_TOKEN');
      assert.equal(last.soft_logout, true);
      const r = await refused(base(), { access_token: login.body.access_token });
      assert.equal(r.status, 401);
      assert.equal(r.body.soft_logout, true);
    });

    test('a socket that stops answering pings is terminated; one that answers stays', async () => {
      const erin = await registerUser(base());
      const deaf = await client(erin, {}, { autoPong: false });
      const healthy = await client(erin);
      await deaf.next();
      await healthy.next();
      const t0 = Date.now();
      const { code } = await within(deaf.closed);
      const took = Date.now() - t0;
      assert.equal(code, 1006, 'terminated without a close handshake');
      assert.ok(took <= PING_MS * 2 + 1_000, `reaped after about two intervals (${took} ms)`);
      await new Promise((r) => setTimeout(r, PING_MS * 3));
      assert.equal(healthy.ws.readyState, WebSocket.OPEN, 'the socket that answers pings stays open');
    });

    test('a frame from the client over 64 KiB closes the socket with 1009', async () => {
      const bob = await registerUser(base());
      const ws = await client(bob);
      await ws.next();
      ws.ws.send('x'.repeat(65 * 1024));
      const { code } = await within(ws.closed);
      assert.equal(code, 1009);
    });

    test('a non-member never receives another room\'s events over the socket', async () => {
      const bob = await registerUser(base());
      const carol = await registerUser(base());
      const secret = await create(alice, { preset: 'private_chat', invite: [bob.userId] });
      await join(bob, secret);
      const shared = await create(alice, { preset: 'public_chat' });
      await join(carol, shared);
      const ws = await client(carol);
      await ws.next();
      for (let i = 0; i < 3; i++) await send(alice, secret, `secret ${i}`);
      await call('PUT', `${room(secret)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: 'hidden' } });
      await send(alice, shared, 'marker');
      await ws.until((f) => bodies(f, shared).includes('marker'));
      for (const f of ws.frames) {
        const text = JSON.stringify(f);
        assert.ok(!text.includes(secret), 'no frame names the private room');
        assert.ok(!text.includes('secret '), 'no frame carries its messages');
      }
      // Bob, a member, does see them (the test can fail).
      const bobWs = await client(bob, {});
      const init = await bobWs.next();
      assert.ok(init.rooms.join[secret]);
    });
  });

  describe(`websocket sync, pings a minute apart (${mode})`, () => {
    let server: TestServer;
    before(async () => { server = await startServer({ redis: mode === 'redis', env: { WS_PING_INTERVAL_MS: '60000' } }); });
    after(() => server?.stop());

    test('a logout on this worker closes the sockets of that token at once, not at the next ping', async () => {
      const u = await registerUser(server.baseUrl);
      const other = await api(server.baseUrl, 'POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.userId }, password: u.password } });
      assert.equal(other.status, 200);
      const mine = await connect(server.baseUrl, { access_token: u.accessToken });
      const theirs = await connect(server.baseUrl, { access_token: other.body.access_token });
      await mine.next();
      await theirs.next();
      const t0 = Date.now();
      assert.equal((await api(server.baseUrl, 'POST', `${C}/logout`, { token: u.accessToken, body: {} })).status, 200);
      assert.equal((await within(mine.closed)).code, 4401);
      assert.ok(Date.now() - t0 < 5_000, `closed at once (${Date.now() - t0} ms)`);
      assert.equal(mine.frames.at(-1)!.errcode, 'M_UNKNOWN_TOKEN');
      // The other device's socket stays.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(theirs.ws.readyState, WebSocket.OPEN);
      theirs.ws.terminate();
    });

    test('stopping the server closes sockets with 1001 promptly', async () => {
      const u = await registerUser(server.baseUrl);
      const a = await connect(server.baseUrl, { access_token: u.accessToken });
      const b = await connect(server.baseUrl, { access_token: u.accessToken });
      await a.next();
      await b.next();
      const t0 = Date.now();
      const stopping = server.stop();
      const [ca, cb] = await within(Promise.all([a.closed, b.closed]));
      assert.equal(ca.code, 1001);
      assert.equal(cb.code, 1001);
      assert.ok(Date.now() - t0 < 3_000, `closed promptly (${Date.now() - t0} ms)`);
      await stopping;
    });
  });
}

describe('websocket sync back-pressure (SyncSockets with a stub /sync)', () => {
  let http: Server;
  let sockets: SyncSockets;
  let base: string;
  const BIG = 16 * 1024 * 1024;
  before(async () => {
    const me = { userId: '@a:x', deviceId: 'D', isGuest: false, isAdmin: false, tokenId: 1 };
    sockets = new SyncSockets({
      authenticate: async (token) => {
        if (token !== 'small' && token !== 'big') throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'no');
        return { ...me, deviceId: token };
      },
      // The first batch (huge for the device 'big'); later rounds wait until the socket goes.
      sync: {
        sync: (who, req, signal) => req.since
          ? new Promise((resolve) => signal?.addEventListener('abort', () => resolve({ next_batch: 's1_0_0_0_0_0_1' })))
          : Promise.resolve({ next_batch: 's1_0_0_0_0_0_1', big: who.deviceId === 'big' ? 'x'.repeat(BIG) : '' }),
      },
      filters: { load: async () => ({}) },
      log: pino({ level: 'silent' }),
      pingIntervalMs: 250,
      maxSocketsPerUser: 10,
      maxBufferedBytes: 1024 * 1024,
    });
    http = createServer((_req, res) => { res.statusCode = 404; res.end(); });
    http.on('upgrade', (req, socket, head) => sockets.handleUpgrade(req, socket, head));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });
  after(async () => {
    await sockets.close(100);
    http.closeAllConnections();
    await new Promise((r) => http.close(r));
  });

  test('a client that does not read is closed (1008) instead of buffering; one that reads keeps its socket', async () => {
    const reader = await connect(base, { access_token: 'small' });
    await reader.next();
    const stalled = new WebSocket(wsUrl(base, { access_token: 'big' }));
    await new Promise<void>((resolve, reject) => {
      // Stops reading the moment the handshake is done (explicitly paused: ws's 'data' listener does not resume it).
      stalled.once('upgrade', (res) => res.socket.pause());
      stalled.once('open', () => resolve());
      stalled.once('error', reject);
    });
    const end = Date.now() + 10_000;
    while (sockets.stats.clogged === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.equal(sockets.stats.clogged, 1, 'the stalled socket was closed for not reading');
    await new Promise((r) => setTimeout(r, 750));
    assert.equal(sockets.size, 1, 'only the reading socket is left');
    assert.equal(reader.ws.readyState, WebSocket.OPEN);
    stalled.terminate();
  });
});
