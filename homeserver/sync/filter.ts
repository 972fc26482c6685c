import { z } from 'zod';
import { MatrixError } from '../http/errors.ts';
import { parseGuardedText } from '../http/json-guard.ts';
import { filterList, roomEventFilterSchema } from '../rooms/filter.ts';
import type { SyncStore } from './store.ts';
import { LruCache } from '../cache/lru.ts';

const eventFilter = z.object({
  limit: z.number().int().optional(),
  types: filterList().optional(),
  not_types: filterList().optional(),
  senders: filterList().optional(),
  not_senders: filterList().optional(),
}).passthrough();

/** The sync Filter of the client-server spec. */
export const syncFilterSchema = z.object({
  event_fields: filterList().optional(),
  event_format: z.enum(['client', 'federation']).optional(),
  presence: eventFilter.optional(),
  account_data: eventFilter.optional(),
  room: z.object({
    rooms: filterList().optional(),
    not_rooms: filterList().optional(),
    include_leave: z.boolean().optional(),
    timeline: roomEventFilterSchema.optional(),
    state: roomEventFilterSchema.optional(),
    ephemeral: roomEventFilterSchema.optional(),
    account_data: roomEventFilterSchema.optional(),
  }).passthrough().optional(),
}).passthrough();
export type SyncFilter = z.infer<typeof syncFilterSchema>;

/** Digits that name a filter id within the filters.filter_id column (BIGSERIAL: 1 … 2^63−1). */
export function isFilterId(raw: string): boolean {
  return /^\d{1,19}$/.test(raw) && BigInt(raw) >= 1n && BigInt(raw) <= MAX_BIGINT;
}
const MAX_BIGINT = 2n ** 63n - 1n;

/** Filters: uploaded by clients (POST /user/{userId}/filter), named by id in /sync and /messages. */
/** Parsed filters kept (one or two per syncing user). */
const PARSED_FILTERS_KEPT = 20_000;
const MAX_KEPT_FILTER_CHARS = 2_000;

export class FilterService {
  /**
   * Parsed filters by user and id, and inline ones by their text: a filter never changes once
   * uploaded, and every long-poll a client re-issues names the same one (a read and a parse each,
   * a thousand times per message in a busy room, otherwise). Shared: callers must not modify them.
   */
  private parsed = new LruCache<string, SyncFilter>(PARSED_FILTERS_KEPT);

  constructor(private store: SyncStore) {}

  /** Stores a validated filter; its id. */
  create(userId: string, filter: SyncFilter): Promise<string> {
    return this.store.insertFilter(userId, JSON.stringify(filter));
  }

  /** A user's filter as uploaded, or undefined (also for an id no filter can have). */
  async get(userId: string, filterId: string): Promise<unknown> {
    if (!isFilterId(filterId)) return undefined;
    const stored = await this.store.filter(userId, filterId);
    return stored === undefined ? undefined : JSON.parse(stored);
  }

  /** `raw` (a query parameter) is a filter id or an inline JSON filter. */
  async load(userId: string, raw: unknown): Promise<SyncFilter> {
    if (raw === undefined || raw === '') return {};
    if (typeof raw !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid filter');
    const inline = raw.trimStart().startsWith('{');
    const key = inline ? `{${raw}` : `${userId}|${raw}`;
    const hit = this.parsed.get(key);
    if (hit) return hit;
    let value: unknown;
    if (inline) {
      // The edge rules of bodies hold for JSON in a query parameter too (NUL would reach SQL).
      value = parseGuardedText(raw).value;
    } else {
      if (!/^\d+$/.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid filter ID');
      // Past the column's range no filter can have the id (and PostgreSQL would refuse the number).
      if (!isFilterId(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'No such filter');
      const stored = await this.store.filter(userId, raw);
      if (stored === undefined) throw new MatrixError(400, 'M_INVALID_PARAM', 'No such filter');
      value = JSON.parse(stored);
    }
    const parsed = syncFilterSchema.safeParse(value);
    if (!parsed.success) throw new MatrixError(400, 'M_BAD_JSON', 'Invalid filter');
    // Long inline filters are parsed each time rather than kept (the cache holds small keys).
    if (raw.length <= MAX_KEPT_FILTER_CHARS) this.parsed.set(key, parsed.data);
    return parsed.data;
  }
}
