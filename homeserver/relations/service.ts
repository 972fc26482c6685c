import { forbidden, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import type { ClientEvent, RoomReader, RoomRow } from '../rooms/reader.ts';
import { posToken } from '../storage/stream-token.ts';

/** How many hops `recurse=true` follows (the spec asks for at least 3). */
export const MAX_RECURSION = 3;

export interface RelationsQuery {
  relType?: string;
  eventType?: string;
  from?: number;
  to?: number;
  dir: 'b' | 'f';
  limit: number;
  recurse?: boolean;
}

/** Child events of an event (GET /relations) and the thread roots of a room (GET /threads). */
export class RelationsService {
  constructor(private reader: RoomReader, private current: () => number) {}

  async relations(me: Requester, roomId: string, eventId: string, q: RelationsQuery): Promise<Record<string, unknown>> {
    const room = await this.reader.roomMeta(roomId);
    // An unknown room, an unknown event and an event the user may not see all look the same.
    if (!room) throw notFound('Event not found.');
    const m = await this.reader.membership(me.userId, room.room_nid);
    const parent = await this.reader.eventById(eventId);
    if (!parent || parent.room_id !== roomId || !(await this.reader.visibility.filter([parent], me.userId, m)).length) {
      throw notFound('Event not found.');
    }
    // Visibility decides event by event (a user who left may still see world_readable events).
    const ceiling = this.current();
    const depth = q.recurse ? MAX_RECURSION : 1;
    const rows = await this.reader.relationChildren({
      roomNid: room.room_nid,
      eventId,
      relType: q.relType,
      eventType: q.eventType,
      depth,
      dir: q.dir,
      from: q.from ?? (q.dir === 'b' ? ceiling : 0),
      to: q.to,
      ceiling,
      limit: q.limit + 1,
    });
    const page = rows.slice(0, q.limit);
    const visible = await this.reader.visibility.filter(page, me.userId, m);
    const out: Record<string, unknown> = {
      chunk: await this.reader.format(visible, { userId: me.userId, deviceId: me.deviceId, aggregations: true }),
    };
    if (rows.length > q.limit && page.length) {
      const last = Number(page[page.length - 1]!.stream_pos);
      out.next_batch = posToken(q.dir === 'b' ? last - 1 : last);
    }
    if (q.from !== undefined) out.prev_batch = posToken(q.from);
    if (q.recurse !== undefined) out.recursion_depth = depth;
    return out;
  }

  async threads(me: Requester, roomId: string, opts: { include: 'all' | 'participated'; from?: number; limit: number }): Promise<{ chunk: ClientEvent[]; next_batch?: string }> {
    const room: RoomRow | undefined = await this.reader.roomMeta(roomId);
    if (!room) throw forbidden(`User ${me.userId} not in room ${roomId}, or room does not exist`);
    const m = await this.reader.membership(me.userId, room.room_nid);
    if (!m && !(await this.reader.visibility.worldReadable(room.room_nid))) throw forbidden(`User ${me.userId} not in room ${roomId}`);
    const found = await this.reader.threadRoots({
      roomNid: room.room_nid,
      before: opts.from,
      ceiling: this.current(),
      participant: opts.include === 'participated' ? me.userId : undefined,
      limit: opts.limit + 1,
    });
    const page = found.slice(0, opts.limit);
    const visible = await this.reader.visibility.filter(page.map((t) => t.root), me.userId, m);
    const out: { chunk: ClientEvent[]; next_batch?: string } = {
      chunk: await this.reader.format(visible, { userId: me.userId, deviceId: me.deviceId, aggregations: true }),
    };
    if (found.length > opts.limit && page.length) out.next_batch = posToken(page[page.length - 1]!.latest);
    return out;
  }
}
