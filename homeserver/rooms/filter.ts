import type { Bindings } from '../storage/db.ts';
import { z } from 'zod';
import { MatrixError } from '../http/errors.ts';
import { parseGuardedText } from '../http/json-guard.ts';

/**
 * Entries a filter's list (types, senders, rooms, …) may hold. The spec sets no bound; real
 * clients send a handful. Every event a read scans is matched against these lists, so a list of
 * 70,000 types would make each read of the room cost that much: refused with M_BAD_JSON instead.
 */
export const MAX_FILTER_LIST = 1000;

/** A list of strings in a filter, bounded by MAX_FILTER_LIST. */
export const filterList = () => z.array(z.string()).max(MAX_FILTER_LIST);

/** A RoomEventFilter (client-server spec, filtering). */
export const roomEventFilterSchema = z.object({
  limit: z.number().int().optional(),
  types: filterList().optional(),
  not_types: filterList().optional(),
  senders: filterList().optional(),
  not_senders: filterList().optional(),
  rooms: filterList().optional(),
  not_rooms: filterList().optional(),
  contains_url: z.boolean().optional(),
  lazy_load_members: z.boolean().optional(),
  include_redundant_members: z.boolean().optional(),
  unread_thread_notifications: z.boolean().optional(),
}).passthrough();
export type RoomEventFilter = z.infer<typeof roomEventFilterSchema>;

export function parseFilterParam(raw: unknown): RoomEventFilter {
  if (raw === undefined || raw === '') return {};
  if (typeof raw !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'filter must be a JSON object');
  // The edge rules of bodies hold for JSON in a query parameter too (NUL would reach SQL).
  const { value } = parseGuardedText(raw);
  const r = roomEventFilterSchema.safeParse(value);
  if (!r.success) throw new MatrixError(400, 'M_BAD_JSON', 'filter is not a valid RoomEventFilter');
  return r.data;
}

/** `m.room.*` style wildcards as SQL LIKE patterns. */
function likePattern(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c).replace(/\*/g, '%');
}

/** SQL conditions (on events `e` joined with event_types `t`) for a RoomEventFilter. */
export function filterSql(f: RoomEventFilter | undefined): { sql: string; params: Bindings } {
  const conds: string[] = [];
  const params: Bindings = [];
  if (!f) return { sql: '', params };
  // One array parameter per list, whatever its length (PostgreSQL takes at most 65,535 parameters).
  if (f.types) {
    conds.push('t.type LIKE ANY(?::text[])');
    params.push(f.types.map(likePattern));
  }
  if (f.not_types?.length) {
    conds.push('NOT (t.type LIKE ANY(?::text[]))');
    params.push(f.not_types.map(likePattern));
  }
  if (f.senders) {
    conds.push('e.sender = ANY(?)');
    params.push(f.senders);
  }
  if (f.not_senders?.length) {
    conds.push('NOT (e.sender = ANY(?))');
    params.push(f.not_senders);
  }
  // The column, set on write; rows older than it read the flag through a function that cannot
  // fail (a ::jsonb cast here made one stored event with \u0000 break the room's reads for good).
  if (f.contains_url === true) conds.push('coalesce(e.contains_url, event_contains_url(e.json))');
  if (f.contains_url === false) conds.push('NOT coalesce(e.contains_url, event_contains_url(e.json))');
  return { sql: conds.length ? ' AND ' + conds.join(' AND ') : '', params };
}

export function roomAllowed(f: { rooms?: string[]; not_rooms?: string[] } | undefined, roomId: string): boolean {
  if (!f) return true;
  if (f.not_rooms?.includes(roomId)) return false;
  if (f.rooms && !f.rooms.includes(roomId)) return false;
  return true;
}
