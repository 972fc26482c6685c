import type { Db } from '../storage/db.ts';

/**
 * Who shares a room with whom, for presence and typing (which reach only room-mates): the joined
 * members of some rooms, read in one statement. Offered to those capabilities through RoomReader.
 */
export class SharedRoomsStore {
  constructor(private db: Db) {}

  /** The users joined to each of these rooms (rooms without members are absent). */
  async joinedMembers(roomIds: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (!roomIds.length) return out;
    const r = await this.db.raw(
      `SELECT r.room_id, m.user_id FROM rooms r JOIN room_memberships m ON m.room_nid = r.room_nid
       WHERE r.room_id = ANY(?::text[]) AND m.membership = 'join'`,
      [roomIds],
    );
    for (const row of r.rows as Array<{ room_id: string; user_id: string }>) {
      const list = out.get(row.room_id);
      if (list) list.push(row.user_id);
      else out.set(row.room_id, [row.user_id]);
    }
    return out;
  }
}
