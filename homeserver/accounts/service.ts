import { LruCache } from '../cache/lru.ts';
import { Topic } from '../subscriptions/topic.ts';
import { hash as argonHash, verify as argonVerify } from '@node-rs/argon2';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { MatrixError, forbidden } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import { isValidLocalpart } from '../protocol/identifiers.ts';
import type { AccountStore, DeviceRow } from './store.ts';
import { userInteractiveAuth, type Flow, type UiaOptions } from './uia.ts';
import type { ThreepidService, ValidatedEmail } from './threepids.ts';
import type { BackgroundJob } from '../coordination/jobs.ts';
import { HashGate } from './hash-gate.ts';
import { TOKEN_CACHE_MS, hashToken, newToken, randomId, randomString } from './tokens.ts';
import { refuseLockedOrWaiting, type LockableRequester } from './enforcement.ts';
import { RESTRICTION_KINDS, type RestrictionKind, type RestrictionRow } from './restriction-kinds.ts'; // issue 12

export interface Session {
  user_id: string;
  access_token: string;
  device_id: string;
  home_server: string;
  refresh_token?: string;
  expires_in_ms?: number;
}

/** Argon2id with OWASP's minimum parameters: 19 MiB, 2 passes. */
const ARGON = { algorithm: 2 /* Argon2id */, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;
const MAX_PASSWORD = 512;

/** Tries of each registration step before the registration is undone. */
const REGISTRATION_STEP_ATTEMPTS = 3;


/**
 * A localpart this short is not looked for inside passwords: almost any password would contain a
 * one- or two-letter name by chance. Equal to it is refused whatever its length.
 */
const MIN_NAME_IN_PASSWORD = 3;

/** How often expired UIA and e-mail validation sessions are deleted (besides being ignored at once). */
const EXPIRY_SWEEP_MS = 60_000;

/** How long last_seen updates wait to be written together; how many make a write at once. */
const SEEN_FLUSH_MS = 5_000;
const SEEN_BATCH_MAX = 5_000;
interface DeviceSeen { userId: string; deviceId: string; ts: number; ip: string | null }

export class AccountService {
  /** `staleAt` (issue 12): when the soonest of the user's restrictions expires, the entry is read again. */
  private tokenCache = new LruCache<string, { requester: Requester; expiresTs: number | null; cachedAt: number; staleAt?: number }>(50_000);
  private lastTouched = new LruCache<string, number>(50_000);
  /** issue 7: password hashes run a few at a time, so a login flood cannot starve everyone else. */
  private hashGate = new HashGate();
  /** What every new account needs before registration answers (default push rules, auto-join rooms). */
  private registrationSteps: Array<{ name: string; run: (userId: string) => Promise<void> }> = [];
  /** Published before an account is deactivated (or a failed registration undone): leave its rooms. */
  readonly deactivating = new Topic<string>('account deactivating');
  /** issue 6 (pushers): published after devices are deleted (logout, device deletion, password change) with the ids gone. */
  readonly devicesRemoved = new Topic<{ userId: string; deviceIds: string[] }>('devices removed');

  constructor(private store: AccountStore, private config: Config, private log?: Logger, readonly threepids?: ThreepidService) {}

  /** issue 9 (mod9): checks a new user id passes before its account is made (policy lists); each throws to refuse. */
  readonly registrationChecks: Array<(userId: string) => Promise<void>> = [];

  /** issue 9 (mod9): when an account was made (ms), undefined for an unknown user. */
  async createdTs(userId: string): Promise<number | undefined> {
    const row = await this.store.user(userId);
    return row ? Number(row.created_ts) : undefined;
  }

  get uiaLimits(): { lifetimeMs: number; maxSessions: number } {
    return { lifetimeMs: this.config.uiaSessionLifetimeMs, maxSessions: this.config.uiaMaxSessions };
  }

  /** E-mail addresses (REGISTRATION=email, /account/3pid); M_THREEPID_MEDIUM_NOT_SUPPORTED without them. */
  get email(): ThreepidService {
    if (!this.threepids) throw new MatrixError(400, 'M_THREEPID_MEDIUM_NOT_SUPPORTED', 'E-mail addresses are not supported here');
    return this.threepids;
  }

  /**
   * Subscribes a step that every new account needs. Registration answers only once every step has
   * run; a step that keeps failing undoes the registration (see `register`). A step decides itself
   * which of its failures are the user's lot rather than the server's (and swallows those).
   */
  onRegistered(name: string, run: (userId: string) => Promise<void>): void {
    this.registrationSteps.push({ name, run });
  }

  userId(localpart: string): string {
    return `@${localpart}:${this.config.serverName}`;
  }

  async hashPassword(password: string): Promise<string> {
    return this.hashGate.run(() => argonHash(password, ARGON));
  }

  checkPasswordShape(password: unknown): string {
    if (typeof password !== 'string') throw new MatrixError(400, 'M_BAD_JSON', 'password must be a string');
    if (password.length > MAX_PASSWORD) throw new MatrixError(400, 'M_BAD_JSON', `Password too long (max ${MAX_PASSWORD})`);
    return password;
  }

  /**
   * The password policy (issue 7): at least PASSWORD_MIN_LENGTH characters (code points), not the
   * username and not containing it, case-insensitively. 400 M_WEAK_PASSWORD otherwise, before
   * anything is stored.
   */
  checkPasswordPolicy(password: string, localpart: string | undefined): void {
    const min = this.config.passwordMinLength;
    if (password.length === 0) throw new MatrixError(400, 'M_WEAK_PASSWORD', 'The password must not be empty');
    if ([...password].length < min) throw new MatrixError(400, 'M_WEAK_PASSWORD', `The password must be at least ${min} characters long`);
    if (localpart) {
      const name = localpart.toLowerCase();
      const lower = password.toLowerCase();
      if (lower === name || (name.length >= MIN_NAME_IN_PASSWORD && lower.includes(name))) {
        throw new MatrixError(400, 'M_WEAK_PASSWORD', 'The password must not contain the username');
      }
    }
  }

  /** Checks a desired localpart as Synapse does: lowercase grammar, not reserved, not taken. */
  async checkUsername(localpart: string): Promise<void> {
    if (!localpart) throw new MatrixError(400, 'M_INVALID_USERNAME', 'User ID cannot be empty');
    if (!isValidLocalpart(localpart)) {
      throw new MatrixError(400, 'M_INVALID_USERNAME', "User ID can only contain characters a-z, 0-9, or '=_-./+'");
    }
    if (localpart.startsWith('_')) throw new MatrixError(400, 'M_INVALID_USERNAME', 'User ID may not begin with _');
    if (this.userId(localpart).length > 255) throw new MatrixError(400, 'M_INVALID_USERNAME', 'User ID may not be longer than 255 characters');
    if (await this.store.isLocalpartTaken(localpart)) throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken.');
  }

  /**
   * The server's own account (creator of the rooms the server makes): created on first start,
   * without a password, so nobody can log in as it.
   */
  async ensureSystemAccount(localpart: string, displayname: string): Promise<string> {
    const userId = this.userId(localpart);
    await this.store.ensureUser({ userId, localpart, passwordHash: null, isAdmin: true, displayname });
    return userId;
  }

  /** Whether a registration token may still be used (uses left, not expired). */
  async registrationTokenValid(token: string): Promise<boolean> {
    const row = await this.store.registrationToken(token);
    return !!row && (row.uses_allowed === null || row.completed < row.uses_allowed) && (row.expiry_time === null || row.expiry_time > Date.now());
  }

  /**
   * User-interactive authentication (see uia.ts): answers 401 with the flows until one flow's
   * stages are all done, then returns the session's params.
   */
  interactiveAuth(
    body: Record<string, unknown>,
    flows: Flow[],
    opts: UiaOptions = {},
  ): Promise<{ sessionId: string; params: Record<string, unknown> }> {
    return userInteractiveAuth(this, this.store, body, flows, opts);
  }

  devices(userId: string): Promise<DeviceRow[]> {
    return this.store.devices(userId);
  }

  device(userId: string, deviceId: string): Promise<DeviceRow | undefined> {
    return this.store.device(userId, deviceId);
  }

  async renameDevice(userId: string, deviceId: string, name: string): Promise<void> {
    await this.store.renameDevice(userId, deviceId, name);
  }

  async generateLocalpart(): Promise<string> {
    for (;;) {
      const candidate = randomString(10).toLowerCase();
      if (!(await this.store.isLocalpartTaken(candidate))) return candidate;
    }
  }

  /** Creates the account and, unless inhibited, a device and its tokens, in one transaction. */
  async register(opts: {
    localpart: string;
    password: string | null;
    isAdmin?: boolean;
    isGuest?: boolean;
    displayname?: string;
    deviceId?: string;
    deviceName?: string;
    inhibitLogin?: boolean;
    refreshToken?: boolean;
    registrationToken?: string;
    /** A validated address (REGISTRATION=email): bound in the same transaction, or the registration fails. */
    email?: ValidatedEmail;
    ip?: string | null;
    /** issue 9 (REGISTRATION_APPROVAL=on): the account waits for a moderator; no session is made. */
    awaitingApproval?: boolean;
  }): Promise<{ user_id: string; home_server: string } & Partial<Session>> {
    const userId = this.userId(opts.localpart);
    for (const check of this.registrationChecks) await check(userId); // issue 9 (mod9)
    const passwordHash = opts.password === null ? null : await this.hashPassword(opts.password);
    let session: Session | undefined;
    await this.store.db.transaction(async (trx) => {
      if (opts.registrationToken !== undefined && !(await this.store.useRegistrationToken(trx, opts.registrationToken))) {
        throw new MatrixError(401, 'M_FORBIDDEN', 'Registration token is invalid or used up');
      }
      const created = await this.store.insertUser(trx, {
        userId,
        localpart: opts.localpart,
        passwordHash,
        isAdmin: opts.isAdmin ?? false,
        isGuest: opts.isGuest,
        approved: !opts.awaitingApproval,
        displayname: opts.displayname ?? opts.localpart,
      });
      if (!created) throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken.');
      if (opts.email) await this.email.bind(trx, userId, opts.email);
      if (!opts.inhibitLogin && !opts.awaitingApproval) session = await this.createSession(trx, userId, opts.deviceId, opts.deviceName, opts.refreshToken ?? false, opts.ip ?? null);
    });
    await this.completeRegistration(userId);
    return session ?? { user_id: userId, home_server: this.config.serverName };
  }

  /**
   * Runs the registration steps, each retried a few times: a server that is briefly short of
   * connections must not leave accounts without push rules or their auto-join rooms. If a step
   * still fails, the account is removed again and registration fails with 503: the client never
   * saw it, and may simply try again.
   */
  private async completeRegistration(userId: string): Promise<void> {
    const failures = (
      await Promise.all(this.registrationSteps.map(async (step) => {
        for (let attempt = 1; ; attempt++) {
          try {
            await step.run(userId);
            return undefined;
          } catch (err) {
            if (attempt >= REGISTRATION_STEP_ATTEMPTS) return { step: step.name, err };
            await new Promise((r) => setTimeout(r, 50 * attempt));
          }
        }
      }))
    ).filter((f) => f !== undefined);
    if (!failures.length) return;
    this.log?.error({ userId, failures: failures.map((f) => ({ step: f.step, err: String(f.err) })) }, 'registration could not be completed: undoing it');
    await this.deactivating.publish(userId).catch(() => {});
    await this.store.db.transaction((trx) => this.store.deleteUser(trx, userId));
    this.forgetCachedTokens(userId);
    throw new MatrixError(503, 'M_UNKNOWN', 'Registration could not be completed; please try again');
  }

  /** A device (new or reused) with fresh tokens. */
  async createSession(trx: Knex, userId: string, deviceId: string | undefined, deviceName: string | undefined, withRefresh: boolean, ip: string | null): Promise<Session> {
    const device = deviceId || randomId(10);
    await this.store.upsertDevice(trx, userId, device, deviceName ?? null, ip);
    const access = newToken('syt');
    const session: Session = { user_id: userId, access_token: access, device_id: device, home_server: this.config.serverName };
    let refreshId: number | null = null;
    let expires: number | null = null;
    if (withRefresh) {
      const refresh = newToken('syr');
      refreshId = await this.store.insertRefreshToken(trx, hashToken(refresh), userId, device);
      expires = Date.now() + this.config.accessTokenLifetimeMs;
      session.refresh_token = refresh;
      session.expires_in_ms = this.config.accessTokenLifetimeMs;
    }
    await this.store.insertAccessToken(trx, hashToken(access), userId, device, expires, refreshId);
    return session;
  }

  async login(localpartOrId: string, password: string, deviceId: string | undefined, deviceName: string | undefined, withRefresh: boolean, ip: string | null): Promise<Session> {
    const localpart = this.localpartOf(localpartOrId);
    const user = localpart === null ? undefined : await this.store.userByLocalpartInsensitive(localpart);
    // Verify a hash even for unknown users so timing does not tell who exists.
    const ok = await this.hashGate.run(() => argonVerify(user?.password_hash ?? DUMMY_HASH, password).catch(() => false));
    if (!user || !user.password_hash || !ok) throw forbidden('Invalid username or password');
    if (user.deactivated) throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated');
    // issue 9; issue 12: a lock past its expiry no longer holds (the sweep clears it soon).
    const locked = user.locked && (await this.restrictionsInForce(user, Date.now())).locked;
    refuseLockedOrWaiting({ locked, awaitingApproval: !user.approved }, false);
    const isNewDevice = !deviceId || !(await this.store.device(user.user_id, deviceId));
    if (isNewDevice && this.config.devicePolicy === 'refuse' && (await this.store.deviceCount(user.user_id)) >= this.config.maxDevicesPerUser) {
      throw new MatrixError(403, 'M_FORBIDDEN', `Too many sessions: this account already has ${this.config.maxDevicesPerUser} devices. Log out of one (or delete it) and try again.`);
    }
    const session = await this.store.db.transaction((trx) => this.createSession(trx, user.user_id, deviceId, deviceName, withRefresh, ip));
    if (isNewDevice && this.config.devicePolicy === 'evict') await this.evictDevicesOverCap(user.user_id, session.device_id);
    return session;
  }

  /**
   * DEVICE_LIMIT_POLICY=evict: the least recently seen devices past MAX_DEVICES_PER_USER are logged
   * out, through the same path as a device deletion (tokens, cached tokens on every worker, open
   * sockets, pushers and whatever else listens to it). Never the device just logged in.
   */
  private async evictDevicesOverCap(userId: string, keep: string): Promise<void> {
    const cap = this.config.maxDevicesPerUser;
    if ((await this.store.deviceCount(userId)) <= cap) return;
    const evicted = await this.store.devicesBeyond(userId, cap, keep);
    if (!evicted.length) return;
    this.log?.info({ userId, evicted: evicted.length, cap }, 'device limit: least recently seen devices logged out');
    await this.deleteDevices(userId, evicted);
  }

  /** The account an e-mail address belongs to (login with an m.id.thirdparty identifier). */
  async userIdForThreepid(medium: string, address: string): Promise<string | undefined> {
    return this.threepids?.owner(medium, address);
  }

  /** `@alice:server` or `alice` → `alice`; another server's user → null. */
  localpartOf(idOrLocalpart: string): string | null {
    if (!idOrLocalpart.startsWith('@')) return idOrLocalpart;
    const colon = idOrLocalpart.indexOf(':');
    if (colon < 0) return null;
    if (idOrLocalpart.slice(colon + 1) !== this.config.serverName) return null;
    return idOrLocalpart.slice(1, colon);
  }

  async checkPassword(userId: string, password: string): Promise<boolean> {
    const user = await this.store.user(userId);
    const stored = user?.password_hash;
    if (!stored) return false;
    return this.hashGate.run(() => argonVerify(stored, password).catch(() => false));
  }

  /** Access token → requester; 401 M_UNKNOWN_TOKEN (soft_logout when expired). */
  async authenticate(token: string, ip: string | null, allowLocked = false): Promise<Requester> {
    const now = Date.now();
    const hit = this.tokenCache.get(token);
    let requester: Requester;
    let expiresTs: number | null;
    if (hit && now - hit.cachedAt < TOKEN_CACHE_MS && !(hit.staleAt !== undefined && hit.staleAt <= now)) {
      requester = hit.requester;
      expiresTs = hit.expiresTs;
    } else {
      const row = await this.store.accessToken(hashToken(token));
      if (!row || row.deactivated) {
        this.tokenCache.delete(token);
        throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid access token passed.', { soft_logout: false });
      }
      requester = { userId: row.user_id, deviceId: row.device_id, isGuest: row.is_guest, isAdmin: row.is_admin, tokenId: Number(row.id) };
      // issue 9: the states server admins set (accounts/enforcement.ts); issue 12: those in force now.
      const inForce = await this.restrictionsInForce(row, now);
      if (inForce.suspended) requester.suspended = true;
      if (inForce.shadow_banned) requester.shadowBanned = true;
      if (inForce.locked) (requester as LockableRequester).locked = true;
      if (!row.approved) (requester as LockableRequester).awaitingApproval = true;
      expiresTs = row.expires_ts === null ? null : Number(row.expires_ts);
      this.tokenCache.set(token, { requester, expiresTs, cachedAt: now, ...(inForce.until !== undefined ? { staleAt: inForce.until } : {}) });
    }
    refuseLockedOrWaiting(requester as LockableRequester, allowLocked);
    if (expiresTs !== null && expiresTs <= now) {
      throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Access token has expired', { soft_logout: true });
    }
    this.touch(requester, ip);
    return requester;
  }

  /**
   * last_seen of a device, noted at most once a minute per device and written in batches (one
   * statement every few seconds, as Synapse batches client IPs): a thousand woken long-polls must
   * not cost a thousand UPDATEs.
   */
  private touch(r: Requester, ip: string | null): void {
    const key = `${r.userId}|${r.deviceId}`;
    const now = Date.now();
    if (now - (this.lastTouched.get(key) ?? 0) < 60_000) return;
    this.lastTouched.set(key, now);
    this.seen.set(key, { userId: r.userId, deviceId: r.deviceId, ts: now, ip });
    if (this.seen.size >= SEEN_BATCH_MAX) void this.flushSeen();
    else this.seenTimer ??= setTimeout(() => void this.flushSeen(), SEEN_FLUSH_MS).unref();
  }

  private seen = new Map<string, DeviceSeen>();
  private seenTimer: NodeJS.Timeout | undefined;

  /** Writes the noted last_seen values (also at shutdown); a failed write is dropped, it is only a hint. */
  async flushSeen(): Promise<void> {
    clearTimeout(this.seenTimer);
    this.seenTimer = undefined;
    if (!this.seen.size) return;
    const rows = [...this.seen.values()];
    this.seen.clear();
    await this.store.touchDevices(rows).catch((e) => this.log?.warn({ err: e }, 'last-seen update failed'));
  }

  /** Set by main.ts with several workers: a token change here drops the cached tokens on every worker. */
  shareTokenChanges: ((userId: string, deviceIds?: string[]) => void) | undefined;

  forgetCachedTokens(userId: string, deviceIds?: string[]): void {
    if (this.shareTokenChanges) this.shareTokenChanges(userId, deviceIds);
    else this.dropCachedTokens(userId, deviceIds);
  }

  /** Every cached token (invalidations from other workers may have been missed). */
  dropAllCachedTokens(): void {
    this.tokenCache.clear();
  }

  /** This worker's cached tokens of the user (of these devices). */
  dropCachedTokens(userId: string, deviceIds?: string[]): void {
    for (const [token, v] of [...this.tokenCache.entries()]) {
      if (v.requester.userId === userId && (!deviceIds || deviceIds.includes(v.requester.deviceId))) this.tokenCache.delete(token);
    }
  }

  async refresh(refreshToken: string): Promise<{ access_token: string; refresh_token: string; expires_in_ms: number }> {
    return this.store.db.transaction(async (trx) => {
      const row = await this.store.refreshToken(trx, hashToken(refreshToken));
      if (!row) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Invalid refresh token', { soft_logout: false });
      // The old refresh token and the access tokens it minted stop working: rotation.
      await this.store.deleteRefreshToken(trx, Number(row.id));
      this.forgetCachedTokens(row.user_id, [row.device_id]);
      const s = await this.createSession(trx, row.user_id, row.device_id, undefined, true, null);
      return { access_token: s.access_token, refresh_token: s.refresh_token!, expires_in_ms: s.expires_in_ms! };
    });
  }

  async deleteDevices(userId: string, deviceIds: string[] | 'all', exceptDevice?: string): Promise<void> {
    const gone = await this.store.db.transaction((trx) => this.store.deleteDevices(trx, userId, deviceIds, exceptDevice));
    this.forgetCachedTokens(userId);
    if (gone.length) await this.devicesRemoved.publish({ userId, deviceIds: gone }); // issue 6 (pushers)
  }

  async changePassword(userId: string, newPassword: string, logoutOthers: boolean, keepDevice: string | undefined): Promise<void> {
    const h = await this.hashPassword(newPassword);
    const gone = await this.store.db.transaction(async (trx) => {
      await this.store.setPasswordHash(trx, userId, h);
      return logoutOthers ? this.store.deleteDevices(trx, userId, 'all', keepDevice) : [];
    });
    this.forgetCachedTokens(userId);
    if (gone.length) await this.devicesRemoved.publish({ userId, deviceIds: gone }); // issue 6 (pushers)
  }

  /** A password reset proven by a validated e-mail (no access token): the account it belongs to gets the new password. */
  async resetPassword(email: ValidatedEmail, newPassword: string, logoutDevices: boolean): Promise<void> {
    const userId = await this.checkResetPassword(email, newPassword);
    const h = await this.hashPassword(newPassword);
    const gone = await this.store.db.transaction(async (trx) => {
      await this.store.setPasswordHash(trx, userId, h);
      await this.email.consume(trx, email);
      return logoutDevices ? this.store.deleteDevices(trx, userId, 'all') : [];
    });
    this.forgetCachedTokens(userId);
    if (gone.length) await this.devicesRemoved.publish({ userId, deviceIds: gone }); // issue 6 (pushers)
  }

  /** The account a reset is for, once the new password passes the policy for it. */
  async checkResetPassword(email: ValidatedEmail, newPassword: string): Promise<string> {
    const userId = await this.email.owner('email', email.address);
    if (!userId) throw new MatrixError(400, 'M_THREEPID_NOT_FOUND', 'No account has this e-mail address');
    this.checkPasswordPolicy(newPassword, this.localpartOf(userId) ?? undefined);
    return userId;
  }

  /** Binds a validated e-mail address to an account (POST /account/3pid/add). */
  async addEmail(userId: string, email: ValidatedEmail): Promise<void> {
    await this.store.db.transaction((trx) => this.email.bind(trx, userId, email));
  }

  /**
   * Deletes the UIA and e-mail validation sessions past their lifetime (a background job: lookups
   * already ignore them; this keeps the tables from holding them).
   */
  expiryJob(): BackgroundJob {
    let timer: NodeJS.Timeout | undefined;
    const sweep = async () => {
      try {
        const uia = await this.store.deleteUiaSessionsBefore(Date.now() - this.config.uiaSessionLifetimeMs);
        const validations = (await this.threepids?.deleteExpired()) ?? 0;
        if (uia || validations) this.log?.debug({ uia, validations }, 'expired sessions deleted');
      } catch (err) {
        this.log?.warn({ err: (err as Error).message }, 'expired sessions could not be deleted; next sweep retries');
      }
    };
    return {
      start: () => {
        void sweep();
        timer = setInterval(() => void sweep(), EXPIRY_SWEEP_MS);
        timer.unref();
      },
      stop: () => { if (timer) clearInterval(timer); },
    };
  }

  /**
   * issue 9: sets the states server admins control (suspended, locked, shadow-banned, approved,
   * erased); cached tokens of the user are dropped on every worker, so the change applies at once.
   * false: no such user.
   */
  async setAccountState(userId: string, state: Partial<Record<'suspended' | 'locked' | 'shadow_banned' | 'approved' | 'erased', boolean>>, by: string | null = null): Promise<boolean> {
    const ok = await this.store.setAccountState(userId, state, by);
    this.forgetCachedTokens(userId);
    return ok;
  }

  // ---- issue 12 (userbans12): restrictions with a reason and an expiry (restrictions-store.ts).

  /**
   * Which of an account's restriction flags hold at `now`: a flag whose restriction has expired
   * does not (the expiry sweep clears it soon after); `until`: when the soonest one in force ends.
   * Only a restricted account costs a query.
   */
  private async restrictionsInForce(row: { user_id: string; suspended: boolean; locked: boolean; shadow_banned: boolean }, now: number): Promise<Record<RestrictionKind, boolean> & { until?: number }> {
    const out: Record<RestrictionKind, boolean> & { until?: number } = { suspended: row.suspended, locked: row.locked, shadow_banned: row.shadow_banned };
    if (!row.suspended && !row.locked && !row.shadow_banned) return out;
    const ends = await this.store.restrictions.expiries(row.user_id);
    let unexplained = false;
    for (const kind of RESTRICTION_KINDS) {
      const end = ends[kind];
      if (!out[kind] || end === null) continue;
      if (end === undefined) unexplained = true;
      else if (end <= now) out[kind] = false;
      else out.until = Math.min(out.until ?? end, end);
    }
    if (unexplained) {
      // A flag without its restriction row: the expiry sweep may have just deleted the row (and
      // cleared the flag) after `row` was read. The flags as they are now decide.
      const fresh = await this.store.user(row.user_id);
      for (const kind of RESTRICTION_KINDS) if (out[kind] && ends[kind] === undefined) out[kind] = fresh?.[kind] ?? false;
    }
    return out;
  }

  /**
   * Puts a restriction on an account (replacing one of the same kind): the flag and its reason,
   * author and expiry in one transaction; every worker drops its cached tokens of the user, so it
   * applies at once. undefined: no such user.
   */
  async restrict(userId: string, kind: RestrictionKind, r: { reason: string | null; by: string; expiresTs: number | null; logoutDevices: boolean }): Promise<RestrictionRow | undefined> {
    const row = await this.store.restrictions.put({ user_id: userId, kind, reason: r.reason, created_by: r.by, created_ts: Date.now(), expires_ts: r.expiresTs, logged_out: r.logoutDevices });
    this.forgetCachedTokens(userId);
    // A ban: every session ends too (after the lock is stored: a crash between leaves the lock).
    if (row && r.logoutDevices) await this.deleteDevices(userId, 'all');
    return row;
  }

  /** Lifts a restriction; the row as it was (undefined: none of that kind). `expiredBy`: only one expired by then. */
  async liftRestriction(userId: string, kind: RestrictionKind, expiredBy?: number): Promise<RestrictionRow | undefined> {
    const row = await this.store.restrictions.remove(userId, kind, expiredBy);
    if (row) this.forgetCachedTokens(userId);
    return row;
  }

  /** A user's restrictions in force now. */
  async restrictionsOf(userId: string): Promise<RestrictionRow[]> {
    const now = Date.now();
    return (await this.store.restrictions.ofUser(userId)).filter((r) => r.expires_ts === null || r.expires_ts > now);
  }

  /** Every restriction in force, newest first (paged; by kind, by user). */
  listRestrictions(f: { kind?: RestrictionKind; userId?: string; from: number; limit: number }): Promise<{ rows: RestrictionRow[]; total: number }> {
    return this.store.restrictions.list({ ...f, now: Date.now() });
  }

  /** Restrictions expired by `now`, soonest first (the expiry sweep lifts them with liftRestriction). */
  expiredRestrictions(now: number, limit: number) {
    return this.store.restrictions.expired(now, limit);
  }

  /** issue 9: the account row (admin API). */
  account(userId: string) {
    return this.store.user(userId);
  }

  /** issue 9: an admin sets a password (reset; `logoutDevices`: every session ends). */
  async setPasswordAsAdmin(userId: string, newPassword: string, logoutDevices: boolean): Promise<void> {
    await this.changePassword(userId, newPassword, logoutDevices, undefined);
  }

  /** issue 9: an admin undoes a deactivation (Synapse's `deactivated: false`, which needs a password). */
  async reactivate(userId: string, password: string | null): Promise<void> {
    const h = password === null ? null : await this.hashPassword(password);
    await this.store.db.transaction(async (trx) => {
      await this.store.reactivate(trx, userId);
      if (h !== null) await this.store.setPasswordHash(trx, userId, h);
    });
    this.forgetCachedTokens(userId);
  }

  /**
   * issue 9: a session as `userId` for an admin (users.impersonate): a new device named after the
   * admin, its token expiring at `validUntilMs` (null: never).
   */
  async impersonate(userId: string, by: string, validUntilMs: number | null): Promise<string> {
    const access = newToken('syt');
    const deviceId = randomId(10);
    await this.store.db.transaction(async (trx) => {
      await this.store.upsertDevice(trx, userId, deviceId, `Admin login by ${by}`, null);
      await this.store.insertAccessToken(trx, hashToken(access), userId, deviceId, validUntilMs, null);
    });
    return access;
  }

  // issue 9: registration tokens (admin API, CLI).
  registrationTokens(valid?: boolean) { return this.store.registrationTokens(valid); }
  async registrationTokenRow(token: string) { return this.store.registrationToken(token); }
  insertRegistrationToken(t: { token: string; usesAllowed: number | null; expiryTime: number | null }) { return this.store.insertRegistrationToken(t); }
  updateRegistrationToken(token: string, change: { usesAllowed?: number | null; expiryTime?: number | null }) { return this.store.updateRegistrationToken(token, change); }
  deleteRegistrationToken(token: string) { return this.store.deleteRegistrationToken(token); }

  /** `erase` (issue 9, Synapse's deactivate with erase): the profile is emptied and the account marked erased. */
  async deactivate(userId: string, erase = false): Promise<void> {
    await this.deactivating.publish(userId);
    await this.store.db.transaction(async (trx) => {
      await this.store.setDeactivated(trx, userId);
      if (erase) await this.store.eraseProfile(trx, userId);
      await this.store.deleteDevices(trx, userId, 'all');
    });
    this.forgetCachedTokens(userId);
  }
}

// A valid argon2id hash of a random password, verified when the user does not exist.
const DUMMY_HASH = await argonHash(randomString(32), ARGON);
