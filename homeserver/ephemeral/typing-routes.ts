// PUT /rooms/{roomId}/typing/{userId}   {typing, timeout?}: start or stop typing (yourself, in a joined room)
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden } from '../http/errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { TypingService } from './typing.ts';

const typingBody = z.object({
  typing: z.boolean(),
  // Milliseconds; capped by the service (TYPING_MAX_TIMEOUT_MS), so a huge value is no harm.
  timeout: z.number().int().nonnegative().optional(),
});

export function typingRoutes(r: Routes, typing: TypingService): void {
  r.client('put', '/rooms/:roomId/typing/:userId', async (ctx) => {
    const me = requester(ctx);
    const roomId = ctx.params.roomId!;
    if (!isValidRoomId(roomId)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${roomId}`);
    if (ctx.params.userId !== me.userId) throw forbidden('Cannot set typing for other users');
    const b = body(ctx, typingBody);
    // issue 9: a shadow-banned user's typing is answered and dropped, as their messages are (Synapse).
    if (me.shadowBanned) return {};
    await typing.setTyping(me.userId, roomId, b.typing, b.timeout);
    return {};
  }, { auth: true });
}
