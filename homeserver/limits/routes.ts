// GET    /_synapse/admin/v1/users/{userId}/override_ratelimit   a user's override ({} when none)
// POST   /_synapse/admin/v1/users/{userId}/override_ratelimit   set it (messages_per_second, burst_count; 0 and 0: not limited)
// DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit   remove it
// As Synapse's admin API; the users.write permission (issue 9: admin/guard.ts); changes are audited.
import { z } from 'zod';
import type { Context } from 'koa';
import type { Routes } from '../http/app.ts';
import { optionalBody, validate } from '../http/body.ts';
import { MatrixError, notFound } from '../http/errors.ts';
import { requirePermission, type AdminActor } from '../admin/guard.ts'; // issue 9 (roles9)
import { audited } from '../admin/audit.ts';
import type { RateLimits } from './service.ts';

const PATH = '/_synapse/admin/v1/users/:userId/override_ratelimit';

const overrideSchema = z.object({
  messages_per_second: z.number().int().min(0).max(1_000_000).optional(),
  burst_count: z.number().int().min(0).max(1_000_000).optional(),
});

export function rateLimitRoutes(r: Routes, limits: RateLimits, serverName: string, userExists: (userId: string) => Promise<boolean>): void {
  const target = async (ctx: Context & { params: Record<string, string> }): Promise<string> => (await targetOf(ctx)).userId;
  const targetOf = async (ctx: Context & { params: Record<string, string> }): Promise<{ admin: AdminActor; userId: string }> => {
    const admin = await requirePermission(ctx, ctx.method === 'GET' ? 'users.read' : 'users.write');
    const userId = ctx.params.userId!;
    if (!userId.endsWith(`:${serverName}`)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Only local users can be rate limited here');
    if (!(await userExists(userId))) throw notFound('User not found');
    return { admin, userId };
  };

  r.raw('get', PATH, async (ctx) => {
    const o = await limits.override(await target(ctx));
    return o ? { messages_per_second: o.messagesPerSecond, burst_count: o.burstCount } : {};
  }, { auth: true });

  r.raw('post', PATH, async (ctx) => {
    const { admin, userId } = await targetOf(ctx);
    const b = validate(overrideSchema, optionalBody(ctx));
    const o = { messagesPerSecond: b.messages_per_second ?? 0, burstCount: b.burst_count ?? 0 };
    await audited(ctx, admin, 'user.override_ratelimit', userId, () => limits.setOverride(userId, o), { messages_per_second: o.messagesPerSecond, burst_count: o.burstCount });
    return { messages_per_second: o.messagesPerSecond, burst_count: o.burstCount };
  }, { auth: true });

  r.raw('delete', PATH, async (ctx) => {
    const { admin, userId } = await targetOf(ctx);
    await audited(ctx, admin, 'user.delete_override_ratelimit', userId, () => limits.deleteOverride(userId));
    return {};
  }, { auth: true });
}
