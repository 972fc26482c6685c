import type { Bindings } from '../storage/db.ts';
import { z } from 'zod';
import { MatrixError } from '../http/errors.ts';

/** A RoomEventFilter (client-server spec, filtering). */
export const roomEventFilterSchema = z.object({
  limit: z.number().int().optional(),
  types: z.array(z.string()).optional(),
  not_types: z.array(z.string()).optional(),
  senders: z.array(z.string()).optional(),
  not_senders: z.array(z.string()).optional(),
  rooms: z.array(z.string()).optional(),
  not_rooms: z.array(z.string()).optional(),
  contains_url: z.boolean().optional(),
  lazy_load_members: z.boolean().optional(),
  include_redundant_members: z.boolean().optional(),
  unread_thread_notifications: z.boolean().optional(),
}).passthrough();
export type RoomEventFilter = z.infer<typeof roomEventFilterSchema>;

export function parseFilterParam(raw: unknown): RoomEventFilter {
  if (raw === undefined || raw === '') return {};
  if (typeof raw !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'filter must be a JSON object');
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new MatrixError(400, 'M_NOT_JSON', 'filter is not JSON');
  }
  const r = roomEventFilterSchema.safeParse(v);
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
  if (f.types) {
    if (f.types.length === 0) conds.push('FALSE');
    else {
      conds.push(`(${f.types.map(() => 't.type LIKE ?').join(' OR ')})`);
      params.push(...f.types.map(likePattern));
    }
  }
  for (const nt of f.not_types ?? []) {
    conds.push('t.type NOT LIKE ?');
    params.push(likePattern(nt));
  }
  if (f.senders) {
    conds.push('e.sender = ANY(?)');
    params.push(f.senders);
  }
  if (f.not_senders?.length) {
    conds.push('NOT (e.sender = ANY(?))');
    params.push(f.not_senders);
  }
  if (f.contains_url === true) conds.push("(e.json::jsonb -> 'content' ? 'url')".replace('?', '\\?'));
  if (f.contains_url === false) conds.push("NOT (e.json::jsonb -> 'content' ? 'url')".replace('?', '\\?'));
  return { sql: conds.length ? ' AND ' + conds.join(' AND ') : '', params };
}

export function roomAllowed(f: { rooms?: string[]; not_rooms?: string[] } | undefined, roomId: string): boolean {
  if (!f) return true;
  if (f.not_rooms?.includes(roomId)) return false;
  if (f.rooms && !f.rooms.includes(roomId)) return false;
  return true;
}
