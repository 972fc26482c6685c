// POST   /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}    quarantine one (never served again)
// POST   /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}  undo it
// POST   /_synapse/admin/v1/media/protect/{mediaId}, /unprotect/{mediaId}  safe from quarantine (or not)
// POST   /_synapse/admin/v1/room/{roomId}/media/quarantine             every local media the room's events name
// POST   /_synapse/admin/v1/user/{userId}/media/quarantine             every media the user uploaded
// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}               delete one
// POST   /_synapse/admin/v1/media/delete?before_ts=&size_gt=          delete media older than a time (larger than a size)
// GET    /_synapse/admin/v1/users/{userId}/media                      a user's media, newest first
// DELETE /_synapse/admin/v1/users/{userId}/media                      delete all of it
// GET    /_synapse/admin/v1/statistics/users/media                    media usage per user
// GET    /_synapse/admin/v1/statistics/database/rooms                 the rooms taking the most space
// As Synapse's admin API; permissions media.quarantine (changes), server.manage (statistics), users.read.
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { MatrixError, invalidParam, notFound } from '../http/errors.ts';
import { single } from '../http/params.ts';
import { requirePermission } from '../admin/guard.ts';
import { audited } from '../admin/audit.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { MediaService } from '../media/service.ts';
import type { RoomReader } from '../rooms/reader.ts';
import { dirParam, integerParam, roomIdParam } from './rooms-admin-routes.ts';

type MediaRow = NonNullable<Awaited<ReturnType<MediaService['adminGet']>>>;

const USAGE_ORDERS = ['user_id', 'displayname', 'media_length', 'media_count'] as const;

