import type { Db } from '../storage/db.ts';

/** A membership change read for device-list tracking: who, in which room, to what. */
export interface MembershipChange {
  room_id: string;
  user_id: string;
  membership: string;
}

/**
 * Who joined or left which rooms between two positions, and who shares a room with whom: what
 * end-to-end encryption needs to tell a user whose device lists to fetch again (or stop tracking).
 * Offered to e2ee through RoomReader.
 */
export class MembershipChangesStore {
  constructor(private db: Db) {}

  /** The user's own membership changes in (since, to] (their latest membership of each room moved). */
  async ownChanges(userId: string, since: number, to: number): Promise<MembershipChange[]> {
    const r = await this.db.raw(
      `SELECT r.room_id, m.user_id, m.membership FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid
       WHERE m.user_id = ? AND m.stream_pos > ? AND m.stream_pos <= ?`,
      [userId, since, to],
    );
    return r.rows;
  }

  /** Member events of these rooms in (since, to], oldest first. */
  async memberEvents(roomIds: string[], since: number, to: number): Promise<MembershipChange[]> {
    if (!roomIds.length) return [];
    const r = await this.db.raw(
      `SELECT r.room_id, sk.state_key AS user_id, e.membership
       FROM rooms r
       JOIN events e ON e.room_nid = r.room_nid AND e.stream_pos > ? AND e.stream_pos <= ?
       JOIN state_keys sk ON sk.state_key_nid = e.state_key_nid
       WHERE r.room_id = ANY(?::text[]) AND e.membership IS NOT NULL AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed
       ORDER BY e.stream_pos`,
      [since, to, roomIds],
    );
    return r.rows;
  }

  /** Which of these users are joined to a room `userId` is joined to (the user counts when joined anywhere). */
  async sharingARoom(userId: string, candidates: string[]): Promise<Set<string>> {
    if (!candidates.length) return new Set();
    const r = await this.db.raw(
      `SELECT DISTINCT other.user_id FROM room_memberships mine
       JOIN room_memberships other ON other.room_nid = mine.room_nid AND other.membership = 'join'
       WHERE mine.user_id = ? AND mine.membership = 'join' AND other.user_id = ANY(?::text[])`,
      [userId, candidates],
    );
    return new Set(r.rows.map((x: { user_id: string }) => x.user_id));
  }
}
