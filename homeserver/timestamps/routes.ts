// GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event ?ts ?dir=f|b
import type { Routes } from '../http/app.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import { single } from '../http/params.ts';
import type { TimestampService } from './service.ts';

export function timestampRoutes(r: Routes, timestamps: TimestampService): void {
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
