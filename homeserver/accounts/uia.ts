import { MatrixError } from '../http/errors.ts';
import type { AccountService } from './service.ts';
import type { AccountStore } from './store.ts';
import type { ValidationPurpose } from './threepid-store.ts';
import { randomString } from './tokens.ts';

export type Flow = string[];

interface AuthDict {
  type?: unknown;
  session?: unknown;
  password?: unknown;
  user?: unknown;
  identifier?: { type?: unknown; user?: unknown };
  token?: unknown;
  threepid_creds?: { sid?: unknown; client_secret?: unknown };
  threepidCreds?: { sid?: unknown; client_secret?: unknown };
}

export interface UiaOptions {
  /** Set: the stages prove this user (m.login.password). */
  userId?: string;
  params?: Record<string, unknown>;
  /** What a validated e-mail (m.login.email.identity) must have been requested for. */
  emailPurpose?: ValidationPurpose;
  /**
   * Runs once every stage is done, before the session is used up: a refusal here (the new password
   * is too weak for the account the e-mail proved) leaves the session for the client's next try.
   */
  beforeDone?: (params: Record<string, unknown>) => Promise<void>;
}

/**
 * User-interactive authentication: answers 401 with the flows until one flow's stages are all done,
 * then returns the session's params. `userId` set: the stages prove that user (m.login.password).
 * Sessions are made by unauthenticated requests: they expire (UIA_SESSION_LIFETIME_MS) and at most
 * UIA_MAX_SESSIONS are kept (the oldest go), so a flood of requests cannot grow the table.
 */
export async function userInteractiveAuth(
  accounts: AccountService,
  store: AccountStore,
  body: Record<string, unknown>,
  flows: Flow[],
  opts: UiaOptions = {},
): Promise<{ sessionId: string; params: Record<string, unknown> }> {
  const { lifetimeMs, maxSessions } = accounts.uiaLimits;
  const liveAfter = () => Date.now() - lifetimeMs;
  const auth = body.auth as AuthDict | undefined;
  const uiaParams = opts.params ?? {};
  const challenge = (sessionId: string, completed: string[], err?: { errcode: string; error: string }) =>
    new MatrixError(401, err?.errcode ?? 'M_UNAUTHORIZED', err?.error ?? 'Additional authentication is required', {
      session: sessionId,
      flows: flows.map((stages) => ({ stages })),
      params: uiaParams,
      completed,
      ...(err ? {} : {}),
    });

  if (auth === undefined || auth === null || typeof auth !== 'object' || auth.type === undefined) {
    // No auth yet (or only a session to poll): start or report the session.
    const existing = auth && typeof auth.session === 'string' ? await store.uiaSession(auth.session, liveAfter()) : undefined;
    if (existing) throw withoutErr(challenge(existing.session_id, existing.completed));
    const sessionId = randomString(24);
    await store.createUiaSession(sessionId, opts.userId ?? null, {}, { cap: maxSessions, expiredBefore: liveAfter() });
    throw withoutErr(challenge(sessionId, []));
  }

  let sessionId = typeof auth.session === 'string' ? auth.session : undefined;
  let session = sessionId ? await store.uiaSession(sessionId, liveAfter()) : undefined;
  if (sessionId && !session) throw new MatrixError(400, 'M_UNKNOWN', 'Unknown UIA session ID');
  if (session && session.user_id && opts.userId && session.user_id !== opts.userId) {
    throw new MatrixError(403, 'M_FORBIDDEN', 'This UIA session belongs to another user');
  }
  if (!session) {
    sessionId = randomString(24);
    await store.createUiaSession(sessionId, opts.userId ?? null, {}, { cap: maxSessions, expiredBefore: liveAfter() });
    session = await store.uiaSession(sessionId, liveAfter());
    if (!session) throw new MatrixError(400, 'M_UNKNOWN', 'Unknown UIA session ID');
  }
  const sid = session.session_id;
  const type = auth.type;
  const allowed = new Set(flows.flat());
  if (typeof type !== 'string' || !allowed.has(type)) {
    throw new MatrixError(400, 'M_UNRECOGNIZED', `Unrecognised authentication type ${String(type)}`);
  }

  if (type === 'm.login.dummy') {
    await store.completeUiaStage(sid, type);
  } else if (type === 'm.login.password') {
    const who = typeof auth.identifier?.user === 'string' ? auth.identifier.user : typeof auth.user === 'string' ? auth.user : undefined;
    const userId = opts.userId;
    const claimed = who === undefined ? userId : who.startsWith('@') ? who : who && accounts.userId(who);
    const ok = userId !== undefined && claimed?.toLowerCase() === userId.toLowerCase() && typeof auth.password === 'string' && (await accounts.checkPassword(userId, auth.password));
    if (!ok) throw challenge(sid, session.completed, { errcode: 'M_FORBIDDEN', error: 'Invalid password' });
    await store.completeUiaStage(sid, type);
  } else if (type === 'm.login.registration_token') {
    const token = typeof auth.token === 'string' ? auth.token : '';
    if (!(await accounts.registrationTokenValid(token))) throw challenge(sid, session.completed, { errcode: 'M_FORBIDDEN', error: 'Invalid registration token' });
    await store.setUiaParam(sid, 'registration_token', token);
    await store.completeUiaStage(sid, type);
  } else if (type === 'm.login.email.identity') {
    const creds = auth.threepid_creds ?? auth.threepidCreds;
    if (!creds || typeof creds.sid !== 'string' || typeof creds.client_secret !== 'string') {
      throw challenge(sid, session.completed, { errcode: 'M_MISSING_PARAM', error: 'Missing threepid_creds (sid, client_secret)' });
    }
    const email = await accounts.email.validated({ sid: creds.sid, clientSecret: creds.client_secret }, opts.emailPurpose ?? 'register').catch((err) => {
      // Not (yet) validated: the same challenge again, saying why, so the client can poll.
      throw err instanceof MatrixError ? challenge(sid, session.completed, { errcode: err.errcode, error: err.message }) : err;
    });
    await store.setUiaParam(sid, 'email', email);
    await store.completeUiaStage(sid, type);
  }

  const now = await store.uiaSession(sid, liveAfter());
  if (!now) throw new MatrixError(400, 'M_UNKNOWN', 'Unknown UIA session ID');
  const done = flows.some((stages) => stages.every((s) => now.completed.includes(s)));
  if (!done) throw withoutErr(challenge(sid, now.completed));
  await opts.beforeDone?.(now.params);
  await store.deleteUiaSession(sid);
  return { sessionId: sid, params: now.params };
}

/** A plain challenge carries no errcode/error in its body beyond what the spec shows. */
function withoutErr(e: MatrixError): MatrixError {
  (e as { bare?: boolean }).bare = true;
  return e;
}
