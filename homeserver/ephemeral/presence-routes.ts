// GET /presence/{userId}/status   one's own presence, or that of a user one shares a room with
// PUT /presence/{userId}/status   {presence, status_msg?}: set one's own presence
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, validate } from '../http/body.ts';
import { requireKeys } from '../http/params.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden } from '../http/errors.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { PresenceService } from './presence-service.ts';

export const PRESENCE_VALUES = ['online', 'unavailable', 'offline'] as const;
/** A status message is a short line; Synapse does not bound it, a row should not be a megabyte. */
const MAX_STATUS_MSG = 1024;

const presenceBody = z.object({
  presence: z.enum(PRESENCE_VALUES),
  status_msg: z.string().max(MAX_STATUS_MSG).nullable().optional(),
});

export function presenceRoutes(r: Routes, presence: PresenceService): void {
  const userParam = (userId: string) => {
    if (!isValidUserId(userId)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid user ID ${userId}`);
    return userId;
  };

  r.client('get', '/presence/:userId/status', async (ctx) => {
    const me = requester(ctx);
    return presence.get(me.userId, userParam(ctx.params.userId!));
  }, { auth: true });

  r.client('put', '/presence/:userId/status', async (ctx) => {
    const me = requester(ctx);
    if (userParam(ctx.params.userId!) !== me.userId) throw forbidden('Cannot set the presence of other users');
    const raw = jsonBody(ctx);
    requireKeys(raw, ['presence']);
    const b = validate(presenceBody, raw);
    await presence.set(me.userId, b.presence, b.status_msg ?? null);
    return {};
  }, { auth: true });
}

/** /sync's set_presence: online (the default), unavailable or offline. */
export function parseSetPresence(raw: unknown): (typeof PRESENCE_VALUES)[number] {
  if (raw === undefined || raw === '') return 'online';
  if (typeof raw !== 'string' || !(PRESENCE_VALUES as readonly string[]).includes(raw)) {
    throw new MatrixError(400, 'M_INVALID_PARAM', 'set_presence must be online, unavailable or offline');
  }
  return raw as (typeof PRESENCE_VALUES)[number];
}
