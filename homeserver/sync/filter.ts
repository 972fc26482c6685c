import { z } from 'zod';
import { MatrixError } from '../http/errors.ts';
import { roomEventFilterSchema } from '../rooms/filter.ts';
import type { Db } from '../storage/db.ts';

const eventFilter = z.object({
  limit: z.number().int().optional(),
  types: z.array(z.string()).optional(),
  not_types: z.array(z.string()).optional(),
  senders: z.array(z.string()).optional(),
  not_senders: z.array(z.string()).optional(),
}).passthrough();

/** The sync Filter of the client-server spec. */
export const syncFilterSchema = z.object({
  event_fields: z.array(z.string()).optional(),
  event_format: z.enum(['client', 'federation']).optional(),
  presence: eventFilter.optional(),
  account_data: eventFilter.optional(),
  room: z.object({
    rooms: z.array(z.string()).optional(),
    not_rooms: z.array(z.string()).optional(),
    include_leave: z.boolean().optional(),
    timeline: roomEventFilterSchema.optional(),
    state: roomEventFilterSchema.optional(),
    ephemeral: roomEventFilterSchema.optional(),
    account_data: roomEventFilterSchema.optional(),
  }).passthrough().optional(),
}).passthrough();
export type SyncFilter = z.infer<typeof syncFilterSchema>;

/** `filter` is a filter id or an inline JSON filter. */
export async function loadSyncFilter(db: Db, userId: string, raw: unknown): Promise<SyncFilter> {
  if (raw === undefined || raw === '') return {};
  if (typeof raw !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid filter');
  let value: unknown;
  if (raw.trimStart().startsWith('{')) {
    try {
      value = JSON.parse(raw);
    } catch {
      throw new MatrixError(400, 'M_NOT_JSON', 'filter is not JSON');
    }
  } else {
    if (!/^\d+$/.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid filter ID');
    const r = await db.raw('SELECT filter FROM filters WHERE user_id = ? AND filter_id = ?', [userId, Number(raw)]);
    if (!r.rows[0]) throw new MatrixError(400, 'M_INVALID_PARAM', 'No such filter');
    value = JSON.parse(r.rows[0].filter);
  }
  const parsed = syncFilterSchema.safeParse(value);
  if (!parsed.success) throw new MatrixError(400, 'M_BAD_JSON', 'Invalid filter');
  return parsed.data;
}
