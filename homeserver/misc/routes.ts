// GET /voip/turnServer                              TURN credentials ({} when no TURN server is configured)
// GET /thirdparty/protocols                          bridged protocols (none: no application services)
// GET /thirdparty/protocol/{protocol}                one protocol (404)
// GET /thirdparty/location[/{protocol}], /thirdparty/user[/{protocol}]   lookups (404: nothing bridged)
// GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event ?ts ?dir=f|b
import type { Routes } from '../http/app.ts';
import { requester } from '../http/context.ts';
import { MatrixError, notFound } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import { single } from '../misc/params.ts';
import type { TimestampService } from './service.ts';

export function miscRoutes(r: Routes, timestamps: TimestampService): void {
  // Synapse answers {} when it has no TURN server configured; so does this server (it has no TURN setting).
  r.client('get', '/voip/turnServer', () => ({}), { auth: true });

  r.client('get', '/thirdparty/protocols', () => ({}), { auth: true });
  r.client('get', '/thirdparty/protocol/:protocol', () => {
    throw notFound('Unknown protocol');
  }, { auth: true });
  r.client('get', '/thirdparty/location/:protocol', () => {
    throw notFound('No portal rooms were found');
  }, { auth: true });
  r.client('get', '/thirdparty/user/:protocol', () => {
    throw notFound('No users were found');
  }, { auth: true });
  r.client('get', '/thirdparty/location', (ctx) => {
    if (single(ctx, 'alias') === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: alias');
    throw notFound('No third-party locations were found');
  }, { auth: true });
  r.client('get', '/thirdparty/user', (ctx) => {
    if (single(ctx, 'userid') === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: userid');
    throw notFound('No third-party users were found');
  }, { auth: true });

  r.client('get', '/rooms/:roomId/timestamp_to_event', async (ctx) => {
    const roomId = ctx.params.roomId!;
    if (!isValidRoomId(roomId)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${roomId}`);
    const rawTs = single(ctx, 'ts');
    if (rawTs === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: ts');
    if (!/^-?\d+$/.test(rawTs) || !Number.isSafeInteger(Number(rawTs))) throw new MatrixError(400, 'M_INVALID_PARAM', 'ts must be an integer');
    const dir = single(ctx, 'dir');
    if (dir === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: dir');
    if (dir !== 'f' && dir !== 'b') throw new MatrixError(400, 'M_INVALID_PARAM', "dir must be 'f' or 'b'");
    return timestamps.closest(requester(ctx), roomId, Number(rawTs), dir);
  }, { auth: true }, ['v1']);
}
