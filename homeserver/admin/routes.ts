// Our admin API (issue 9), under /_super/admin/v1/, described by GET /_super/admin/v1/openapi.json
// (openapi.ts): what the Svelte admin dashboard is built on. Permission per endpoint (guard.ts);
// one audit entry per change (audit.ts). Lists are paged: `from` (opaque `next_token` of the
// previous page) and `limit`.
//
// GET    /openapi.json                               this API, described (no token needed)
// GET    /me                                         the caller's role, rank and permissions
// GET    /permissions                                every permission there is
// GET    /roles                                      roles (built-in and defined)
// POST   /roles                                      define a role {name, rank, permissions, description}
// PUT    /roles/{name}                               change a defined role
// DELETE /roles/{name}                               delete a defined role nobody holds
// GET    /roles/assignments ?role                    who holds which role
// GET    /users/{userId}/role                        a user's role
// PUT    /users/{userId}/role                        give a user a role {role}
// GET    /audit ?actor&action&target&outcome&since&until&from&limit   the audit log, newest first
// GET    /online_users ?within_ms&limit              users seen recently
// GET    /registration/queue ?from&limit             accounts waiting for approval (REGISTRATION_APPROVAL=on)
// POST   /registration/queue/{userId}/approve        let the account in
// POST   /registration/queue/{userId}/reject         deactivate it
// POST   /commands/{command}                         the server commands: ping, verify_user, set_user,
//                                                    create_user, change_permission_level,
//                                                    show_online_users, kill_server
import { z } from 'zod';
import type { Context } from 'koa';
import type { Routes } from '../http/app.ts';
import { optionalBody, validate } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import { audited, auditLog } from './audit.ts';
import { requireOutrank, requirePermission, type AdminActor } from './guard.ts';
import { PERMISSIONS } from './permissions.ts';
import { queryInt, queryString } from './query.ts';
import { adminOpenApi } from './openapi.ts';
import { SERVER_VERSION } from './synapse-routes.ts';
import { userJson, type UserAdmin } from './users.ts';

export const SUPER_ADMIN = '/_super/admin/v1';

const roleSchema = z.object({
  name: z.string().max(64),
  rank: z.number().int().min(0).max(1000),
  permissions: z.array(z.string().max(64)).max(64),
  description: z.string().max(500).optional(),
}).strict();

const setUserSchema = z.object({
  user_id: z.string().max(255),
  displayname: z.string().max(256).nullable().optional(),
  avatar_url: z.string().max(1024).nullable().optional(),
  password: z.string().max(512).optional(),
  logout_devices: z.boolean().optional(),
  locked: z.boolean().optional(),
  suspended: z.boolean().optional(),
  shadow_banned: z.boolean().optional(),
  deactivated: z.boolean().optional(),
}).strict();

const createUserSchema = z.object({
  username: z.string().max(255),
  password: z.string().max(512),
  displayname: z.string().max(256).optional(),
  role: z.string().max(64).optional(),
}).strict();

export interface AdminRouteDeps {
  users: UserAdmin;
  /** After a role change: the server's rooms follow (server-rooms.ts). */
  rolesChanged(userIds: string[]): Promise<void>;
  /** Graceful shutdown: stop accepting, drain, flush, exit (main.ts's shutdown path). */
  requestShutdown(): void;
  onlineWithinMs: number;
}

