// GET /_matrix/client/unstable/io.superserver/sync   without `Upgrade: websocket`: 400 (the WebSocket
// itself is served by SyncSockets on the http server's 'upgrade' event, see socket.ts).
import type { Routes } from '../http/app.ts';
import { MatrixError } from '../http/errors.ts';
import { SOCKET_SYNC_PATH } from './socket.ts';

export function socketRoutes(r: Routes): void {
  r.raw('get', SOCKET_SYNC_PATH, () => {
    throw new MatrixError(400, 'M_UNRECOGNIZED', 'This endpoint is a WebSocket: connect with "Upgrade: websocket" (README: "WebSocket sync")');
  });
}
