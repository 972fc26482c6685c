// User restrictions with a reason and an expiry (issue 12, userbans12; restrictions.ts):
//
// GET    /_super/admin/v1/restrictions ?kind&user_id&from&limit     in force now, newest first (users.read)
// GET    /_super/admin/v1/users/{userId}/restrictions               a user's, in force now (users.read)
// PUT    /_super/admin/v1/users/{userId}/restrictions/{kind}        put one: {reason?, expires_ts? | duration_ms?, logout_devices?} (users.ban)
// DELETE /_super/admin/v1/users/{userId}/restrictions/{kind}        lift one (users.ban)
//
// kind: suspended | locked | shadow_banned. A change needs users.ban and a target of lower rank
// (guard.ts; never yourself), and writes one audit entry — the same actions Synapse's endpoints
// record (user.suspend, user.unlock…), with the reason and the expiry. Synapse's endpoints
// (shadow_ban, suspend, lock, PUT v2 users `locked` / `suspended`) keep working; what they set is
// listed here too, without reason or expiry.
import { z } from 'zod';
import type { Context } from 'koa';
import type { Routes } from '../http/app.ts';
import { optionalBody, validate } from '../http/body.ts';
import { MatrixError, forbidden } from '../http/errors.ts';
import { audited } from './audit.ts';
import { requireOutrank, requirePermission } from './guard.ts';
import { describeAdminOperations } from './openapi.ts';
import { queryInt, queryString } from './query.ts';
import { SUPER_ADMIN } from './routes.ts';
import { MAX_RESTRICTION_MS, RESTRICTION_ACTIONS, RESTRICTION_KINDS, isRestrictionKind, restrictionEnd, restrictionJson, type RestrictionAdmin, type RestrictionKind } from './restrictions.ts';
import type { UserAdmin } from './users.ts';

const putSchema = z.object({
  reason: z.string().max(1000).nullable().optional(),
  expires_ts: z.number().int().positive().nullable().optional(),
  duration_ms: z.number().int().positive().nullable().optional(),
  logout_devices: z.boolean().optional(),
}).strict();

function kindOf(raw: string | undefined, param = 'kind'): RestrictionKind {
  if (raw === undefined || !isRestrictionKind(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `${param}: one of ${RESTRICTION_KINDS.join(', ')}`);
  return raw;
}

export function restrictionRoutes(r: Routes, users: UserAdmin, restrictions: RestrictionAdmin): void {
  const A = SUPER_ADMIN;
  describeRestrictionOperations();

  r.raw('get', `${A}/restrictions`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const kind = queryString(ctx, 'kind');
    const userId = queryString(ctx, 'user_id');
    const from = queryInt(ctx, 'from', 0);
    const { rows, total } = await restrictions.list({
      kind: kind === undefined ? undefined : kindOf(kind), userId: userId === undefined ? undefined : users.localUserId(userId),
      from, limit: queryInt(ctx, 'limit', 100, 1000) || 100,
    });
    return { restrictions: rows.map(restrictionJson), total, ...(from + rows.length < total ? { next_token: String(from + rows.length) } : {}) };
  }, { auth: true });

  r.raw('get', `${A}/users/:userId/restrictions`, async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const userId = users.localUserId(ctx.params.userId);
    return { user_id: userId, restrictions: (await restrictions.ofUser(userId)).map(restrictionJson) };
  }, { auth: true });

  /** users.ban, the kind, a target below the actor's rank (never the actor). */
  const guard = async (ctx: Context & { params: Record<string, string> }) => {
    const admin = await requirePermission(ctx, 'users.ban');
    const userId = users.localUserId(ctx.params.userId);
    const kind = kindOf(ctx.params.kind);
    return { admin, userId, kind };
  };
  const notSelf = (admin: { userId: string }, userId: string) => {
    if (admin.userId === userId) throw forbidden('You cannot restrict or restore your own account');
  };

  r.raw('put', `${A}/users/:userId/restrictions/:kind`, async (ctx) => {
    const { admin, userId, kind } = await guard(ctx);
    const b = validate(putSchema, optionalBody(ctx));
    const expiresTs = restrictionEnd(b, Date.now());
    await requireOutrank(ctx, admin, userId);
    const reason = b.reason?.trim() || null;
    const logoutDevices = b.logout_devices ?? false;
    const row = await audited(ctx, admin, RESTRICTION_ACTIONS[kind].put, userId, () => {
      notSelf(admin, userId);
      return restrictions.put(userId, kind, { reason, by: admin.userId, expiresTs, logoutDevices });
    }, { via: 'restrictions', reason, expires_ts: expiresTs, ...(logoutDevices ? { logout_devices: true } : {}) });
    return restrictionJson(row);
  }, { auth: true });

  r.raw('delete', `${A}/users/:userId/restrictions/:kind`, async (ctx) => {
    const { admin, userId, kind } = await guard(ctx);
    await requireOutrank(ctx, admin, userId);
    const row = await audited(ctx, admin, RESTRICTION_ACTIONS[kind].lift, userId, () => {
      notSelf(admin, userId);
      return restrictions.lift(userId, kind);
    }, { via: 'restrictions' });
    return { lifted: restrictionJson(row) };
  }, { auth: true });
}

