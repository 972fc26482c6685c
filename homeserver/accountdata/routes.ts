import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, body, validate } from '../http/body.ts';
import { isFilterId, syncFilterSchema } from '../sync/filter.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { AccountDataStore } from './store.ts';
import type { Db } from '../storage/db.ts';

/** Types the server manages itself and clients may not set through account data. */
const SERVER_MANAGED = new Set(['m.fully_read', 'm.push_rules']);
const MAX_TYPE_BYTES = 255;

/** The spec answers 405 M_BAD_JSON for account data the server controls (m.fully_read, m.push_rules). */
const serverManaged = (type: string) => new MatrixError(405, 'M_BAD_JSON', `Cannot set ${type} through this API`);

export function accountDataRoutes(r: Routes, store: AccountDataStore, db: Db): void {
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
    await store.put(me.userId, '', typeParam(ctx.params.type!), jsonBody(ctx));
    return {};
  }, { auth: true });

  r.client('get', '/user/:userId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const c = await store.get(me.userId, '', ctx.params.type!);
    if (!c) throw notFound('Account data not found');
    return c;
  }, { auth: true });

  r.client('put', '/user/:userId/rooms/:roomId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    if (SERVER_MANAGED.has(ctx.params.type!)) throw serverManaged(ctx.params.type!);
    await store.put(me.userId, roomParam(ctx.params.roomId!), typeParam(ctx.params.type!), jsonBody(ctx));
    return {};
  }, { auth: true });

  r.client('get', '/user/:userId/rooms/:roomId/account_data/:type', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const c = await store.get(me.userId, roomParam(ctx.params.roomId!), ctx.params.type!);
    if (!c) throw notFound('Account data not found');
    return c;
  }, { auth: true });

  // Tags are the m.tag room account data.
  r.client('get', '/user/:userId/rooms/:roomId/tags', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const c = await store.get(me.userId, roomParam(ctx.params.roomId!), 'm.tag');
    return { tags: (c?.tags as Record<string, unknown>) ?? {} };
  }, { auth: true });

  r.client('put', '/user/:userId/rooms/:roomId/tags/:tag', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    // `order` is a number in [0, 1] (spec: room tagging): the one place a body may hold a fraction.
    const b = body(ctx, z.object({ order: z.number().optional() }).passthrough(), true, { fractions: true });
    const roomId = roomParam(ctx.params.roomId!);
    const c = (await store.get(me.userId, roomId, 'm.tag')) ?? {};
    const tags = { ...((c.tags as Record<string, unknown>) ?? {}), [ctx.params.tag!]: b };
    await store.put(me.userId, roomId, 'm.tag', { tags });
    return {};
  }, { auth: true });

  r.client('delete', '/user/:userId/rooms/:roomId/tags/:tag', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const roomId = roomParam(ctx.params.roomId!);
    const c = (await store.get(me.userId, roomId, 'm.tag')) ?? {};
    const tags = { ...((c.tags as Record<string, unknown>) ?? {}) };
    delete tags[ctx.params.tag!];
    await store.put(me.userId, roomId, 'm.tag', { tags });
    return {};
  }, { auth: true });

  // Filters.
  r.client('post', '/user/:userId/filter', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const f = validate(syncFilterSchema, jsonBody(ctx));
    const res = await db.raw('INSERT INTO filters (user_id, filter) VALUES (?, ?) RETURNING filter_id', [me.userId, JSON.stringify(f)]);
    return { filter_id: String(res.rows[0].filter_id) };
  }, { auth: true });

  r.client('get', '/user/:userId/filter/:filterId', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    if (!isFilterId(ctx.params.filterId!)) throw notFound('No such filter');
    const res = await db.raw('SELECT filter FROM filters WHERE user_id = ? AND filter_id = ?', [me.userId, ctx.params.filterId!]);
    if (!res.rows[0]) throw notFound('No such filter');
    return JSON.parse(res.rows[0].filter);
  }, { auth: true });
}
