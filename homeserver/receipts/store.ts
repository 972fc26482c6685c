import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';

export interface ReceiptRow {
  room_id: string;
  user_id: string;
  receipt_type: string;
  thread_id: string;
  event_id: string;
  event_pos: number;
  ts: number;
  stream_pos: number;
}

export interface NewReceipt {
  roomId: string;
  userId: string;
  type: string;
  /** '' for an unthreaded receipt. */
  threadId: string;
  eventId: string;
  eventPos: number;
  ts: number;
}

/** Receipts of the user's rooms an initial /sync shows per room at most (the newest). */
const INITIAL_PER_ROOM = 100;

/** The receipts table: the latest receipt per (room, user, type, thread); positions from the event stream. */
export class ReceiptStore {
  constructor(private db: Db, private tracker: StreamTracker) {}

  /**
   * Stores a receipt unless the stored one is for a later (or the same) event. Returns the stream
   * position of the change, or undefined when nothing moved. The caller notifies.
   */
  async put(r: NewReceipt): Promise<number | undefined> {
    const positions: number[] = [];
    let moved = false;
    try {
      await this.db.transaction(async (trx) => {
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        const res = await trx.raw(
          `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET
             event_id = EXCLUDED.event_id, event_pos = EXCLUDED.event_pos, ts = EXCLUDED.ts, stream_pos = EXCLUDED.stream_pos
           WHERE receipts.event_pos < EXCLUDED.event_pos
           RETURNING 1`,
          [r.roomId, r.userId, r.type, r.threadId, r.eventId, r.eventPos, r.ts, pos],
        );
        moved = res.rows.length > 0;
      });
    } finally {
      this.tracker.done(positions);
    }
    return moved ? positions[0] : undefined;
  }

  /**
   * Receipts of these rooms changed in (since, to], or (since undefined) the newest of each room;
   * private receipts only the viewer's own.
   */
  async changed(roomIds: string[], viewer: string, since: number | undefined, to: number): Promise<ReceiptRow[]> {
    if (!roomIds.length) return [];
    if (since === undefined) {
      const r = await this.db.raw(
        `SELECT x.* FROM unnest(?::text[]) AS room(id)
         CROSS JOIN LATERAL (SELECT * FROM receipts r
           WHERE r.room_id = room.id AND r.stream_pos <= ? AND (r.receipt_type <> 'm.read.private' OR r.user_id = ?)
           ORDER BY r.stream_pos DESC LIMIT ?) AS x`,
        [roomIds, to, viewer, INITIAL_PER_ROOM],
      );
      return r.rows;
    }
    const r = await this.db.raw(
      `SELECT * FROM receipts
       WHERE room_id = ANY(?::text[]) AND stream_pos > ? AND stream_pos <= ? AND (receipt_type <> 'm.read.private' OR user_id = ?)`,
      [roomIds, since, to, viewer],
    );
    return r.rows;
  }

  /**
   * Where the user has read up to in these rooms (m.read or m.read.private, whichever is later):
   * per room unthreaded, and per (room, thread) threaded.
   */
  async readUpTo(userId: string, roomIds: string[]): Promise<Array<{ room_id: string; thread_id: string; event_pos: number }>> {
    if (!roomIds.length) return [];
    const r = await this.db.raw(
      `SELECT room_id, thread_id, max(event_pos) AS event_pos FROM receipts
       WHERE room_id = ANY(?::text[]) AND user_id = ? AND receipt_type IN ('m.read', 'm.read.private')
       GROUP BY room_id, thread_id`,
      [roomIds, userId],
    );
    return r.rows.map((x: { room_id: string; thread_id: string; event_pos: number }) => ({ ...x, event_pos: Number(x.event_pos) }));
  }

  /** readUpTo for many users at once: (user, room) pairs in, one statement. */
  async readUpToMany(userIds: string[], roomIds: string[]): Promise<Array<{ user_id: string; room_id: string; thread_id: string; event_pos: number }>> {
    if (!userIds.length) return [];
    const r = await this.db.raw(
      `SELECT r.user_id, r.room_id, r.thread_id, max(r.event_pos) AS event_pos
       FROM unnest(?::text[], ?::text[]) AS p(user_id, room_id)
       JOIN receipts r ON r.room_id = p.room_id AND r.user_id = p.user_id
       WHERE r.receipt_type IN ('m.read', 'm.read.private')
       GROUP BY r.user_id, r.room_id, r.thread_id`,
      [userIds, roomIds],
    );
    return r.rows.map((x: { user_id: string; room_id: string; thread_id: string; event_pos: number }) => ({ ...x, event_pos: Number(x.event_pos) }));
  }

  /** issue 9 (mod9): a purged room's receipts go with it. */
  async deleteRoom(roomId: string): Promise<number> {
    const r = await this.db.raw('DELETE FROM receipts WHERE room_id = ?', [roomId]);
    return (r as unknown as { rowCount: number }).rowCount;
  }
}