export function superAdminRoutes(r: Routes, deps: AdminRouteDeps): void {
  const { users } = deps;
  const roles = users.roles;
  const uid = (raw: string | undefined) => users.localUserId(raw);
  const A = SUPER_ADMIN;

  r.raw('get', `${A}/openapi.json`, () => adminOpenApi());

  r.raw('get', `${A}/me`, async (ctx) => {
    const me = requester(ctx);
    const role = await roles.roleOf(me.userId);
    if (!role) throw notFound('User not found');
    return { user_id: me.userId, ...role };
  }, { auth: true });

  r.raw('get', `${A}/permissions`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return { permissions: [...PERMISSIONS] };
  }, { auth: true });

  // ---- roles
  r.raw('get', `${A}/roles`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return { roles: await roles.roles() };
  }, { auth: true });

  r.raw('post', `${A}/roles`, async (ctx) => {
    const admin = await requirePermission(ctx, 'roles.assign');
    const b = validate(roleSchema, optionalBody(ctx));
    ctx.status = 201;
    return audited(ctx, admin, 'role.define', b.name, () => roles.define(admin, b.name, b.rank, b.permissions, b.description ?? ''), { rank: b.rank, permissions: b.permissions });
  }, { auth: true });

  r.raw('put', `${A}/roles/:name`, async (ctx) => {
    const admin = await requirePermission(ctx, 'roles.assign');
    const b = validate(roleSchema.omit({ name: true }), optionalBody(ctx));
    const name = ctx.params.name!;
    const role = await audited(ctx, admin, 'role.update', name, () => roles.update(admin, name, b.rank, b.permissions, b.description ?? ''), { rank: b.rank, permissions: b.permissions });
    await deps.rolesChanged((await roles.assignments(name)).map((a) => a.user_id));
    return role;
  }, { auth: true });

  r.raw('delete', `${A}/roles/:name`, async (ctx) => {
    const admin = await requirePermission(ctx, 'roles.assign');
    const name = ctx.params.name!;
    await audited(ctx, admin, 'role.delete', name, () => roles.remove(admin, name));
    return {};
  }, { auth: true });

  r.raw('get', `${A}/roles/assignments`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return { assignments: await roles.assignments(queryString(ctx, 'role')) };
  }, { auth: true });

  r.raw('get', `${A}/users/:userId/role`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const userId = uid(ctx.params.userId);
    const role = await roles.roleOf(userId);
    if (!role) throw notFound('User not found');
    return { user_id: userId, ...role };
  }, { auth: true });

  const assignRole = async (ctx: Context, admin: AdminActor, userId: string, role: string, action: string) => {
    await requireOutrank(ctx, admin, userId);
    const change = await audited(ctx, admin, action, userId, () => users.assignRole(admin, userId, role), { role });
    return change;
  };

  r.raw('put', `${A}/users/:userId/role`, async (ctx) => {
    const admin = await requirePermission(ctx, 'roles.assign');
    const userId = uid(ctx.params.userId);
    const b = validate(z.object({ role: z.string().max(64) }).strict(), optionalBody(ctx));
    const change = await assignRole(ctx, admin, userId, b.role, 'role.assign');
    return { user_id: userId, ...change };
  }, { auth: true });

  // ---- audit log
  r.raw('get', `${A}/audit`, async (ctx) => {
    await requirePermission(ctx, 'audit.read');
    const from = queryString(ctx, 'from');
    if (from !== undefined && !/^\d{1,15}$/.test(from)) throw new MatrixError(400, 'M_INVALID_PARAM', 'from: not a token of this list');
    const outcome = queryString(ctx, 'outcome');
    if (outcome !== undefined && !['ok', 'denied', 'failed'].includes(outcome)) throw new MatrixError(400, 'M_INVALID_PARAM', 'outcome: one of ok, denied, failed');
    const since = ctx.query.since === undefined ? undefined : queryInt(ctx, 'since', 0);
    const until = ctx.query.until === undefined ? undefined : queryInt(ctx, 'until', 0);
    const { entries, next } = await auditLog(ctx).list({
      actor: queryString(ctx, 'actor'), action: queryString(ctx, 'action'), target: queryString(ctx, 'target'), outcome,
      since, until, from: from === undefined ? undefined : Number(from), limit: queryInt(ctx, 'limit', 100, 1000) || 100,
    });
    return { entries, ...(next !== null ? { next_token: String(next) } : {}) };
  }, { auth: true });

  // ---- online users
  const online = async (withinMs: number, limit: number) => {
    const rows = await users.online(withinMs, limit);
    return { users: rows.map((u) => ({ user_id: u.user_id, last_seen_ts: Number(u.last_seen_ts), last_seen_ip: u.last_seen_ip, devices: u.devices })), total: rows.length, within_ms: withinMs };
  };
  r.raw('get', `${A}/online_users`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return online(queryInt(ctx, 'within_ms', deps.onlineWithinMs, 30 * 86_400_000), queryInt(ctx, 'limit', 100, 1000));
  }, { auth: true });

  // ---- registration approval queue
  r.raw('get', `${A}/registration/queue`, async (ctx) => {
    await requirePermission(ctx, 'registration.manage');
    const from = queryInt(ctx, 'from', 0);
    const { users: rows, total } = await users.list({
      awaitingApproval: true, guests: true, deactivated: false, locked: true, orderBy: 'creation_ts', dir: 'f', from, limit: queryInt(ctx, 'limit', 100, 1000),
    });
    return { users: rows.map(userJson), total, ...(from + rows.length < total ? { next_token: String(from + rows.length) } : {}) };
  }, { auth: true });

  const approve = async (ctx: Context, admin: AdminActor, userId: string, action: string) => {
    await audited(ctx, admin, action, userId, async () => {
      const u = await users.user(userId);
      if (u.approved) throw new MatrixError(400, 'M_INVALID_PARAM', `${userId} is not waiting for approval`);
      await users.setState(userId, { approved: true });
    });
  };
  r.raw('post', `${A}/registration/queue/:userId/approve`, async (ctx) => {
    const admin = await requirePermission(ctx, 'registration.manage');
    await approve(ctx, admin, uid(ctx.params.userId), 'registration.approve');
    return {};
  }, { auth: true });
  r.raw('post', `${A}/registration/queue/:userId/reject`, async (ctx) => {
    const admin = await requirePermission(ctx, 'registration.manage');
    const userId = uid(ctx.params.userId);
    await audited(ctx, admin, 'registration.reject', userId, async () => {
      const u = await users.user(userId);
      if (u.approved) throw new MatrixError(400, 'M_INVALID_PARAM', `${userId} is not waiting for approval`);
      await users.deactivate(userId, true);
    });
    return {};
  }, { auth: true });

  // ---- the server commands (the original design's), one endpoint each
  // One route per command (mod9 adds POST /commands/message_user the same way); an unknown command
  // is the app's 404 M_UNRECOGNIZED.
  const commands: Record<string, (ctx: Context) => Promise<unknown>> = {
    ping: async (ctx) => {
      const admin = await requirePermission(ctx, 'users.read');
      return { pong: true, ts: Date.now(), user_id: admin.userId, server_version: `super-server ${SERVER_VERSION}` };
    },
    verify_user: async (ctx) => {
      // Vouches for a waiting account: the same as approving it in the registration queue.
      const admin = await requirePermission(ctx, 'registration.manage');
      const b = validate(z.object({ user_id: z.string().max(255) }).strict(), optionalBody(ctx));
      await approve(ctx, admin, uid(b.user_id), 'user.verify');
      return { user_id: b.user_id, approved: true };
    },
    set_user: async (ctx) => {
      const b = validate(setUserSchema, optionalBody(ctx));
      const banning = b.locked !== undefined || b.suspended !== undefined || b.shadow_banned !== undefined || b.deactivated === true;
      const writing = b.displayname !== undefined || b.avatar_url !== undefined || b.password !== undefined || b.deactivated === false;
      let admin = await requirePermission(ctx, writing || !banning ? 'users.write' : 'users.ban');
      if (writing && banning) admin = await requirePermission(ctx, 'users.ban');
      const userId = uid(b.user_id);
      await requireOutrank(ctx, admin, userId);
      const { password: _secret, user_id: _u, ...logged } = b;
      await audited(ctx, admin, 'user.set', userId, async () => {
        await users.user(userId);
        await users.createOrModify(admin, userId, { displayname: b.displayname, avatar_url: b.avatar_url, password: b.password, logout_devices: b.logout_devices, locked: b.locked, suspended: b.suspended, deactivated: b.deactivated });
        if (b.shadow_banned !== undefined) await users.setState(userId, { shadow_banned: b.shadow_banned }, admin.userId);
      }, { ...logged, password_changed: b.password !== undefined });
      return users.details(userId);
    },
    create_user: async (ctx) => {
      const admin = await requirePermission(ctx, 'users.write');
      const b = validate(createUserSchema, optionalBody(ctx));
      const localpart = b.username.toLowerCase();
      const userId = `@${localpart}:${users.serverName}`;
      if (b.role !== undefined && b.role !== 'user' && !admin.permissions.includes('roles.assign')) throw forbidden('You need the permission roles.assign to give a role');
      await audited(ctx, admin, 'user.create', userId, async () => {
        await users.accounts.checkUsername(localpart);
        users.accounts.checkPasswordShape(b.password);
        users.accounts.checkPasswordPolicy(b.password, localpart);
        await users.createOrModify(admin, userId, { password: b.password, displayname: b.displayname, role: b.role });
      }, { role: b.role ?? 'user' });
      ctx.status = 201;
      return users.details(userId);
    },
    change_permission_level: async (ctx) => {
      const admin = await requirePermission(ctx, 'roles.assign');
      const b = validate(z.object({ user_id: z.string().max(255), role: z.string().max(64) }).strict(), optionalBody(ctx));
      const userId = uid(b.user_id);
      return { user_id: userId, ...(await assignRole(ctx, admin, userId, b.role, 'role.assign')) };
    },
    show_online_users: async (ctx) => {
      await requirePermission(ctx, 'users.read');
      const b = validate(z.object({ within_ms: z.number().int().min(1).max(30 * 86_400_000).optional(), limit: z.number().int().min(1).max(1000).optional() }).strict(), optionalBody(ctx));
      return online(b.within_ms ?? deps.onlineWithinMs, b.limit ?? 100);
    },
    kill_server: async (ctx) => {
      const admin = await requirePermission(ctx, 'server.shutdown');
      const b = validate(z.object({ reason: z.string().max(500).optional() }).strict(), optionalBody(ctx));
      await auditLog(ctx).record({ actor: admin.userId, action: 'server.shutdown', target: null, ip: admin.ip, outcome: 'ok', details: { reason: b.reason ?? null } });
      // Answered first: the drain then waits for this very response like any other in flight.
      setImmediate(() => deps.requestShutdown());
      ctx.status = 202;
      return { shutting_down: true };
    },
  };
  for (const [name, run] of Object.entries(commands)) r.raw('post', `${A}/commands/${name}`, (ctx) => run(ctx), { auth: true });
}
