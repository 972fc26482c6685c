// Every refusal as a sentence a person can read; a rate limit says how long to wait.

/** An error of the server, as the client-server API's JSON, with the HTTP status. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly errcode: string, message: string, readonly retryAfterMs?: number, readonly body?: Record<string, unknown>) {
    super(message);
  }
}

export interface Shown {
  text: string;
  /** When the action may be tried again (ms since epoch): a countdown is shown until then. */
  until?: number;
}

export function describe(err: unknown): Shown {
  const e = err as { errcode?: string; httpStatus?: number; status?: number; message?: string; data?: { error?: string; retry_after_ms?: number }; retryAfterMs?: number; body?: { retry_after_ms?: number } };
  const status = e?.httpStatus ?? e?.status;
  const errcode = e?.errcode ?? (e?.data as { errcode?: string } | undefined)?.errcode;
  const serverText = e?.data?.error ?? e?.message ?? String(err);
  const retry = e?.retryAfterMs ?? e?.data?.retry_after_ms ?? e?.body?.retry_after_ms;
  if (status === 429 || errcode === 'M_LIMIT_EXCEEDED') {
    const ms = typeof retry === 'number' ? retry : 5000;
    return { text: 'Too many requests: the server asks you to wait', until: Date.now() + ms };
  }
  if (errcode === 'M_FORBIDDEN') return { text: `Not allowed: ${serverText}` };
  if (errcode === 'M_NOT_FOUND') return { text: `Not found: ${serverText}` };
  if (errcode === 'M_USER_IN_USE') return { text: 'That user name is taken: choose another' };
  if (errcode === 'M_INVALID_USERNAME') return { text: `That user name cannot be used: ${serverText}` };
  if (errcode === 'M_WEAK_PASSWORD') return { text: `The password is too weak: ${serverText}` };
  if (errcode === 'M_TOO_LARGE') return { text: `Too large: ${serverText}` };
  if (errcode === 'M_UNKNOWN_TOKEN') return { text: 'Your session has ended: sign in again' };
  if (status === 0 || /fetch|network|Failed to fetch/i.test(serverText)) return { text: 'Cannot reach the server: check your connection' };
  return { text: serverText };
}

/** Seconds left before `until`, rounded up (0 when it has passed). */
export function secondsLeft(until: number | undefined, now: number): number {
  return until === undefined ? 0 : Math.max(0, Math.ceil((until - now) / 1000));
}
