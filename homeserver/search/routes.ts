// POST /search   server-side full-text search of room events (?next_batch)
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, validate } from '../http/body.ts';
import { requireKeys } from '../http/params.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { roomEventFilterSchema } from '../rooms/filter.ts';
import { SEARCH_KEYS, type SearchService } from './service.ts';

const searchSchema = z.object({
  search_categories: z.object({
    room_events: z.object({
      search_term: z.string(),
      keys: z.array(z.enum(SEARCH_KEYS)).optional(),
      filter: roomEventFilterSchema.optional(),
      order_by: z.enum(['recent', 'rank']).optional(),
      event_context: z.object({
        before_limit: z.number().int().min(0).optional(),
        after_limit: z.number().int().min(0).optional(),
        include_profile: z.boolean().optional(),
      }).passthrough().optional(),
      include_state: z.boolean().optional(),
      groupings: z.object({
        group_by: z.array(z.object({ key: z.enum(['room_id', 'sender']) }).passthrough()).optional(),
      }).passthrough().optional(),
    }).passthrough().optional(),
  }).passthrough(),
}).passthrough();

export function searchRoutes(r: Routes, search: SearchService): void {
  r.client('post', '/search', async (ctx) => {
    const raw = jsonBody(ctx);
    requireKeys(raw, ['search_categories']);
    if (typeof raw.search_categories === 'object' && raw.search_categories !== null && 'room_events' in raw.search_categories) {
      requireKeys(raw, ['search_categories.room_events.search_term']);
    }
    const b = validate(searchSchema, raw);
    const nb = ctx.query.next_batch;
    if (nb !== undefined && typeof nb !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'next_batch must be given once');
    return search.search(requester(ctx), b.search_categories.room_events, nb);
  }, { auth: true });
}