export function mediaAdminRoutes(r: Routes, media: MediaService, reader: RoomReader, serverName: string, userExists: (userId: string) => Promise<boolean>): void {
  const localMedia = async (ctx: RouterContext): Promise<string> => {
    if (ctx.params.serverName !== undefined && ctx.params.serverName !== serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'serverName: only local media can be managed here');
    const mediaId = ctx.params.mediaId!;
    if (!(await media.adminGet(mediaId))) throw notFound('Media not found');
    return mediaId;
  };
  const localUser = async (ctx: RouterContext): Promise<string> => {
    const userId = ctx.params.userId!;
    if (!isValidUserId(userId)) throw invalidParam(`userId: ${userId} is not a valid user ID`);
    if (!userId.endsWith(`:${serverName}`)) throw new MatrixError(400, 'M_INVALID_PARAM', 'userId: only local users can be managed here');
    if (!(await userExists(userId))) throw notFound('User not found');
    return userId;
  };

  r.raw('post', '/_synapse/admin/v1/media/quarantine/:serverName/:mediaId', async (ctx) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    const mediaId = await localMedia(ctx);
    await audited(ctx, actor, 'media.quarantine', `mxc://${serverName}/${mediaId}`, () => media.quarantine([mediaId], actor.userId));
    return {};
  }, { auth: true });

  r.raw('post', '/_synapse/admin/v1/media/unquarantine/:serverName/:mediaId', async (ctx) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    const mediaId = await localMedia(ctx);
    await audited(ctx, actor, 'media.unquarantine', `mxc://${serverName}/${mediaId}`, () => media.unquarantine(mediaId));
    return {};
  }, { auth: true });

  for (const [path, safe] of [['protect', true], ['unprotect', false]] as const) {
    r.raw('post', `/_synapse/admin/v1/media/${path}/:mediaId`, async (ctx) => {
      const actor = await requirePermission(ctx, 'media.quarantine');
      const mediaId = await localMedia(ctx);
      await audited(ctx, actor, `media.${path}`, `mxc://${serverName}/${mediaId}`, () => media.setSafe(mediaId, safe));
      return {};
    }, { auth: true });
  }

  r.raw('post', '/_synapse/admin/v1/room/:roomId/media/quarantine', async (ctx) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    const roomId = roomIdParam(ctx);
    if (!(await reader.roomMeta(roomId))) throw notFound('Room not found');
    const n = await audited(ctx, actor, 'media.quarantine_room', roomId, async () => media.quarantine(await reader.mediaIdsIn(roomId, serverName), actor.userId));
    return { num_quarantined: n };
  }, { auth: true });

  r.raw('post', '/_synapse/admin/v1/user/:userId/media/quarantine', async (ctx) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    const userId = await localUser(ctx);
    const n = await audited(ctx, actor, 'media.quarantine_user', userId, () => media.quarantineUploader(userId, actor.userId));
    return { num_quarantined: n };
  }, { auth: true });

  r.raw('delete', '/_synapse/admin/v1/media/:serverName/:mediaId', async (ctx) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    const mediaId = await localMedia(ctx);
    const deleted = await audited(ctx, actor, 'media.delete', `mxc://${serverName}/${mediaId}`, () => media.deleteMedia({ ids: [mediaId] }));
    return { deleted_media: deleted, total: deleted.length };
  }, { auth: true });

  const deleteBefore = async (ctx: RouterContext) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    if (ctx.params.serverName !== undefined && ctx.params.serverName !== serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'serverName: only local media can be deleted');
    const raw = single(ctx, 'before_ts');
    if (raw === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing integer query parameter before_ts');
    const beforeTs = integerParam(ctx, 'before_ts', 0);
    const sizeGt = integerParam(ctx, 'size_gt', 0);
    if (beforeTs > Date.now()) throw invalidParam('before_ts: must be in the past');
    const deleted = await audited(ctx, actor, 'media.delete_before', null, () => media.deleteMedia({ beforeTs, sizeGt }), { before_ts: beforeTs, size_gt: sizeGt });
    return { deleted_media: deleted, total: deleted.length };
  };
  r.raw('post', '/_synapse/admin/v1/media/delete', deleteBefore, { auth: true });
  r.raw('post', '/_synapse/admin/v1/media/:serverName/delete', deleteBefore, { auth: true });

  const shape = (m: MediaRow) => ({
    media_id: m.mediaId, media_type: m.contentType, media_length: m.size, upload_name: m.uploadName, created_ts: m.createdTs,
    last_access_ts: null, quarantined_by: m.quarantinedBy, safe_from_quarantine: m.safeFromQuarantine,
  });

  r.raw('get', '/_synapse/admin/v1/users/:userId/media', async (ctx) => {
    await requirePermission(ctx, 'users.read');
    const userId = await localUser(ctx);
    const from = integerParam(ctx, 'from', 0);
    const { rows, total } = await media.mediaOf(userId, from, integerParam(ctx, 'limit', 100, 1000));
    return { media: rows.map(shape), total, ...(from + rows.length < total ? { next_token: from + rows.length } : {}) };
  }, { auth: true });

  r.raw('delete', '/_synapse/admin/v1/users/:userId/media', async (ctx) => {
    const actor = await requirePermission(ctx, 'media.quarantine');
    const userId = await localUser(ctx);
    const deleted = await audited(ctx, actor, 'media.delete_user', userId, () => media.deleteMedia({ uploader: userId }));
    return { deleted_media: deleted, total: deleted.length };
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/statistics/users/media', async (ctx) => {
    await requirePermission(ctx, 'server.manage');
    const orderBy = (single(ctx, 'order_by') ?? 'user_id') as (typeof USAGE_ORDERS)[number];
    if (!USAGE_ORDERS.includes(orderBy)) throw invalidParam(`order_by: unknown value ${orderBy}`);
    const from = integerParam(ctx, 'from', 0);
    const limit = integerParam(ctx, 'limit', 100, 1000);
    const fromTs = single(ctx, 'from_ts') === undefined ? undefined : integerParam(ctx, 'from_ts', 0);
    const untilTs = single(ctx, 'until_ts') === undefined ? undefined : integerParam(ctx, 'until_ts', 0);
    if (fromTs !== undefined && untilTs !== undefined && untilTs < fromTs) throw invalidParam('until_ts: must be after from_ts');
    const term = single(ctx, 'search_term');
    if (term !== undefined && !term) throw invalidParam('search_term: must not be empty');
    const { users, total } = await media.usage({ from, limit, orderBy, dir: dirParam(ctx, 'f'), fromTs, untilTs, term });
    return { users, total, ...(from + users.length < total ? { next_token: from + users.length } : {}) };
  }, { auth: true });

  r.raw('get', '/_synapse/admin/v1/statistics/database/rooms', async (ctx) => {
    await requirePermission(ctx, 'server.manage');
    return { rooms: await reader.largestRooms(10) };
  }, { auth: true });
}