function describeRestrictionOperations(): void {
  const str = { type: 'string' };
  const int = { type: 'integer' };
  const kind = { name: 'kind', in: 'path', required: true, schema: { enum: [...RESTRICTION_KINDS] }, description: 'suspended, locked or shadow_banned' };
  const user = { name: 'userId', in: 'path', required: true, schema: str, description: 'local user id' };
  const q = (name: string, schema: unknown, description: string) => ({ name, in: 'query', required: false, schema, description });
  const ref = { $ref: '#/components/schemas/Restriction' };
  const list = { type: 'array', items: ref };
  describeAdminOperations({
    '/restrictions': {
      get: {
        summary: 'User restrictions in force (suspended, locked, shadow-banned), newest first; those set through Synapse\'s endpoints have no reason or expiry',
        permission: 'users.read',
        params: [q('kind', { enum: [...RESTRICTION_KINDS] }, 'only this kind'), q('user_id', str, 'only this user'), q('from', str, 'next_token of the previous page'), q('limit', { ...int, minimum: 0, maximum: 1000, default: 100 }, 'entries per page')],
        response: { type: 'object', properties: { restrictions: list, total: int, next_token: str }, required: ['restrictions', 'total'] },
      },
    },
    '/users/{userId}/restrictions': {
      get: { summary: "A user's restrictions in force", permission: 'users.read', params: [user], response: { type: 'object', properties: { user_id: str, restrictions: list }, required: ['user_id', 'restrictions'] } },
    },
    '/users/{userId}/restrictions/{kind}': {
      put: {
        summary: 'Restrict a user of lower rank (not yourself), replacing a restriction of the same kind; it applies at once on every worker and ends by itself at its expiry. logout_devices (locked only): a ban, every session ends too',
        permission: 'users.ban', params: [user, kind],
        body: {
          type: 'object', additionalProperties: false,
          properties: {
            reason: { type: ['string', 'null'], maxLength: 1000 },
            expires_ts: { type: ['integer', 'null'], description: 'ms since epoch, in the future (at most 100 years); or duration_ms, not both; neither: until lifted' },
            duration_ms: { type: ['integer', 'null'], minimum: 1, maximum: MAX_RESTRICTION_MS },
            logout_devices: { type: 'boolean', description: 'locked only: log out every session (a ban)' },
          },
        },
        response: ref,
      },
      delete: { summary: 'Lift a restriction (404 when the user has none of that kind in force)', permission: 'users.ban', params: [user, kind], response: { type: 'object', properties: { lifted: ref }, required: ['lifted'] } },
    },
  }, {
    Restriction: {
      type: 'object', additionalProperties: false,
      required: ['user_id', 'kind', 'reason', 'created_by', 'created_ts', 'expires_ts', 'logout_devices'],
      properties: {
        user_id: str, kind: { enum: [...RESTRICTION_KINDS] }, reason: { type: ['string', 'null'] },
        created_by: { type: ['string', 'null'], description: 'the admin; null: set before restrictions were recorded' },
        created_ts: { type: ['integer', 'null'] }, expires_ts: { type: ['integer', 'null'], description: 'null: until lifted' },
        logout_devices: { type: 'boolean', description: 'a ban: the lock also ended every session' },
      },
    },
  });
}
