import { forbidden, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import type { RoomReader } from '../rooms/reader.ts';

const BATCH = 50;
/** How many events are looked at past ones the user may not see before giving up. */
const MAX_SCANNED = 1000;

/** GET /rooms/{roomId}/timestamp_to_event: the event closest to a time, in one direction. */
export class TimestampService {
  constructor(private reader: RoomReader) {}

  async closest(me: Requester, roomId: string, ts: number, dir: 'f' | 'b'): Promise<{ event_id: string; origin_server_ts: number }> {
    const room = await this.reader.roomMeta(roomId);
    if (!room) throw forbidden(`User ${me.userId} not in room ${roomId}, or room does not exist`);
    const m = await this.reader.membership(me.userId, room.room_nid);
    // As /messages: anyone with a membership of the room, or anyone when it is world-readable;
    // which events they may find is decided event by event (Visibility).
    if (!m && !(await this.reader.visibility.worldReadable(room.room_nid))) {
      throw forbidden(`User ${me.userId} not in room ${roomId}, and room previews are disabled`);
    }
    let after: { ts: number; pos: number } | undefined;
    for (let scanned = 0; scanned < MAX_SCANNED; scanned += BATCH) {
      const rows = await this.reader.eventsAroundTimestamp(room.room_nid, ts, dir, BATCH, after);
      const visible = await this.reader.visibility.filter(rows, me.userId, m);
      if (visible.length) return { event_id: visible[0]!.event_id, origin_server_ts: Number(visible[0]!.origin_server_ts) };
      if (rows.length < BATCH) break;
      const last = rows[rows.length - 1]!;
      after = { ts: Number(last.origin_server_ts), pos: Number(last.stream_pos) };
    }
    throw notFound(`Unable to find event from ${ts} in direction ${dir === 'f' ? 'forward' : 'backward'}`);
  }
}
