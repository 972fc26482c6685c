// The admin guard (issue 9): who may call an admin endpoint, and as whom.
//
// How a route gets it. Routes are registered in a capability's routes.ts through the flat route
// list (homeserver/http/app.ts `Routes`), called from the composition root homeserver/main.ts:
//
//   // homeserver/<capability>/routes.ts
//   export function roomAdminRoutes(r: Routes, rooms: RoomAdmin): void {
//     r.raw('post', '/_synapse/admin/v1/rooms/:roomId/block', async (ctx) => {
//       const admin = await requirePermission(ctx, 'rooms.moderate');        // 401 / 403 first
//       const roomId = ctx.params.roomId!;
//       const b = validate(schema, optionalBody(ctx));                        // 400 names the field
//       return audited(ctx, admin, 'room.block', roomId, () => rooms.block(roomId, b.block), { block: b.block });
//     }, { auth: true });                                                     // the token is read by Routes
//   }
//   // homeserver/main.ts (after `routes` exists): roomAdminRoutes(routes, new RoomAdmin(...));
//
// `{ auth: true }` makes Routes authenticate the token (401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN);
// requirePermission then finds the requester's server role (admin/roles.ts) through ctx.state,
// where main.ts's `adminContext(...)` middleware put it, and answers 403 M_FORBIDDEN naming the
// permission it lacks. GET handlers record nothing; a state-changing handler records its action
// once, with `audited(...)` or `auditLog(ctx).record(...)` (admin/audit.ts). A refusal of a
// state-changing request (permission or rank) is recorded by the guard (outcome 'denied').
// Acting on a user: `await requireOutrank(ctx, admin, targetUserId)` (equal or higher rank → 403).
import type { Context, Middleware } from 'koa';
import { MatrixError } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import type { AuditLog } from './audit.ts';
import type { Permission } from './permissions.ts';
import { SYSTEM_LOCALPART } from '../rooms/bootstrap.ts';

export type { Permission } from './permissions.ts';
export { PERMISSIONS, isPermission } from './permissions.ts';

/** The acting admin, as requirePermission returns it. */
export interface AdminActor {
  userId: string;
  /** The actor's server role and its rank. */
  role: string;
  rank: number;
  permissions: Permission[];
  /** The client's address (behind trusted proxies). */
  ip: string | null;
  /** The requester it came from (device, token). */
  requester: Requester;
}

/** What the guard needs from the roles capability (admin/roles.ts implements it). */
export interface RoleLookup {
  /** The effective role of a user; undefined for an unknown user. */
  roleOf(userId: string): Promise<{ role: string; rank: number; permissions: Permission[] } | undefined>;
}

export interface AdminAccess {
  roles: RoleLookup;
  audit: AuditLog;
}

/** The middleware main.ts adds to the app: every request can reach the roles and the audit log. */
export function adminContext(access: AdminAccess): Middleware {
  return async (ctx, next) => {
    ctx.state.adminAccess = access;
    await next();
  };
}

function accessOf(ctx: Context): AdminAccess {
  const access = ctx.state.adminAccess as AdminAccess | undefined;
  if (!access) throw new Error('admin routes need adminContext() (homeserver/admin/guard.ts) among the app middlewares');
  return access;
}

/** The route pattern, for an audit entry of a refusal (`POST /_synapse/admin/v1/rooms/:roomId/block`). */
function routeName(ctx: Context): string {
  const pattern = (ctx as Context & { _matchedRoute?: string })._matchedRoute;
  return `${ctx.method} ${typeof pattern === 'string' ? pattern : ctx.path}`;
}

async function deny(ctx: Context, actor: string, ip: string | null, target: string | null, details: Record<string, unknown>, message: string): Promise<never> {
  if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
    await accessOf(ctx).audit.record({ actor, action: routeName(ctx), target, ip, outcome: 'denied', details }).catch(() => {});
  }
  throw new MatrixError(403, 'M_FORBIDDEN', message);
}

/**
 * The acting admin, when the requester's role holds `permission`: 401 M_MISSING_TOKEN without a
 * token (register the route with `{ auth: true }`), 403 M_FORBIDDEN naming the permission otherwise.
 */
export async function requirePermission(ctx: Context, permission: Permission): Promise<AdminActor> {
  const requester = ctx.state.requester as Requester | undefined;
  if (!requester) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
  const ip = ctx.ip || null;
  const role = await accessOf(ctx).roles.roleOf(requester.userId);
  if (!role?.permissions.includes(permission)) {
    return deny(ctx, requester.userId, ip, null, { missing: permission, role: role?.role ?? null },
      `You need the permission ${permission} (your server role is ${role?.role ?? 'user'})`);
  }
  return { userId: requester.userId, role: role.role, rank: role.rank, permissions: role.permissions, ip, requester };
}

/**
 * Nobody acts on a user of equal or higher rank (an owner may act on another owner): 403
 * M_FORBIDDEN otherwise. An unknown user passes (the route answers its 404).
 */
export async function requireOutrank(ctx: Context, admin: AdminActor, targetUserId: string): Promise<void> {
  if (targetUserId.startsWith(`@${SYSTEM_LOCALPART}:`)) {
    await deny(ctx, admin.userId, admin.ip, targetUserId, {}, "The server's own account (owner of its rooms) is not managed through the admin API");
  }
  if (targetUserId === admin.userId) return;
  const target = await accessOf(ctx).roles.roleOf(targetUserId);
  if (!target) return;
  const ok = (admin.role === 'owner' && target.role === 'owner') || admin.rank > target.rank;
  if (!ok) {
    await deny(ctx, admin.userId, admin.ip, targetUserId, { targetRole: target.role, targetRank: target.rank, rank: admin.rank },
      `${targetUserId} has the server role ${target.role} (rank ${target.rank}), not below yours (${admin.role}, rank ${admin.rank})`);
  }
}
