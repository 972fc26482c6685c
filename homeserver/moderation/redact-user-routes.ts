// POST /_synapse/admin/v1/user/{userId}/redact             { rooms?: [roomId], reason?, limit? } → { redact_id }
// GET  /_synapse/admin/v1/user/redact_status/{redactId}    { status, failed_redactions }
// As Synapse's admin API; permission users.ban.
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { invalidParam, notFound } from '../http/errors.ts';
import { requirePermission, requireOutrank } from '../admin/guard.ts';
import { audited } from '../admin/audit.ts';
import { isValidRoomId, isValidUserId } from '../protocol/identifiers.ts';
import type { UserRedactions } from './redact-user.ts';

const redactSchema = z.object({
  rooms: z.array(z.string()).max(1000).optional(),
  reason: z.string().max(1000).optional(),
  limit: z.number().int().min(1).max(10_000).optional(),
});

export function redactUserRoutes(r: Routes, redactions: UserRedactions, userExists: (userId: string) => Promise<boolean>): void {
  r.raw('post', '/_synapse/admin/v1/user/:userId/redact', async (ctx) => {
    const actor = await requirePermission(ctx, 'users.ban');
    const userId = ctx.params.userId!;
    if (!isValidUserId(userId)) throw invalidParam(`userId: ${userId} is not a valid user ID`);
    const b = body(ctx, redactSchema, false);
    for (const room of b.rooms ?? []) if (!isValidRoomId(room)) throw invalidParam(`rooms: ${room} is not a valid room ID`);
    if (!(await userExists(userId))) throw notFound('User not found');
    await requireOutrank(ctx, actor, userId);
    const redactId = await audited(ctx, actor, 'user.redact', userId,
      () => redactions.start(userId, { rooms: b.rooms, reason: b.reason, limit: b.limit ?? 1000 }, actor.userId),
      { rooms: b.rooms ?? [], limit: b.limit ?? 1000 });
    return { redact_id: redactId };
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/user/redact_status/:redactId', async (ctx) => {
    await requirePermission(ctx, 'users.ban');
    return redactions.status(ctx.params.redactId!);
  }, { auth: true });
}
