// Signing in and out, and the one MatrixClient of the page: login, registration (UIA with a
// registration token when the server asks for one), the saved session, Rust crypto.
import { createClient, type MatrixClient } from 'matrix-js-sdk';
import { friends } from './friends.svelte.ts';
import { ApiError } from './errors.ts';

export interface Session {
  baseUrl: string;
  userId: string;
  accessToken: string;
  deviceId: string;
}

const KEY = 'super-chat-session';

export function savedSession(): Session | undefined {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : undefined;
  } catch {
    return undefined;
  }
}

function save(s: Session): void {
  localStorage.setItem(KEY, JSON.stringify(s));
}

export function forget(): void {
  localStorage.removeItem(KEY);
}

/** The homeserver this page is served by (the client never needs another). */
export const baseUrl = location.origin;

async function post(path: string, body: unknown, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(baseUrl + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  return { status: res.status, body: json };
}

function refusal(status: number, body: Record<string, unknown>): ApiError {
  const retry = typeof body.retry_after_ms === 'number' ? body.retry_after_ms : undefined;
  return new ApiError(status, String(body.errcode ?? 'M_UNKNOWN'), String(body.error ?? `The server answered ${status}`), retry, body);
}

export async function login(user: string, password: string): Promise<Session> {
  const res = await post('/_matrix/client/v3/login', {
    type: 'm.login.password',
    identifier: { type: 'm.id.user', user },
    password,
    initial_device_display_name: 'super-server chat (web)',
  });
  if (res.status !== 200) throw refusal(res.status, res.body);
  const s: Session = { baseUrl, userId: String(res.body.user_id), accessToken: String(res.body.access_token), deviceId: String(res.body.device_id) };
  save(s);
  return s;
}

/** The registration flows the server offers: does it want a token? */
export async function registrationNeeds(): Promise<{ token: boolean; open: boolean; email: boolean }> {
  const res = await post('/_matrix/client/v3/register', {});
  if (res.status === 403) return { token: false, open: false, email: false };
  const flows = (res.body.flows as Array<{ stages: string[] }> | undefined) ?? [];
  const stages = flows.flatMap((f) => f.stages);
  return {
    token: stages.includes('m.login.registration_token') && !flows.some((f) => f.stages.every((s) => s === 'm.login.dummy')),
    open: flows.length > 0,
    email: stages.includes('m.login.email.identity'),
  };
}

/** Registers, completing the UIA stages this client can: registration token, dummy. */
export async function register(username: string, password: string, token?: string): Promise<Session> {
  const request = { username, password, initial_device_display_name: 'super-server chat (web)' };
  let res = await post('/_matrix/client/v3/register', request);
  for (let round = 0; res.status === 401 && round < 4; round++) {
    const session = res.body.session as string | undefined;
    const flows = (res.body.flows as Array<{ stages: string[] }> | undefined) ?? [];
    const completed = (res.body.completed as string[] | undefined) ?? [];
    const flow = flows.find((f) => f.stages.every((s) => s === 'm.login.dummy' || s === 'm.login.registration_token'));
    if (!flow) throw new ApiError(401, 'M_FORBIDDEN', 'This server asks for a registration step this app cannot do (an e-mail address?)');
    const next = flow.stages.find((s) => !completed.includes(s));
    if (!next) break;
    if (next === 'm.login.registration_token' && !token) throw new ApiError(401, 'M_MISSING_PARAM', 'This server needs a registration token: ask its admin for one');
    const auth = next === 'm.login.registration_token' ? { type: next, token, session } : { type: next, session };
    res = await post('/_matrix/client/v3/register', { ...request, auth });
  }
  if (res.status !== 200) throw refusal(res.status, res.body);
  const s: Session = { baseUrl, userId: String(res.body.user_id), accessToken: String(res.body.access_token), deviceId: String(res.body.device_id) };
  save(s);
  return s;
}

/**
 * The fetch the SDK uses: the same as the browser's, except that a /sync answer's friends extension
 * (io.superserver.friends, README "Friends API") is handed to the friends store on the way.
 */
const syncAwareFetch: typeof fetch = async (input, init) => {
  const res = await fetch(input, init);
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (res.ok && url.includes('/sync')) {
    res.clone().json().then((body: Record<string, unknown>) => {
      const ext = body['io.superserver.friends'];
      if (ext) friends.apply(ext as Parameters<typeof friends.apply>[0]);
    }).catch(() => undefined);
  }
  return res;
};

/**
 * The secret storage key the SDK asks for (getSecretStorageKey) while key backup is set up or
 * restored: the recovery key just made, or the one the person typed.
 */
let secretStorageKey: Uint8Array | undefined;
export function useSecretStorageKey(key: Uint8Array | undefined): void {
  secretStorageKey = key;
}

/** A started client for the session: Rust crypto loaded (its wasm bundled by Vite), syncing. */
export async function startClient(s: Session, onCryptoError: (err: unknown) => void): Promise<MatrixClient> {
  const client = createClient({ baseUrl: s.baseUrl, accessToken: s.accessToken, userId: s.userId, deviceId: s.deviceId, fetchFn: syncAwareFetch, timelineSupport: true,
    cryptoCallbacks: {
      getSecretStorageKey: async ({ keys }) => {
        const id = Object.keys(keys)[0];
        return secretStorageKey && id ? [id, secretStorageKey] : null;
      },
    },
  });
  try {
    await client.initRustCrypto({ cryptoDatabasePrefix: `super-chat:${s.userId}:${s.deviceId}` });
  } catch (err) {
    onCryptoError(err);
  }
  await client.startClient({ initialSyncLimit: 30, lazyLoadMembers: true });
  return client;
}

export async function logout(client: MatrixClient | undefined): Promise<void> {
  forget();
  if (!client) return;
  client.stopClient();
  await client.logout(true).catch(() => undefined);
}
