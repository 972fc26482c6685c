import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { MatrixError } from '../http/errors.ts';
import type { Mailer } from './mailer.ts';
import type { ThreepidRow, ThreepidStore, ValidationPurpose } from './threepid-store.ts';
import { hashToken, randomString } from './tokens.ts';

/** Validation sessions pending for one address at once: a script cannot mail-bomb an address. */
const MAX_PENDING_PER_ADDRESS = 5;
/** Validation sessions kept at most, all addresses together (unauthenticated clients create them). */
const MAX_VALIDATION_SESSIONS = 10_000;
/** The spec's grammar of a client secret. */
const CLIENT_SECRET = /^[0-9a-zA-Z.=_-]{1,255}$/;
/** Deliberately plain: one @, no spaces or controls (no header injection), a dot in the domain. */
const EMAIL = /^[^\s@<>()",;]+@[^\s@<>()",;]+\.[^\s@<>()",;]+$/;

/** Where the user proves an address: the link in the mail (the path Synapse serves it under). */
export const SUBMIT_TOKEN_PATH = '/_synapse/client/email/submit_token';

/** An address proven by a followed link, ready to bind. */
export interface ValidatedEmail {
  sessionId: string;
  address: string;
  validatedAt: number;
}

/** The canonical form of an e-mail address (as Synapse: trimmed, lower-cased), or M_INVALID_PARAM. */
export function canonicalEmail(raw: string): string {
  const address = raw.trim().toLowerCase();
  if (address.length > 254 || !EMAIL.test(address)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid e-mail address');
  return address;
}

/**
 * E-mail addresses of accounts (at most one account per address) and their validation: a token
 * mailed as a link, followed by the user, then used once (registration, adding the address, or a
 * password reset).
 */
export class ThreepidService {
  constructor(private store: ThreepidStore, private config: Config, private mailer: Mailer | undefined, private log?: Logger) {}

  get canMail(): boolean {
    return this.mailer !== undefined;
  }

  /** Sends (or, for a send_attempt already seen, does not send again) a validation link; the sid. */
  async requestToken(purpose: ValidationPurpose, req: { clientSecret: string; email: string; sendAttempt: number }): Promise<{ sid: string }> {
    if (!this.mailer) throw new MatrixError(400, 'M_THREEPID_MEDIUM_NOT_SUPPORTED', 'This server sends no e-mail (SMTP_HOST is not set)');
    if (!CLIENT_SECRET.test(req.clientSecret)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid client_secret');
    const address = canonicalEmail(req.email);
    const owner = await this.store.owner('email', address);
    if (purpose === 'password' && !owner) throw new MatrixError(400, 'M_THREEPID_NOT_FOUND', 'No account has this e-mail address');
    if (purpose !== 'password' && owner) throw new MatrixError(400, 'M_THREEPID_IN_USE', 'This e-mail address is already in use');

    const existing = await this.store.sessionBySecret(req.clientSecret, 'email', address, purpose);
    // The client retried the same request: the mail already went out (spec: send_attempt).
    if (existing && req.sendAttempt <= existing.send_attempt) return { sid: existing.session_id };
    if (!existing && (await this.store.pendingForAddress('email', address)) >= MAX_PENDING_PER_ADDRESS) {
      throw new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many validation e-mails pending for this address; use a link already sent', { retry_after_ms: this.config.emailTokenLifetimeMs });
    }
    const token = randomString(32);
    const now = Date.now();
    const sid = await this.store.upsertSession({
      session_id: randomString(24), medium: 'email', address, client_secret: req.clientSecret, purpose,
      token_hash: hashToken(token), send_attempt: req.sendAttempt, created_ts: now, expires_ts: now + this.config.emailTokenLifetimeMs,
    }, MAX_VALIDATION_SESSIONS);
    const link = `${this.config.publicBaseUrl}${SUBMIT_TOKEN_PATH}?${new URLSearchParams({ token, client_secret: req.clientSecret, sid })}`;
    const what = purpose === 'register' ? 'create an account' : purpose === 'add' ? 'add this address to your account' : 'reset your password';
    const minutes = Math.round(this.config.emailTokenLifetimeMs / 60_000);
    try {
      await this.mailer.send({
        to: address,
        subject: `Confirm your e-mail address for ${this.config.serverName}`,
        text: `To ${what} on ${this.config.serverName}, open this link within ${minutes} minutes:\n\n${link}\n\nIf you did not ask for this, ignore this mail.\n`,
        html: `<p>To ${what} on ${escapeHtml(this.config.serverName)}, open this link within ${minutes} minutes:</p><p><a href="${escapeHtml(link)}">${escapeHtml(link)}</a></p><p>If you did not ask for this, ignore this mail.</p>`,
      });
    } catch (err) {
      this.log?.error({ err: (err as Error).message, purpose }, 'validation e-mail could not be sent');
      throw new MatrixError(500, 'M_UNKNOWN', 'The validation e-mail could not be sent; try again later');
    }
    return { sid };
  }

  /** The link was followed: true when it names a live session with its token and secret. */
  async submitToken(sid: string, clientSecret: string, token: string): Promise<boolean> {
    return this.store.markValidated(sid, clientSecret, hashToken(token));
  }

  /**
   * The address a followed link proved, for this purpose; M_THREEPID_AUTH_FAILED when the session
   * is unknown, expired, for another purpose, or its link has not been followed yet.
   */
  async validated(creds: { sid: string; clientSecret: string }, purpose: ValidationPurpose): Promise<ValidatedEmail> {
    const s = await this.store.session(creds.sid);
    if (!s || s.client_secret !== creds.clientSecret || s.purpose !== purpose) {
      throw new MatrixError(400, 'M_THREEPID_AUTH_FAILED', 'No validation session matches these credentials');
    }
    if (s.validated_ts === null) throw new MatrixError(401, 'M_THREEPID_AUTH_FAILED', 'The e-mail address has not been validated yet: follow the link in the mail');
    return { sessionId: s.session_id, address: s.address, validatedAt: Number(s.validated_ts) };
  }

  /** Binds a proven address in the caller's transaction and uses its session up; M_THREEPID_IN_USE if taken. */
  async bind(trx: Knex, userId: string, email: ValidatedEmail): Promise<void> {
    if (!(await this.store.bind(trx, { medium: 'email', address: email.address, userId, validatedAt: email.validatedAt }))) {
      throw new MatrixError(400, 'M_THREEPID_IN_USE', 'This e-mail address is already in use');
    }
    await this.store.deleteSession(trx, email.sessionId);
  }

  /** Uses a session up without binding (a password reset). */
  async consume(trx: Knex, email: ValidatedEmail): Promise<void> {
    await this.store.deleteSession(trx, email.sessionId);
  }

  list(userId: string): Promise<ThreepidRow[]> {
    return this.store.threepids(userId);
  }

  async unbind(userId: string, medium: string, address: string): Promise<void> {
    await this.store.unbind(userId, medium, medium === 'email' ? address.trim().toLowerCase() : address);
  }

  /** The account an address belongs to (login by e-mail, password reset). */
  async owner(medium: string, address: string): Promise<string | undefined> {
    if (medium !== 'email') return undefined;
    return this.store.owner('email', address.trim().toLowerCase());
  }

  deleteExpired(): Promise<number> {
    return this.store.deleteExpiredSessions();
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
