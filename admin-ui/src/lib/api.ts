// The admin API client: one fetch with a timeout, the token of the logged-in admin, and errors
// turned into sentences an operator can act on (never a stack trace).
const TIMEOUT_MS = 15_000;
const TOKEN_KEY = 'super-server-admin';

export interface Session { accessToken: string; userId: string; deviceId: string }

export class ApiError extends Error {
  constructor(readonly status: number, readonly errcode: string, message: string) { super(message); }
}

let session: Session | null = null;
try {
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) session = JSON.parse(saved) as Session;
} catch { /* storage refused: log in again */ }

const listeners = new Set<(s: Session | null) => void>();
export function onSession(fn: (s: Session | null) => void): () => void { listeners.add(fn); return () => listeners.delete(fn); }
export function currentSession(): Session | null { return session; }
function setSession(s: Session | null): void {
  session = s;
  try { if (s) sessionStorage.setItem(TOKEN_KEY, JSON.stringify(s)); else sessionStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ }
  for (const fn of listeners) fn(s);
}

/** What to tell the operator for an answer that is not 2xx. */
function explain(status: number, body: { errcode?: string; error?: string } | null): string {
  const said = body?.error?.trim();
  if (status === 403) return said ? `Not allowed: ${said}` : 'Not allowed: your role lacks the permission for this.';
  if (status === 401) return 'Your session has ended: log in again.';
  if (status === 404) return said ? `Not found: ${said}` : 'Not found.';
  if (status === 429) return 'Too many requests: wait a moment and retry.';
  if (status >= 500) return said ? `The server failed: ${said}` : `The server failed (HTTP ${status}). Retry, or look at the server's log.`;
  return said ?? `The server refused the request (HTTP ${status}).`;
}

export async function api<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts: { auth?: boolean; timeoutMs?: number } = {}): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), opts.timeoutMs ?? TIMEOUT_MS);
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.auth !== false && session) headers.Authorization = `Bearer ${session.accessToken}`;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: controller.signal });
  } catch (err) {
    if (controller.signal.aborted) throw new ApiError(0, 'TIMEOUT', `No answer from the server in ${Math.round((opts.timeoutMs ?? TIMEOUT_MS) / 1000)} s. Retry.`);
    throw new ApiError(0, 'NETWORK', 'Cannot reach the server (network error). Check the connection and retry.');
  } finally {
    clearTimeout(timer);
  }
  let json: unknown = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const b = (json && typeof json === 'object' ? json : null) as { errcode?: string; error?: string } | null;
    if (res.status === 401 && opts.auth !== false && b?.errcode !== 'M_FORBIDDEN') setSession(null);
    throw new ApiError(res.status, b?.errcode ?? 'HTTP', explain(res.status, b));
  }
  return (json ?? {}) as T;
}

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return 'Something went wrong in the page. Reload it and retry.';
}

export async function login(user: string, password: string): Promise<void> {
  const r = await api<{ access_token: string; user_id: string; device_id: string }>('POST', '/_matrix/client/v3/login', {
    type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, initial_device_display_name: 'super-server admin dashboard',
  }, { auth: false });
  setSession({ accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
}

export async function logout(): Promise<void> {
  try { await api('POST', '/_matrix/client/v3/logout', {}); } catch { /* the token may be gone already */ }
  setSession(null);
}

export const enc = encodeURIComponent;
export const SA = '/_synapse/admin';
export const SU = '/_super/admin/v1';

export function when(ts: number | null | undefined): string {
  if (ts === null || ts === undefined) return '—';
  return new Date(ts).toLocaleString();
}

export function ago(ts: number | null | undefined): string {
  if (!ts) return 'never';
  const s = Math.round((Date.now() - ts) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
