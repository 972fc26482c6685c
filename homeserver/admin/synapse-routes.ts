// Synapse-compatible admin API, users and registration tokens (issue 9), as Synapse documents it:
// same paths, shapes, paging (from / limit / next_token), ordering and errors. Every endpoint
// names its permission (guard.ts); every change is audited once (audit.ts).
//
// GET    /_synapse/admin/v1/server_version                        the server's name and version
// GET    /_synapse/admin/v2/users                                 list (user_id, name, guests, admins, deactivated, locked, order_by, dir, from, limit)
// GET    /_synapse/admin/v2/users/{userId}                        details
// PUT    /_synapse/admin/v2/users/{userId}                        create (201) or modify (200): password, displayname, avatar_url, admin, deactivated, locked
// POST   /_synapse/admin/v1/deactivate/{userId}                   deactivate ({erase})
// POST   /_synapse/admin/v1/reset_password/{userId}               set a password ({new_password, logout_devices})
// GET    /_synapse/admin/v1/whois/{userId}                        sessions, addresses, last seen
// GET    /_synapse/admin/v1/users/{userId}/joined_rooms           joined rooms
// GET    /_synapse/admin/v2/users/{userId}/devices                devices
// GET|DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId} one device; delete it
// POST   /_synapse/admin/v2/users/{userId}/delete_devices         delete several
// POST   /_synapse/admin/v1/users/{userId}/login                  a token for the user (users.impersonate)
// POST|DELETE /_synapse/admin/v1/users/{userId}/shadow_ban        shadow-ban, lift it
// PUT    /_synapse/admin/v1/suspend/{userId}                      suspend / unsuspend ({suspend})
// GET|PUT /_synapse/admin/v1/users/{userId}/admin                 the admin flag (a role)
// GET    /_synapse/admin/v1/username_available                    is a name free
// GET|PUT /_matrix/client/v1/admin/lock/{userId}                  spec v1.18: lock / unlock
// GET|PUT /_matrix/client/v1/admin/suspend/{userId}               spec v1.18: suspend / unsuspend
// GET    /_synapse/admin/v1/registration_tokens                   tokens (valid=true|false)
// POST   /_synapse/admin/v1/registration_tokens/new               create one
// GET|PUT|DELETE /_synapse/admin/v1/registration_tokens/{token}   read, change, delete one
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Context } from 'koa';
import type { Routes } from '../http/app.ts';
import { optionalBody, validate } from '../http/body.ts';
import { MatrixError, notFound } from '../http/errors.ts';
import { audited } from './audit.ts';
import { requireOutrank, requirePermission } from './guard.ts';
import { queryBool, queryEnum, queryInt, queryString } from './query.ts';
import { USER_ORDERS } from './users-store.ts';
import { userJson, type UserAdmin } from './users.ts';

export { SERVER_VERSION } from '../server/version.ts';
import { SERVER_VERSION } from '../server/version.ts';

const modifySchema = z.object({
  password: z.string().max(512).optional(),
  logout_devices: z.boolean().optional(),
  displayname: z.string().max(256).nullable().optional(),
  avatar_url: z.string().max(1024).nullable().optional(),
  threepids: z.array(z.object({ medium: z.string(), address: z.string() })).max(0, 'adding third-party identifiers here is not supported').optional(),
  external_ids: z.array(z.unknown()).max(0, 'external ids are not supported').optional(),
  admin: z.boolean().optional(),
  deactivated: z.boolean().optional(),
  locked: z.boolean().optional(),
  suspended: z.boolean().optional(),
  user_type: z.null().optional(),
  role: z.string().max(64).optional(),
}).strict();

const TOKEN_CHARS = /^[A-Za-z0-9._~-]{1,64}$/;

function tokenJson(t: { token: string; uses_allowed: number | null; pending: number; completed: number; expiry_time: number | null }) {
  return { token: t.token, uses_allowed: t.uses_allowed, pending: Number(t.pending), completed: Number(t.completed), expiry_time: t.expiry_time === null ? null : Number(t.expiry_time) };
}

/** A random registration token of `length` characters from Synapse's alphabet. */
export function randomRegistrationToken(length = 16): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-';
  return [...randomBytes(length)].map((b) => alphabet[b % alphabet.length]).join('');
}

