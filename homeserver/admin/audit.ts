// The audit log (issue 9): one entry per admin action — who, what, on whom, when, from which
// address, with which outcome. Read and filtered through GET /_super/admin/v1/audit.
//
// A route records its action once it is done (or failed), in the same handler:
//
//   const admin = await requirePermission(ctx, 'users.ban');
//   await audited(ctx, admin, 'user.suspend', userId, () => users.suspend(userId, true), { suspend: true });
//
// or by hand: `await auditLog(ctx).record({ actor: admin.userId, action: 'user.suspend', target: userId,
// ip: admin.ip, outcome: 'ok', details: {...} })`. A refusal by requirePermission / requireOutrank
// (guard.ts) of a state-changing request is recorded by the guard itself (outcome 'denied'), so the
// route must not record it again.
import type { Context } from 'koa';
import { MatrixError } from '../http/errors.ts';
import type { AuditFilter, AuditRow, AuditStore } from './audit-store.ts';

export type AuditOutcome = 'ok' | 'denied' | 'failed';

export interface AuditRecord {
  /** The acting user (a CLI action: `cli:<os user>`). */
  actor: string;
  /** What was done, `noun.verb`: `user.deactivate`, `role.assign`, `room.delete`… */
  action: string;
  /** On what: a user id, room id, role name, token… (null: the server itself). */
  target: string | null;
  /** The client's address (ctx.ip, behind trusted proxies), null from the CLI. */
  ip: string | null;
  outcome: AuditOutcome;
  /** The request's parameters worth keeping (never a password or token). */
  details?: Record<string, unknown>;
}

export class AuditLog {
  constructor(private store: AuditStore) {}

  /** Writes one entry (its own statement: an entry survives a failed action). */
  async record(e: AuditRecord): Promise<void> {
    await this.store.insert({ ...e, details: e.details ?? {}, ts: Date.now() });
  }

  list(filter: AuditFilter): Promise<{ entries: AuditRow[]; next: number | null }> {
    return this.store.list(filter);
  }
}

/** The audit log of this server (set on ctx.state by guard.ts's adminContext). */
export function auditLog(ctx: Context): AuditLog {
  const access = ctx.state.adminAccess as { audit: AuditLog } | undefined;
  if (!access) throw new Error('admin routes need adminContext() (homeserver/admin/guard.ts) among the app middlewares');
  return access.audit;
}

/**
 * Runs an admin action and records it once: 'ok' when it returns; when it throws, 'denied' for a
 * 403 and 'failed' otherwise (with the errcode), and the error goes on to the client.
 */
export async function audited<T>(
  ctx: Context,
  actor: { userId: string; ip: string | null },
  action: string,
  target: string | null,
  run: () => Promise<T> | T,
  details: Record<string, unknown> = {},
): Promise<T> {
  try {
    const result = await run();
    await auditLog(ctx).record({ actor: actor.userId, action, target, ip: actor.ip, outcome: 'ok', details });
    return result;
  } catch (err) {
    const errcode = err instanceof MatrixError ? err.errcode : 'M_UNKNOWN';
    const outcome: AuditOutcome = err instanceof MatrixError && err.status === 403 ? 'denied' : 'failed';
    await auditLog(ctx).record({ actor: actor.userId, action, target, ip: actor.ip, outcome, details: { ...details, errcode } }).catch(() => {});
    throw err;
  }
}
