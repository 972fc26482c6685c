import type { Rule } from './bucket.ts';

/**
 * Every limiter, its env prefix (RC_<X>_PER_SECOND, RC_<X>_BURST) and default. The defaults start
 * from Synapse's (docs: config_documentation.md#ratelimiting); where they differ, the reason is
 * beside them. What a bucket is keyed by is said after each.
 */
export const LIMITERS = {
  /** Events a user sends (messages, state, own redactions); key: user. Synapse 0.2/s, burst 10
   *  annoys people who type fast and every bot: 1/s with a burst of 30 still stops a script. */
  message: { env: 'RC_MESSAGE', perSecond: 1, burst: 30 },
  /** Accounts created; key: client address (Synapse). */
  registration: { env: 'RC_REGISTRATION', perSecond: 0.17, burst: 3 },
  /** Login attempts; key: client address (Synapse). */
  login_address: { env: 'RC_LOGIN_ADDRESS', perSecond: 0.003, burst: 5 },
  /** Login attempts; key: the account tried (Synapse). */
  login_account: { env: 'RC_LOGIN_ACCOUNT', perSecond: 0.003, burst: 5 },
  /** Failed logins; key: the account tried (Synapse). Escalating: each failure past the burst
   *  halves the refill (up to 64×), so a brute force waits longer and longer. */
  login_failed: { env: 'RC_LOGIN_FAILED_ATTEMPTS', perSecond: 0.17, burst: 3 },
  /** Joins of rooms on this server; key: user (Synapse). */
  joins_local: { env: 'RC_JOINS_LOCAL', perSecond: 0.1, burst: 10 },
  /** Joins of rooms on other servers; key: user (Synapse). */
  joins_remote: { env: 'RC_JOINS_REMOTE', perSecond: 0.01, burst: 10 },
  /** Invites into one room; key: room (Synapse). */
  invites_per_room: { env: 'RC_INVITES_PER_ROOM', perSecond: 0.3, burst: 10 },
  /** Invites one user receives; key: invitee (Synapse). */
  invites_per_user: { env: 'RC_INVITES_PER_USER', perSecond: 0.003, burst: 5 },
  /** Invites one user sends; key: inviter (Synapse). */
  invites_per_issuer: { env: 'RC_INVITES_PER_ISSUER', perSecond: 0.3, burst: 10 },
  /** Media uploads; key: user (Synapse's rc_media_create). */
  media_upload: { env: 'RC_MEDIA_UPLOAD', perSecond: 10, burst: 50 },
  /** Redactions of other users' events (moderators cleaning up spam), instead of `message`; key:
   *  user. Synapse falls back to rc_message; its documented example (1/s, burst 50) lets a
   *  moderator clear a spam wave. */
  admin_redaction: { env: 'RC_ADMIN_REDACTION', perSecond: 1, burst: 50 },
  /** 3PID validation requests (e-mails sent); key: address and e-mail (Synapse). */
  threepid_validation: { env: 'RC_3PID_VALIDATION', perSecond: 0.003, burst: 5 },
  /** /sync requests; key: access token (hashed). Not in Synapse, which caches a repeated /sync
   *  instead: a client asking again and again with an old `since` gets an answer at once each time
   *  and makes the server work flat out. Past the rate a /sync is held back (overload.ts), not
   *  refused: a real client's next answer just comes a moment later and carries more. */
  sync: { env: 'RC_SYNC', perSecond: 10, burst: 30 },
  /** Rooms created and joined; key: user. Set by ROOMS_PER_HOUR (burst = the hour's allowance). */
  rooms_per_hour: { env: 'ROOMS_PER_HOUR', perSecond: 60 / 3600, burst: 60 },
  /** Friend requests one user sends (issue 13), as invites_per_issuer; key: sender. */
  friend_requests: { env: 'RC_FRIEND_REQUESTS', perSecond: 0.3, burst: 10 },
} as const satisfies Record<string, Rule & { env: string }>;

export type LimiterName = keyof typeof LIMITERS;
export const LIMITER_NAMES = Object.keys(LIMITERS) as LimiterName[];

/** Limiters keyed by the acting user: an admin is exempt and a per-user override applies. */
export const PER_USER: ReadonlySet<LimiterName> = new Set(['message', 'joins_local', 'joins_remote', 'invites_per_issuer', 'media_upload', 'admin_redaction', 'rooms_per_hour', 'friend_requests']);

export type Rules = Record<LimiterName, Rule>;