export function synapseAdminRoutes(r: Routes, users: UserAdmin): void {
  const P = '/_synapse/admin';
  const uid = (ctx: Context & { params: Record<string, string> }) => users.localUserId(ctx.params.userId);

  r.raw('get', `${P}/v1/server_version`, () => ({ server_version: `super-server ${SERVER_VERSION}` }));

  r.raw('get', `${P}/v2/users`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const from = queryInt(ctx, 'from', 0);
    const limit = queryInt(ctx, 'limit', 100, 1000);
    const { users: rows, total } = await users.list({
      userId: queryString(ctx, 'user_id'),
      name: queryString(ctx, 'name'),
      guests: queryBool(ctx, 'guests', true),
      deactivated: queryBool(ctx, 'deactivated', false),
      locked: queryBool(ctx, 'locked', false),
      admins: queryBool(ctx, 'admins', undefined),
      orderBy: queryEnum(ctx, 'order_by', USER_ORDERS, 'name'),
      dir: queryEnum(ctx, 'dir', ['f', 'b'] as const, 'f'),
      from, limit,
    });
    return { users: rows.map(userJson), total, ...(from + rows.length < total ? { next_token: String(from + rows.length) } : {}) };
  }, { auth: true });

  r.raw('get', `${P}/v2/users/:userId`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return users.details(uid(ctx));
  }, { auth: true });

  r.raw('put', `${P}/v2/users/:userId`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.write');
    const userId = uid(ctx);
    const b = validate(modifySchema, optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    const { password: _secret, ...logged } = b;
    const created = await audited(ctx, admin, 'user.modify', userId, () => users.createOrModify(admin, userId, b), { ...logged, password_changed: b.password !== undefined });
    ctx.status = created ? 201 : 200;
    return users.details(userId);
  }, { auth: true });

  r.raw('post', `${P}/v1/deactivate/:userId`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.ban');
    const userId = uid(ctx);
    const b = validate(z.object({ erase: z.boolean().optional() }), optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    await audited(ctx, admin, 'user.deactivate', userId, () => users.deactivate(userId, b.erase ?? false), { erase: b.erase ?? false });
    return { id_server_unbind_result: 'success' };
  }, { auth: true });

  r.raw('post', `${P}/v1/reset_password/:userId`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.write');
    const userId = uid(ctx);
    const b = validate(z.object({ new_password: z.string().max(512), logout_devices: z.boolean().optional() }), optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    await audited(ctx, admin, 'user.reset_password', userId, () => users.resetPassword(userId, b.new_password, b.logout_devices ?? true), { logout_devices: b.logout_devices ?? true });
    return {};
  }, { auth: true });

  r.raw('get', `${P}/v1/whois/:userId`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return users.whois(uid(ctx));
  }, { auth: true });

  r.raw('get', `${P}/v1/users/:userId/joined_rooms`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const rooms = await users.joinedRooms(uid(ctx));
    return { joined_rooms: rooms, total: rooms.length };
  }, { auth: true });

  r.raw('get', `${P}/v2/users/:userId/devices`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const devices = await users.devices(uid(ctx));
    return { devices, total: devices.length };
  }, { auth: true });

  r.raw('get', `${P}/v2/users/:userId/devices/:deviceId`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const d = (await users.devices(uid(ctx))).find((x) => x.device_id === ctx.params.deviceId);
    if (!d) throw notFound('Device not found');
    return d;
  }, { auth: true });

  r.raw('delete', `${P}/v2/users/:userId/devices/:deviceId`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.write');
    const userId = uid(ctx);
    await requireOutrank(ctx, admin, userId);
    const deviceId = ctx.params.deviceId!;
    await audited(ctx, admin, 'user.delete_devices', userId, () => users.deleteDevices(userId, [deviceId]), { devices: [deviceId] });
    return {};
  }, { auth: true });

  r.raw('post', `${P}/v2/users/:userId/delete_devices`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.write');
    const userId = uid(ctx);
    const b = validate(z.object({ devices: z.array(z.string().max(255)).max(1000) }), optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    await audited(ctx, admin, 'user.delete_devices', userId, () => users.deleteDevices(userId, b.devices), { devices: b.devices });
    return {};
  }, { auth: true });

  r.raw('post', `${P}/v1/users/:userId/login`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.impersonate');
    const userId = uid(ctx);
    const b = validate(z.object({ valid_until_ms: z.number().int().positive().nullable().optional() }), optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    const token = await audited(ctx, admin, 'user.login_as', userId, () => users.loginAs(userId, admin.userId, b.valid_until_ms ?? null), { valid_until_ms: b.valid_until_ms ?? null });
    return { access_token: token };
  }, { auth: true });

  for (const method of ['post', 'delete'] as const) {
    r.raw(method, `${P}/v1/users/:userId/shadow_ban`, async (ctx) => {
      const admin = await requirePermission(ctx, 'users.ban');
      const userId = uid(ctx);
      await requireOutrank(ctx, admin, userId);
      const on = method === 'post';
      await audited(ctx, admin, on ? 'user.shadow_ban' : 'user.shadow_unban', userId, () => users.setState(userId, { shadow_banned: on }, admin.userId));
      return {};
    }, { auth: true });
  }

  r.raw('put', `${P}/v1/suspend/:userId`, async (ctx) => {
    const admin = await requirePermission(ctx, 'users.ban');
    const userId = uid(ctx);
    const b = validate(z.object({ suspend: z.boolean() }), optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    await audited(ctx, admin, b.suspend ? 'user.suspend' : 'user.unsuspend', userId, () => users.setState(userId, { suspended: b.suspend }, admin.userId));
    return { [`user_${userId}_suspended`]: b.suspend };
  }, { auth: true });

  // The spec's own admin endpoints (v1.18): lock and suspend.
  for (const [what, column] of [['lock', 'locked'], ['suspend', 'suspended']] as const) {
    r.raw('get', `/_matrix/client/v1/admin/${what}/:userId`, async (ctx) => {
      await requirePermission(ctx, 'users.read');
      const u = await users.user(uid(ctx));
      return { [column]: u[column] };
    }, { auth: true });
    r.raw('put', `/_matrix/client/v1/admin/${what}/:userId`, async (ctx) => {
      const admin = await requirePermission(ctx, 'users.ban');
      const userId = uid(ctx);
      const b = validate(z.object({ [column]: z.boolean() }), optionalBody(ctx)) as Record<string, boolean>;
      const on = b[column]!;
      await requireOutrank(ctx, admin, userId);
      await audited(ctx, admin, `user.${on ? what : `un${what}`}`, userId, () => users.setState(userId, { [column]: on }, admin.userId));
      return { [column]: on };
    }, { auth: true });
  }

  r.raw('get', `${P}/v1/users/:userId/admin`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return { admin: (await users.user(uid(ctx))).is_admin };
  }, { auth: true });

  r.raw('put', `${P}/v1/users/:userId/admin`, async (ctx) => {
    const admin = await requirePermission(ctx, 'roles.assign');
    const userId = uid(ctx);
    const b = validate(z.object({ admin: z.boolean() }), optionalBody(ctx));
    await requireOutrank(ctx, admin, userId);
    await users.user(userId);
    const role = b.admin ? 'admin' : 'user';
    await audited(ctx, admin, 'role.assign', userId, () => users.assignRole(admin, userId, role), { role, via: 'admin flag' });
    return {};
  }, { auth: true });

  r.raw('get', `${P}/v1/username_available`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const name = queryString(ctx, 'username');
    if (!name) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: username');
    await users.accounts.checkUsername(name);
    return { available: true };
  }, { auth: true });

  // ---- registration tokens
  const T = `${P}/v1/registration_tokens`;
  r.raw('get', T, async (ctx) => {
    await requirePermission(ctx, 'registration.manage');
    return { registration_tokens: (await users.accounts.registrationTokens(queryBool(ctx, 'valid', undefined))).map(tokenJson) };
  }, { auth: true });

  r.raw('post', `${T}/new`, async (ctx) => {
    const admin = await requirePermission(ctx, 'registration.manage');
    const b = validate(z.object({
      token: z.string().regex(TOKEN_CHARS, 'at most 64 characters from A-Z, a-z, 0-9, . _ ~ -').optional(),
      uses_allowed: z.number().int().min(0).nullable().optional(),
      expiry_time: z.number().int().nullable().optional(),
      length: z.number().int().min(1).max(64).optional(),
    }).strict(), optionalBody(ctx));
    if (b.token !== undefined && b.length !== undefined) throw new MatrixError(400, 'M_INVALID_PARAM', 'length: give either token or length, not both');
    if (b.expiry_time != null && b.expiry_time < Date.now()) throw new MatrixError(400, 'M_INVALID_PARAM', 'expiry_time: must not be in the past');
    const token = b.token ?? randomRegistrationToken(b.length ?? 16);
    await audited(ctx, admin, 'registration_token.create', token, async () => {
      if (!(await users.accounts.insertRegistrationToken({ token, usesAllowed: b.uses_allowed ?? null, expiryTime: b.expiry_time ?? null }))) {
        throw new MatrixError(400, 'M_INVALID_PARAM', `Token already in use: ${token}`);
      }
    }, { uses_allowed: b.uses_allowed ?? null, expiry_time: b.expiry_time ?? null });
    return tokenJson((await users.accounts.registrationTokenRow(token))!);
  }, { auth: true });

  r.raw('get', `${T}/:token`, async (ctx) => {
    await requirePermission(ctx, 'registration.manage');
    const t = await users.accounts.registrationTokenRow(ctx.params.token!);
    if (!t) throw notFound(`No such registration token: ${ctx.params.token}`);
    return tokenJson(t);
  }, { auth: true });

  r.raw('put', `${T}/:token`, async (ctx) => {
    const admin = await requirePermission(ctx, 'registration.manage');
    const b = validate(z.object({
      uses_allowed: z.number().int().min(0).nullable().optional(),
      expiry_time: z.number().int().nullable().optional(),
    }).strict(), optionalBody(ctx));
    if (b.expiry_time != null && b.expiry_time < Date.now()) throw new MatrixError(400, 'M_INVALID_PARAM', 'expiry_time: must not be in the past');
    const token = ctx.params.token!;
    const t = await audited(ctx, admin, 'registration_token.update', token, async () => {
      const row = await users.accounts.updateRegistrationToken(token, { usesAllowed: b.uses_allowed, expiryTime: b.expiry_time });
      if (!row) throw notFound(`No such registration token: ${token}`);
      return row;
    }, b);
    return tokenJson(t);
  }, { auth: true });

  r.raw('delete', `${T}/:token`, async (ctx) => {
    const admin = await requirePermission(ctx, 'registration.manage');
    const token = ctx.params.token!;
    await audited(ctx, admin, 'registration_token.delete', token, async () => {
      if (!(await users.accounts.deleteRegistrationToken(token))) throw notFound(`No such registration token: ${token}`);
    });
    return {};
  }, { auth: true });
}
