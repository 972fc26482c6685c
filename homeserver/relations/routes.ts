// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
//     ?from ?to ?limit ?dir=b|f ?recurse=true|false     child events of an event
// GET /_matrix/client/v1/rooms/{roomId}/threads ?include=all|participated ?from ?limit
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import { parseLimit } from '../rooms/reader.ts';
import { parseToken } from '../storage/stream-token.ts';
import { booleanParam, single } from '../http/params.ts';
import type { RelationsService } from './service.ts';

const MAX_LIMIT = 1000;

function roomParam(ctx: RouterContext): string {
  const id = ctx.params.roomId;
  if (!id || !isValidRoomId(id)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${id}`);
  return id;
}

export function relationRoutes(r: Routes, relations: RelationsService): void {
  const handler = async (ctx: RouterContext) => {
    const dir = single(ctx, 'dir') ?? 'b';
    if (dir !== 'b' && dir !== 'f') throw new MatrixError(400, 'M_INVALID_PARAM', "dir must be 'b' or 'f'");
    const from = single(ctx, 'from');
    const to = single(ctx, 'to');
    return relations.relations(requester(ctx), roomParam(ctx), ctx.params.eventId!, {
      relType: ctx.params.relType,
      eventType: ctx.params.eventType,
      dir,
      from: from === undefined ? undefined : parseToken(from, 'from').pos,
      to: to === undefined ? undefined : parseToken(to, 'to').pos,
      limit: parseLimit(single(ctx, 'limit'), 5, MAX_LIMIT),
      recurse: booleanParam(ctx, 'recurse'),
    });
  };
  r.client('get', '/rooms/:roomId/relations/:eventId', handler, { auth: true }, ['v1']);
  r.client('get', '/rooms/:roomId/relations/:eventId/:relType', handler, { auth: true }, ['v1']);
  r.client('get', '/rooms/:roomId/relations/:eventId/:relType/:eventType', handler, { auth: true }, ['v1']);

  r.client('get', '/rooms/:roomId/threads', async (ctx) => {
    const include = single(ctx, 'include') ?? 'all';
    if (include !== 'all' && include !== 'participated') throw new MatrixError(400, 'M_INVALID_PARAM', "include must be 'all' or 'participated'");
    const rawLimit = single(ctx, 'limit');
    const limit = parseLimit(rawLimit, 5, MAX_LIMIT);
    if (limit === 0) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be greater than zero');
    const from = single(ctx, 'from');
    let before: number | undefined;
    if (from !== undefined) {
      try {
        before = parseToken(from, 'from').pos;
      } catch {
        throw new MatrixError(400, 'M_INVALID_PARAM', 'Unknown pagination token');
      }
    }
    return relations.threads(requester(ctx), roomParam(ctx), { include, from: before, limit });
  }, { auth: true }, ['v1']);
}
