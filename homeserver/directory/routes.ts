// GET  /publicRooms ?limit ?since ?server                  the published room directory
// POST /publicRooms ?server {limit, since, filter, include_all_networks, third_party_instance_id}
// GET  /_matrix/client/v1/room_summary/{roomIdOrAlias}     a room's summary (?via)
import { z } from 'zod';
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { requester, type Requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { single } from '../http/params.ts';
import type { DirectoryService } from './service.ts';

const publicRoomsSchema = z.object({
  limit: z.number().int().optional(),
  since: z.string().optional(),
  filter: z.object({
    generic_search_term: z.string().optional(),
    room_types: z.array(z.string().nullable()).optional(),
  }).passthrough().optional(),
  include_all_networks: z.boolean().optional(),
  third_party_instance_id: z.string().optional(),
}).passthrough();

function limitParam(ctx: RouterContext): number | undefined {
  const raw = single(ctx, 'limit');
  if (raw === undefined) return undefined;
  if (!/^-?\d+$/.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be an integer');
  return Number(raw);
}

export function directoryRoutes(r: Routes, directory: DirectoryService): void {
  r.client('get', '/publicRooms', async (ctx) => directory.publicRooms({
    limit: limitParam(ctx),
    since: single(ctx, 'since') || undefined,
    server: single(ctx, 'server') || undefined,
  }), { auth: 'optional' });

  r.client('post', '/publicRooms', async (ctx) => {
    const b = body(ctx, publicRoomsSchema);
    return directory.publicRooms({ ...b, since: b.since || undefined, server: single(ctx, 'server') || undefined });
  }, { auth: true });

  r.client('get', '/room_summary/:roomIdOrAlias', async (ctx) => {
    const me = ctx.state.requester as Requester | undefined;
    return directory.summary(me ? requester(ctx).userId : undefined, ctx.params.roomIdOrAlias!);
  }, { auth: 'optional' }, ['v1']);
}
