// PUT    /user/{userId}/account_data/{type}                   set global account data
// GET    /user/{userId}/account_data/{type}                   read global account data
// PUT    /user/{userId}/rooms/{roomId}/account_data/{type}    set room account data
// GET    /user/{userId}/rooms/{roomId}/account_data/{type}    read room account data
// GET    /user/{userId}/rooms/{roomId}/tags                   a room's tags
// PUT    /user/{userId}/rooms/{roomId}/tags/{tag}             set a tag
// DELETE /user/{userId}/rooms/{roomId}/tags/{tag}             remove a tag
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, body } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { AccountDataService } from './service.ts';

/** Types the server manages itself and clients may not set through account data. */
const SERVER_MANAGED = new Set(['m.fully_read', 'm.push_rules']);
const MAX_TYPE_BYTES = 255;

/** The spec answers 405 M_BAD_JSON for account data the server controls (m.fully_read, m.push_rules). */
const serverManaged = (type: string) => new MatrixError(405, 'M_BAD_JSON', `Cannot set ${type} through this API`);

export function accountDataRoutes(r: Routes, accountData: AccountDataService): void {
  const own = (ctx: { params: Record<string, string | undefined> }, me: { userId: string }) => {
    if (ctx.params.userId !== me.userId) throw forbidden('Cannot access account data of other users');
  };
  // Types are keys of the account_data index and event types to clients: 255 bytes at most, as
  // an event's type (spec, size limits); a longer one could not be stored (index row size).
  const typeParam = (type: string) => {
    if (Buffer.byteLength(type) > MAX_TYPE_BYTES) throw new MatrixError(400, 'M_INVALID_PARAM', `Account data type is over ${MAX_TYPE_BYTES} bytes`);
    return type;
  };
  const roomParam = (roomId: string) => {
    if (!isValidRoomId(roomId)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${roomId}`);
    return roomId;
  };

  r.client('put', '/user/:userId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    if (SERVER_MANAGED.has(ctx.params.type!)) throw serverManaged(ctx.params.type!);
    await accountData.put(me.userId, '', typeParam(ctx.params.type!), jsonBody(ctx));
    return {};
  }, { auth: true });

  r.client('get', '/user/:userId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const c = await accountData.get(me.userId, '', ctx.params.type!);
    if (!c) throw notFound('Account data not found');
    return c;
  }, { auth: true });

  r.client('put', '/user/:userId/rooms/:roomId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    if (SERVER_MANAGED.has(ctx.params.type!)) throw serverManaged(ctx.params.type!);
    await accountData.put(me.userId, roomParam(ctx.params.roomId!), typeParam(ctx.params.type!), jsonBody(ctx));
    return {};
  }, { auth: true });

  r.client('get', '/user/:userId/rooms/:roomId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const c = await accountData.get(me.userId, roomParam(ctx.params.roomId!), ctx.params.type!);
    if (!c) throw notFound('Account data not found');
    return c;
  }, { auth: true });

  // Tags are the m.tag room account data.
  r.client('get', '/user/:userId/rooms/:roomId/tags', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    return { tags: await accountData.tags(me.userId, roomParam(ctx.params.roomId!)) };
  }, { auth: true });

  r.client('put', '/user/:userId/rooms/:roomId/tags/:tag', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    // `order` is a number in [0, 1] (spec: room tagging): the one place a body may hold a fraction.
    const b = body(ctx, z.object({ order: z.number().optional() }).passthrough(), true, { fractions: true });
    await accountData.setTag(me.userId, roomParam(ctx.params.roomId!), ctx.params.tag!, b);
    return {};
  }, { auth: true });

  r.client('delete', '/user/:userId/rooms/:roomId/tags/:tag', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    await accountData.deleteTag(me.userId, roomParam(ctx.params.roomId!), ctx.params.tag!);
    return {};
  }, { auth: true });
}
