// GET /_matrix/client/unstable/io.superserver/sync   without `Upgrade: websocket`: 400 (the WebSocket
// itself is served by SyncSockets on the http server's 'upgrade' event, see socket.ts).
import type { Middleware } from 'koa';
import type { Routes } from '../http/app.ts';
import type { Requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { SOCKET_SYNC_PATH, type SyncSockets } from './socket.ts';

export function socketRoutes(r: Routes): void {
  r.raw('get', SOCKET_SYNC_PATH, () => {
    throw new MatrixError(400, 'M_UNRECOGNIZED', 'This endpoint is a WebSocket: connect with "Upgrade: websocket" (README: "WebSocket sync")');
  });
}

/** The requests after which a user's tokens may have stopped working (r0 is rewritten to v3 before this runs). */
const REVOKING = /^\/_matrix\/client\/v3\/(?:logout(?:\/all)?|delete_devices|devices\/[^/]+|account\/password|account\/deactivate)$/;

/**
 * After a successful logout (or device deletion, password change, deactivation) on this worker, the
 * user's sync sockets re-check their tokens at once: those revoked close with 4401 now rather than
 * at the next ping round (which still covers revocations made elsewhere).
 */
export function revocationWatcher(sockets: SyncSockets): Middleware {
  return async (ctx, next) => {
    await next();
    if (ctx.method === 'GET' || ctx.status !== 200 || !REVOKING.test(ctx.path)) return;
    const me = ctx.state.requester as Requester | undefined;
    if (me) sockets.recheckUser(me.userId);
  };
}
