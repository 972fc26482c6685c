// User restrictions with a reason and an expiry (issue 12, userbans12): what the admin dashboard's
// Bans page lists beside the IP / CIDR bans. A restriction is one of the account states accounts/
// owns and enforces (accounts/enforcement.ts):
//
//   suspended       reads work; joining, inviting, sending, changing the profile: 403 M_USER_SUSPENDED
//   locked          every request but logout: 401 M_USER_LOCKED (soft_logout), no new login
//   shadow_banned   sends are answered, never seen by anyone else
//
// A "ban" is a lock that also logs out every session (`logout_devices: true` on `locked`). Synapse
// has no separate ban of a user: its operators lock (reversible, sessions kept) or deactivate (for
// good). A timed ban is what they lack: the lock with its sessions ended, so that when it expires
// the user logs in afresh. It is kept as an option of the lock, not a fourth state, so that one
// flag and one enforcement rule stay behind it (Synapse's endpoints and tools see `locked: true`).
//
// Expiry: an expired restriction stops applying at once — the requester's state is computed at
// read time (accounts/service.ts, cached with the token until the soonest expiry) — and the sweep
// below, on the worker holding the background jobs, lifts the expired rows soon after (one audit
// entry each, by `server`). Every change drops the user's cached tokens on every worker.
import type { Logger } from 'pino';
import type { AccountService } from '../accounts/service.ts';
import type { RestrictionKind, RestrictionRow } from '../accounts/restriction-kinds.ts';
import type { BackgroundJob } from '../coordination/jobs.ts';
import { MatrixError, notFound } from '../http/errors.ts';
import type { AuditLog } from './audit.ts';

export { RESTRICTION_KINDS, isRestrictionKind, type RestrictionKind } from '../accounts/restriction-kinds.ts';

/** How often the expired restrictions are lifted (one indexed probe when there are none). */
export const RESTRICTION_SWEEP_MS = 1_000;
/** At most this many lifted per sweep (a sweep after a mass expiry takes the rest the next time). */
const SWEEP_BATCH = 200;
/** The longest restriction with an expiry (longer: give none, it lasts until lifted). */
export const MAX_RESTRICTION_MS = 100 * 365 * 86_400_000;

/** The audit action of putting and of lifting each kind (the same as Synapse's endpoints record). */
export const RESTRICTION_ACTIONS: Record<RestrictionKind, { put: string; lift: string }> = {
  suspended: { put: 'user.suspend', lift: 'user.unsuspend' },
  locked: { put: 'user.lock', lift: 'user.unlock' },
  shadow_banned: { put: 'user.shadow_ban', lift: 'user.shadow_unban' },
};

/** A restriction as the API answers it. */
export function restrictionJson(r: RestrictionRow) {
  return {
    user_id: r.user_id,
    kind: r.kind,
    reason: r.reason,
    created_by: r.created_by,
    created_ts: r.created_ts === null ? null : Number(r.created_ts),
    expires_ts: r.expires_ts === null ? null : Number(r.expires_ts),
    logout_devices: r.logged_out,
  };
}

/** When a restriction asked for ends: 400 naming the field when it is not a time to come. */
export function restrictionEnd(b: { expires_ts?: number | null; duration_ms?: number | null }, now: number): number | null {
  if (b.expires_ts != null && b.duration_ms != null) throw new MatrixError(400, 'M_INVALID_PARAM', 'expires_ts: give expires_ts or duration_ms, not both');
  if (b.duration_ms != null) {
    if (b.duration_ms > MAX_RESTRICTION_MS) throw new MatrixError(400, 'M_INVALID_PARAM', `duration_ms: at most ${MAX_RESTRICTION_MS} (100 years); give none for a restriction until lifted`);
    return now + b.duration_ms;
  }
  if (b.expires_ts != null) {
    if (b.expires_ts <= now) throw new MatrixError(400, 'M_INVALID_PARAM', 'expires_ts: must be in the future');
    if (b.expires_ts > now + MAX_RESTRICTION_MS) throw new MatrixError(400, 'M_INVALID_PARAM', 'expires_ts: at most 100 years from now; give none for a restriction until lifted');
    return b.expires_ts;
  }
  return null;
}

export class RestrictionAdmin {
  constructor(private accounts: AccountService, private audit: AuditLog, private log: Logger) {}

  /** Puts (or replaces) a restriction; 404 for an unknown user. */
  async put(userId: string, kind: RestrictionKind, r: { reason: string | null; by: string; expiresTs: number | null; logoutDevices: boolean }): Promise<RestrictionRow> {
    if (r.logoutDevices && kind !== 'locked') throw new MatrixError(400, 'M_INVALID_PARAM', 'logout_devices: only with locked (a ban: the lock and every session ended)');
    const row = await this.accounts.restrict(userId, kind, r);
    if (!row) throw notFound('User not found');
    return row;
  }

  /** Lifts a restriction; 404 when the user has none of that kind in force. */
  async lift(userId: string, kind: RestrictionKind): Promise<RestrictionRow> {
    if (!(await this.accounts.account(userId))) throw notFound('User not found');
    const row = await this.accounts.liftRestriction(userId, kind);
    const now = Date.now();
    // An expired one not yet swept is gone all the same (above), but it was not in force.
    if (!row || (row.expires_ts !== null && row.expires_ts <= now)) throw notFound(`${userId} is not ${kind.replace('_', '-')}`);
    return row;
  }

  async ofUser(userId: string): Promise<RestrictionRow[]> {
    if (!(await this.accounts.account(userId))) throw notFound('User not found');
    return this.accounts.restrictionsOf(userId);
  }

  list(f: { kind?: RestrictionKind; userId?: string; from: number; limit: number }) {
    return this.accounts.listRestrictions(f);
  }

  /** Lifts what expired (one audit entry each); the number lifted. */
  async sweep(now = Date.now()): Promise<number> {
    let lifted = 0;
    for (const e of await this.accounts.expiredRestrictions(now, SWEEP_BATCH)) {
      const row = await this.accounts.liftRestriction(e.user_id, e.kind, now);
      if (!row) continue; // extended or lifted meanwhile
      lifted++;
      await this.audit.record({
        actor: 'server', action: RESTRICTION_ACTIONS[e.kind].lift, target: e.user_id, ip: null, outcome: 'ok',
        details: { expired: true, kind: e.kind, reason: row.reason, expires_ts: Number(e.expires_ts), set_by: row.created_by },
      });
    }
    if (lifted) this.log.info({ lifted }, 'expired user restrictions lifted');
    return lifted;
  }

  /** The expiry sweep, run on the worker holding the background jobs (coordination/jobs.ts). */
  expiryJob(): BackgroundJob {
    let timer: NodeJS.Timeout | undefined;
    let running = false;
    const tick = async () => {
      if (running) return;
      running = true;
      try { await this.sweep(); } catch (err) { this.log.warn({ err: (err as Error).message }, 'expired restrictions not lifted; the next sweep retries'); } finally { running = false; }
    };
    return {
      start: () => { void tick(); timer = setInterval(() => void tick(), RESTRICTION_SWEEP_MS); timer.unref(); },
      stop: () => { if (timer) clearInterval(timer); timer = undefined; },
    };
  }
}
