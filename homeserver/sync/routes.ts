// GET  /sync ?since ?timeout ?full_state ?filter      incremental or initial sync (long-polls up to 60 s)
// POST /user/{userId}/filter                         upload a filter for /sync and /messages
// GET  /user/{userId}/filter/{filterId}              a filter as uploaded
import type { InFlight, Routes } from '../http/app.ts';
import { jsonBody, validate } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { SyncService } from './service.ts';
import { syncFilterSchema, type FilterService } from './filter.ts';
import { parseSyncToken } from '../storage/stream-token.ts';
import { parseSetPresence } from '../ephemeral/presence-routes.ts';

/** Presence hears of each /sync (set_presence) and of its end: a syncing user is seen (ephemeral/). */
export interface SyncPresence {
  syncing(userId: string, setPresence: 'online' | 'unavailable' | 'offline'): Promise<() => void>;
}

/** Long-polls are capped so a proxy's idle timeout never cuts one. */
const MAX_TIMEOUT_MS = 60_000;

export function syncRoutes(r: Routes, sync: SyncService, filters: FilterService, presence?: SyncPresence): void {
  r.client('get', '/sync', async (ctx) => {
    const me = requester(ctx);
    const since = ctx.query.since === undefined || ctx.query.since === '' ? undefined : parseSyncToken(ctx.query.since, 'since');
    const timeoutRaw = ctx.query.timeout ?? '0';
    const timeout = Number(timeoutRaw);
    if (!Number.isFinite(timeout) || timeout < 0) throw new MatrixError(400, 'M_INVALID_PARAM', 'timeout must be a non-negative number');
    const fullState = ctx.query.full_state === 'true';
    const filter = await filters.load(me.userId, ctx.query.filter);
    const setPresence = parseSetPresence(ctx.query.set_presence);
    const synced = presence ? await presence.syncing(me.userId, setPresence) : undefined;
    // Stop waiting when the client goes away, or answer at once when the server shuts down.
    const abort = new AbortController();
    // After a normal response the request closes too: nothing to abort then (an abort costs a
    // DOMException and a round of listeners, on every one of a thousand woken long-polls).
    ctx.req.on('close', () => { if (!ctx.res.writableEnded) abort.abort(); });
    const unhook = (ctx.state.inFlight as InFlight | undefined)?.whenShuttingDown(() => abort.abort());
    try {
      return await sync.sync(me, { since, timeoutMs: Math.min(timeout, MAX_TIMEOUT_MS), fullState, filter }, abort.signal);
    } finally { unhook?.(); synced?.(); }
  }, { auth: true });

  const own = (ctx: { params: Record<string, string | undefined> }, me: { userId: string }) => {
    if (ctx.params.userId !== me.userId) throw forbidden('Cannot access filters of other users');
  };

  r.client('post', '/user/:userId/filter', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const f = validate(syncFilterSchema, jsonBody(ctx));
    return { filter_id: await filters.create(me.userId, f) };
  }, { auth: true });

  r.client('get', '/user/:userId/filter/:filterId', async (ctx) => {
    const me = requester(ctx);
    own(ctx, me);
    const f = await filters.get(me.userId, ctx.params.filterId!);
    if (f === undefined) throw notFound('No such filter');
    return f;
  }, { auth: true });
}
