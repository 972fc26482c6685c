// POST   /_matrix/client/v3/rooms/{roomId}/report/{eventId}   report an event (reporter joined to the room)
// POST   /_matrix/client/v3/rooms/{roomId}/report             report a room
// POST   /_matrix/client/v3/users/{userId}/report             report a user
// GET    /_synapse/admin/v1/event_reports                     event reports (from, limit, dir, room_id, user_id, event_sender_user_id; ours: resolved)
// GET    /_synapse/admin/v1/event_reports/{id}                one, with the event
// DELETE /_synapse/admin/v1/event_reports/{id}                delete it
// GET    /_super/admin/v1/reports                             the triage queue: every kind (kind, resolved filters)
// GET    /_super/admin/v1/reports/{id}                        one report of any kind
// PUT    /_super/admin/v1/reports/{id}/resolved               { resolved: true|false }
// Client endpoints as the spec (v1.19); admin ones as Synapse's, permission reports.handle.
import { z } from 'zod';
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { invalidParam } from '../http/errors.ts';
import { booleanParam, single } from '../http/params.ts';
import { requirePermission } from '../admin/guard.ts';
import { audited } from '../admin/audit.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { Reports } from './reports.ts';
import { dirParam, integerParam, roomIdParam } from './rooms-admin-routes.ts';

const eventReport = z.object({ reason: z.string().max(10_000).optional(), score: z.number().int().min(-100).max(0).optional() });
const otherReport = z.object({ reason: z.string().max(10_000) });
const resolvedSchema = z.object({ resolved: z.boolean() });

function reportId(ctx: RouterContext): number {
  const id = ctx.params.reportId!;
  if (!/^\d{1,15}$/.test(id)) throw invalidParam('report_id: must be an integer');
  return Number(id);
}

export function reportRoutes(r: Routes, reports: Reports): void {
  r.client('post', '/rooms/:roomId/report/:eventId', async (ctx) => {
    const roomId = roomIdParam(ctx);
    const b = body(ctx, eventReport, false);
    await r.limits.check('message', requester(ctx).userId, ctx);
    await reports.reportEvent(requester(ctx).userId, roomId, ctx.params.eventId!, b.reason ?? null, b.score ?? null);
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/report', async (ctx) => {
    const roomId = roomIdParam(ctx);
    const b = body(ctx, otherReport);
    await r.limits.check('message', requester(ctx).userId, ctx);
    await reports.reportRoom(requester(ctx).userId, roomId, b.reason);
    return {};
  }, { auth: true });

  r.client('post', '/users/:userId/report', async (ctx) => {
    const userId = ctx.params.userId!;
    if (!isValidUserId(userId)) throw invalidParam(`userId: ${userId} is not a valid user ID`);
    const b = body(ctx, otherReport);
    await r.limits.check('message', requester(ctx).userId, ctx);
    await reports.reportUser(requester(ctx).userId, userId, b.reason);
    return {};
  }, { auth: true });

  const query = (ctx: RouterContext) => ({
    from: integerParam(ctx, 'from', 0), limit: integerParam(ctx, 'limit', 100, 1000), dir: dirParam(ctx, 'b'),
    roomId: single(ctx, 'room_id'), userId: single(ctx, 'user_id'), eventSenderUserId: single(ctx, 'event_sender_user_id'),
    resolved: booleanParam(ctx, 'resolved'),
  });

  r.raw('get', '/_synapse/admin/v1/event_reports', async (ctx) => {
    await requirePermission(ctx, 'reports.handle');
    const { reports: list, total, next_token } = await reports.list({ ...query(ctx), kind: 'event' });
    return { event_reports: list, total, ...(next_token !== undefined ? { next_token } : {}) };
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/event_reports/:reportId', async (ctx) => {
    await requirePermission(ctx, 'reports.handle');
    return reports.get(reportId(ctx), 'event');
  }, { auth: true });

  r.raw('delete', '/_synapse/admin/v1/event_reports/:reportId', async (ctx) => {
    const actor = await requirePermission(ctx, 'reports.handle');
    const id = reportId(ctx);
    await audited(ctx, actor, 'report.delete', String(id), () => reports.delete(id, 'event'));
    return {};
  }, { auth: true });

  r.raw('get', '/_super/admin/v1/reports', async (ctx) => {
    await requirePermission(ctx, 'reports.handle');
    const kind = single(ctx, 'kind');
    if (kind !== undefined && kind !== 'event' && kind !== 'room' && kind !== 'user') throw invalidParam("kind: must be 'event', 'room' or 'user'");
    return reports.list({ ...query(ctx), kind });
  }, { auth: true });

  r.raw('get', '/_super/admin/v1/reports/:reportId', async (ctx) => {
    await requirePermission(ctx, 'reports.handle');
    return reports.get(reportId(ctx));
  }, { auth: true });

  r.raw('put', '/_super/admin/v1/reports/:reportId/resolved', async (ctx) => {
    const actor = await requirePermission(ctx, 'reports.handle');
    const id = reportId(ctx);
    const b = body(ctx, resolvedSchema);
    await audited(ctx, actor, b.resolved ? 'report.resolve' : 'report.reopen', String(id), () => reports.resolve(id, actor.userId, b.resolved));
    return { resolved: b.resolved };
  }, { auth: true });
}
