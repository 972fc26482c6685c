// GET    /_synapse/admin/v1/rooms                          every room, paged (from, limit), ordered (order_by, dir), search_term
// GET    /_synapse/admin/v1/rooms/{roomId}                 one room's details
// GET    /_synapse/admin/v1/rooms/{roomId}/members         its joined members
// GET    /_synapse/admin/v1/rooms/{roomId}/state           its current state
// GET    /_synapse/admin/v1/rooms/{roomId}/messages        its timeline (from, to, dir, limit, filter), without visibility rules
// DELETE /_synapse/admin/v2/rooms/{roomId}                 delete: move local members out (to a new room), block, purge
// DELETE /_synapse/admin/v1/rooms/{roomId}                 the same, answered when done (Synapse's v1, older synadm)
// GET    /_synapse/admin/v2/rooms/{roomId}/delete_status   every deletion of the room
// GET    /_synapse/admin/v2/rooms/delete_status/{deleteId} one deletion
// PUT|GET /_synapse/admin/v1/rooms/{roomId}/block         block (nobody joins) / is it blocked
// As Synapse's admin API; permissions rooms.read, rooms.delete, rooms.moderate (admin/guard.ts).
import { z } from 'zod';
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { MatrixError, invalidParam } from '../http/errors.ts';
import { single } from '../http/params.ts';
import { requirePermission } from '../admin/guard.ts';
import { audited } from '../admin/audit.ts';
import { isValidRoomId, isValidUserId } from '../protocol/identifiers.ts';
import { ROOM_ORDERS, type RoomOrder } from '../rooms/reader.ts';
import { parseFilterParam } from '../rooms/filter.ts';
import { parseToken } from '../storage/stream-token.ts';
import type { RoomAdmin } from './rooms-admin.ts';

const deleteSchema = z.object({
  block: z.boolean().optional(),
  purge: z.boolean().optional(),
  force_purge: z.boolean().optional(),
  new_room_user_id: z.string().optional(),
  room_name: z.string().max(255).optional(),
  message: z.string().max(65536).optional(),
}).passthrough();

const blockSchema = z.object({ block: z.boolean() });

/** A non-negative integer query parameter (Synapse's parse_integer), 400 naming it otherwise. */
export function integerParam(ctx: RouterContext, name: string, dflt: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = single(ctx, name);
  if (v === undefined) return dflt;
  if (!/^\d{1,15}$/.test(v)) throw invalidParam(`Query parameter ${name} must be a non-negative integer`);
  return Math.min(Number(v), max);
}

export function dirParam(ctx: RouterContext, dflt: 'f' | 'b'): 'f' | 'b' {
  const v = single(ctx, 'dir') ?? dflt;
  if (v !== 'f' && v !== 'b') throw invalidParam("Query parameter dir must be 'f' or 'b'");
  return v;
}

/** The room id of the path, 400 when it is not one. */
export function roomIdParam(ctx: RouterContext): string {
  const roomId = ctx.params.roomId!;
  if (!isValidRoomId(roomId)) throw invalidParam(`roomId: ${roomId} is not a valid room ID`);
  return roomId;
}

export function roomAdminRoutes(r: Routes, admin: RoomAdmin, serverName: string): void {
  r.raw('get', '/_synapse/admin/v1/rooms', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    const orderBy = (single(ctx, 'order_by') ?? 'name') as RoomOrder;
    if (!ROOM_ORDERS.includes(orderBy)) throw invalidParam(`order_by: unknown value ${orderBy}`);
    const term = single(ctx, 'search_term');
    if (term !== undefined && !term.trim()) throw invalidParam('search_term: must not be empty');
    return admin.list({ term, orderBy, dir: dirParam(ctx, 'f'), from: integerParam(ctx, 'from', 0), limit: integerParam(ctx, 'limit', 100, 1000) });
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/rooms/:roomId', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    return admin.details(roomIdParam(ctx));
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/rooms/:roomId/members', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    return admin.members(roomIdParam(ctx));
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/rooms/:roomId/state', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    return admin.state(roomIdParam(ctx));
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/rooms/:roomId/messages', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    const roomId = roomIdParam(ctx);
    const from = single(ctx, 'from');
    const to = single(ctx, 'to');
    return admin.messages(roomId, {
      from: from === undefined ? undefined : parseToken(from, 'from').pos,
      to: to === undefined ? undefined : parseToken(to, 'to').pos,
      dir: dirParam(ctx, 'b'),
      limit: integerParam(ctx, 'limit', 10, 1000),
      filter: parseFilterParam(single(ctx, 'filter')),
    });
  }, { auth: true });

  const deletion = async (ctx: RouterContext) => {
    const actor = await requirePermission(ctx, 'rooms.delete');
    const roomId = roomIdParam(ctx);
    const b = body(ctx, deleteSchema, false);
    if (b.new_room_user_id !== undefined && (!isValidUserId(b.new_room_user_id) || !b.new_room_user_id.endsWith(`:${serverName}`))) {
      throw new MatrixError(400, 'M_INVALID_PARAM', 'new_room_user_id: must be a local user ID');
    }
    const params = { block: b.block ?? false, purge: b.purge ?? true, new_room_user_id: b.new_room_user_id, room_name: b.room_name, message: b.message };
    const details = { block: params.block, purge: params.purge, new_room_user_id: params.new_room_user_id ?? null };
    return { actor, roomId, params, details };
  };

  r.raw('delete', '/_synapse/admin/v2/rooms/:roomId', async (ctx) => {
    const { actor, roomId, params, details } = await deletion(ctx);
    const deleteId = await audited(ctx, actor, 'room.delete', roomId, () => admin.startDelete(roomId, params, actor.userId), details);
    return { delete_id: deleteId };
  }, { auth: true });

  r.raw('delete', '/_synapse/admin/v1/rooms/:roomId', async (ctx) => {
    const { actor, roomId, params, details } = await deletion(ctx);
    return audited(ctx, actor, 'room.delete', roomId, () => admin.deleteNow(roomId, params, actor.userId), details);
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v2/rooms/:roomId/delete_status', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    return admin.deleteStatusOfRoom(roomIdParam(ctx));
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v2/rooms/delete_status/:deleteId', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    return admin.deleteStatus(ctx.params.deleteId!);
  }, { auth: true });

  r.raw('put', '/_synapse/admin/v1/rooms/:roomId/block', async (ctx) => {
    const actor = await requirePermission(ctx, 'rooms.moderate');
    const roomId = roomIdParam(ctx);
    const b = body(ctx, blockSchema);
    await audited(ctx, actor, b.block ? 'room.block' : 'room.unblock', roomId, () => admin.block(roomId, b.block, actor.userId), { block: b.block });
    return { block: b.block };
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/rooms/:roomId/block', async (ctx) => {
    await requirePermission(ctx, 'rooms.read');
    return admin.blockStatus(roomIdParam(ctx));
  }, { auth: true });
}
