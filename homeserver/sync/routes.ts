import type { Routes } from '../http/app.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import type { Db } from '../storage/db.ts';
import type { SyncService } from './service.ts';
import { loadSyncFilter } from './filter.ts';
import { parseToken } from '../storage/stream-token.ts';

/** Long-polls are capped so a proxy's idle timeout never cuts one. */
const MAX_TIMEOUT_MS = 60_000;

export function syncRoutes(r: Routes, sync: SyncService, db: Db): void {
  r.client('get', '/sync', async (ctx) => {
    const me = requester(ctx);
    const since = ctx.query.since === undefined || ctx.query.since === '' ? undefined : parseToken(ctx.query.since, 'since').pos;
    const timeoutRaw = ctx.query.timeout ?? '0';
    const timeout = Number(timeoutRaw);
    if (!Number.isFinite(timeout) || timeout < 0) throw new MatrixError(400, 'M_INVALID_PARAM', 'timeout must be a non-negative number');
    const fullState = ctx.query.full_state === 'true';
    const filter = await loadSyncFilter(db, me.userId, ctx.query.filter);
    // Stop waiting when the client goes away, or answer at once when the server shuts down.
    const abort = new AbortController();
    ctx.req.on('close', () => abort.abort());
    const shutdown = ctx.state.shutdown as AbortSignal | undefined;
    const onShutdown = () => abort.abort();
    shutdown?.addEventListener('abort', onShutdown, { once: true });
    try {
      return await sync.sync(me, { since, timeoutMs: Math.min(timeout, MAX_TIMEOUT_MS), fullState, filter }, abort.signal);
    } finally { shutdown?.removeEventListener('abort', onShutdown); }
  }, { auth: true });
}
