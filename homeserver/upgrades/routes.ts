// POST /rooms/{roomId}/upgrade {new_version}   replace a room with one of another room version
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, validate } from '../http/body.ts';
import { requireKeys } from '../http/params.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { UpgradeService } from './service.ts';

const upgradeSchema = z.object({
  new_version: z.string(),
}).passthrough();

export function upgradeRoutes(r: Routes, upgrades: UpgradeService): void {
  r.client('post', '/rooms/:roomId/upgrade', async (ctx) => {
    const roomId = ctx.params.roomId!;
    if (!isValidRoomId(roomId)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${roomId}`);
    const raw = jsonBody(ctx);
    requireKeys(raw, ['new_version']);
    const b = validate(upgradeSchema, raw);
    // additional_creators: checked by the service, for room versions that have them (12+).
    return { replacement_room: await upgrades.upgrade(requester(ctx), roomId, b.new_version, raw.additional_creators) };
  }, { auth: true });
}
