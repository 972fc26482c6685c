// Helpers for talking to a homeserver in tests: raw HTTP (api, registerUser) and matrix-js-sdk clients.
import './polyfills.ts';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { after, afterEach } from 'node:test';
import { specChecker } from './openapi.ts';
import {
  ClientEvent, createClient, EventStatus, RoomEvent, SyncState,
  type MatrixClient, type MatrixEvent, type Room,
} from 'matrix-js-sdk';

export interface Credentials { userId: string; accessToken: string; deviceId: string }
export interface ApiResponse { status: number; body: any; headers: Headers }

/** A request without the spec check, for loops that make thousands (a JSON body or none). */
export async function rawApi(base: string, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(base + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/**
 * One HTTP request; a JSON body is parsed, any other body is returned as text. A response to an endpoint the
 * spec describes must match the spec's OpenAPI schema for its status (errors: {errcode, error}), or this
 * throws, naming the operation and where the body drifts.
 */
export async function api(
  baseUrl: string, method: string, path: string,
  opts: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined = opts.rawBody;
  if (body === undefined && opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  Object.assign(headers, opts.headers);
  const res = await fetch(baseUrl + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  let isJson = false;
  try { parsed = text === '' ? undefined : JSON.parse(text); isJson = text !== ''; } catch { /* not JSON: keep the text */ }
  const { problem } = specChecker().check({ method, path, status: res.status, contentType: res.headers.get('content-type'), body: parsed, isJson });
  if (problem) throw new assert.AssertionError({ message: `response drifts from the spec: ${problem}` });
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Registers a user (random localpart and password by default), completing m.login.dummy if asked. */
export async function registerUser(
  baseUrl: string, localpart = `u${randomBytes(5).toString('hex')}`, password = randomBytes(12).toString('base64url'),
): Promise<Credentials & { password: string }> {
  const request = { username: localpart, password, initial_device_display_name: 'test' };
  let res = await api(baseUrl, 'POST', '/_matrix/client/v3/register', { body: request });
  if (res.status === 401 && res.body?.session && Array.isArray(res.body.flows)) {
    const auth = { type: 'm.login.dummy', session: res.body.session };
    res = await api(baseUrl, 'POST', '/_matrix/client/v3/register', { body: { ...request, auth } });
  }
  if (res.status !== 200) throw new Error(`register ${localpart}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  return { userId: res.body.user_id, accessToken: res.body.access_token, deviceId: res.body.device_id, password };
}

/**
 * matrix-js-sdk logs through loglevel at DEBUG, and every child logger copies its parent's method
 * factory; giving all existing loggers (and loglevel's default, which new ones inherit) a no-op
 * factory silences it for good. MATRIX_SDK_LOGS=1 keeps the logs.
 */
function quietSdkLogger(): void {
  if (process.env.MATRIX_SDK_LOGS) return;
  const sdkRequire = createRequire(createRequire(import.meta.url).resolve('matrix-js-sdk'));
  const loglevel = sdkRequire('loglevel') as { methodFactory: unknown; rebuild?: () => void; getLoggers(): Record<string, any> };
  const noop = () => () => {};
  for (const logger of [loglevel, ...Object.values(loglevel.getLoggers())]) {
    logger.methodFactory = noop;
    logger.rebuild?.();
  }
}
quietSdkLogger();

/**
 * matrix-js-sdk's timeoutSignal() arms a setTimeout it never clears (80-110 s for each /sync), which
 * keeps a finished test process alive that long. Node's own AbortSignal.timeout() unrefs its timer;
 * we unref the sdk's likewise (an in-flight request keeps the process alive through its socket).
 */
function unrefSdkRequestTimeouts(): void {
  const real = globalThis.setTimeout;
  const isSdkAbortTimer = (fn: unknown) =>
    typeof fn === 'function' && /^\(\) => \{\s*controller\.abort\(\);\s*\}$/.test(fn.toString());
  const wrapped = function (this: unknown, fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) {
    const timer = real(fn, ms, ...args);
    if (isSdkAbortTimer(fn)) timer.unref();
    return timer;
  };
  for (const key of Object.getOwnPropertySymbols(real)) { // keep util.promisify(setTimeout) working
    Object.defineProperty(wrapped, key, Object.getOwnPropertyDescriptor(real, key)!);
  }
  globalThis.setTimeout = wrapped as typeof setTimeout;
}
unrefSdkRequestTimeouts();

const clients = new Set<MatrixClient>();

/** Drift found in responses to matrix-js-sdk clients, reported by the next afterEach (the sdk swallows errors). */
const sdkDrift: string[] = [];

/** fetch for matrix-js-sdk: the response is handed on untouched, its JSON checked against the spec on the side. */
async function specCheckedFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const res = await fetch(input, init);
  const url = new URL(input instanceof Request ? input.url : input);
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const text = await res.clone().text();
  let body: unknown = text;
  let isJson = false;
  try { body = JSON.parse(text); isJson = true; } catch { /* not JSON */ }
  const { problem } = specChecker().check({ method, path: url.pathname + url.search, status: res.status, contentType: res.headers.get('content-type'), body, isJson });
  if (problem) sdkDrift.push(problem);
  return res;
}

// Fails the test during which a matrix-js-sdk client received a drifting response (or the file, for one
// received after its last test).
function reportSdkDrift(): void {
  if (sdkDrift.length === 0) return;
  const problems = sdkDrift.splice(0);
  throw new assert.AssertionError({ message: `matrix-js-sdk received ${problems.length} response(s) drifting from the spec:\n${problems.join('\n')}` });
}
afterEach(reportSdkDrift);
after(reportSdkDrift);

/** Stops every client makeClient() made; a running client's sync loop keeps the test process alive. */
export function stopClients(): void {
  for (const client of clients) client.stopClient();
  clients.clear();
}

/**
 * A started matrix-js-sdk client, resolved once its first sync is PREPARED. Stop it when done
 * (client.stopClient() or stopClients()), or its sync loop keeps the test process alive.
 */
export async function makeClient(baseUrl: string, creds: Credentials, opts: { crypto?: boolean } = {}): Promise<MatrixClient> {
  const client = createClient({
    baseUrl, userId: creds.userId, accessToken: creds.accessToken, deviceId: creds.deviceId, fetchFn: specCheckedFetch,
  });
  clients.add(client);
  // issue 8: end-to-end encryption with the Rust crypto (in memory: Node has no IndexedDB).
  if (opts.crypto) await client.initRustCrypto({ useIndexedDB: false });
  let lastState = 'none';
  let lastError: unknown;
  const prepared = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.removeListener(ClientEvent.Sync, onSync);
      reject(new Error(`sync not PREPARED after 20 s (last state ${lastState}${lastError ? `: ${String(lastError)}` : ''})`));
    }, 20_000);
    const onSync = (state: SyncState, _prev: SyncState | null, data?: { error?: unknown }) => {
      lastState = state;
      if (data?.error) lastError = data.error;
      if (state !== SyncState.Prepared) return;
      clearTimeout(timer);
      client.removeListener(ClientEvent.Sync, onSync);
      resolve();
    };
    client.on(ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 20 });
  try {
    await prepared;
  } catch (e) {
    client.stopClient();
    clients.delete(client);
    throw e;
  }
  return client;
}

/** Confirmed by the server: not a local echo still sending (or failed). */
function confirmed(event: MatrixEvent): boolean {
  return event.status === null || event.status === EventStatus.SENT;
}

/**
 * The first event of the room's live timeline (any type) matching `predicate`, already there or
 * still to come. Local echoes count only once the server has accepted them.
 */
export async function waitForMessage(
  client: MatrixClient, roomId: string, predicate: (event: MatrixEvent) => boolean, timeoutMs = 10_000,
): Promise<MatrixEvent> {
  const matches = (event: MatrixEvent) => event.getRoomId() === roomId && confirmed(event) && predicate(event);
  const existing = client.getRoom(roomId)?.getLiveTimeline().getEvents().find(matches);
  if (existing) return existing;
  return new Promise<MatrixEvent>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      client.removeListener(RoomEvent.Timeline, onEvent);
      client.removeListener(RoomEvent.LocalEchoUpdated, onEvent);
    };
    const onEvent = (event: MatrixEvent, room?: Room) => {
      if ((room?.roomId ?? event.getRoomId()) !== roomId || !confirmed(event) || !predicate(event)) return;
      done();
      resolve(event);
    };
    const timer = setTimeout(() => {
      done();
      const seen = client.getRoom(roomId)?.getLiveTimeline().getEvents().length ?? 0;
      reject(new Error(`no matching event in ${roomId} within ${timeoutMs} ms (${seen} events in its live timeline)`));
    }, timeoutMs);
    client.on(RoomEvent.Timeline, onEvent);
    client.on(RoomEvent.LocalEchoUpdated, onEvent);
  });
}

/**
 * The calls most test files make, bound to a server whose URL is known only once it has started
 * (`base` is read on each call). createRoom and sendText assert a 200 and return the new id.
 */
export function roomApi(base: () => string) {
  const C = '/_matrix/client/v3';
  const call = (method: string, path: string, opts: Parameters<typeof api>[3] = {}) => api(base(), method, path, opts);
  const room = (id: string) => `${C}/rooms/${encodeURIComponent(id)}`;
  const create = async (who: Credentials, body: Record<string, unknown>) => {
    const res = await call('POST', `${C}/createRoom`, { token: who.accessToken, body });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.room_id as string;
  };
  const send = async (who: Credentials, roomId: string, body: string) => {
    const res = await call('PUT', `${room(roomId)}/send/m.room.message/${Math.random()}`, { token: who.accessToken, body: { msgtype: 'm.text', body } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.event_id as string;
  };
  return { call, room, create, send };
}
