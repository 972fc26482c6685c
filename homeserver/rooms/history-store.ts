import type { Db } from '../storage/db.ts';

/**
 * A user's membership history in a room, read from the m.room.member events themselves (the
 * events table keeps every one: membership, state key, stream position), through the index
 * events_membership_history. room_memberships keeps only the latest membership, which cannot
 * tell "left after joining" from "rejected an invite".
 */
export class MembershipHistoryStore {
  constructor(private db: Db) {}

  /** Stream position of the user's latest join event in the room; undefined if they never joined. */
  async lastJoin(roomNid: number, userId: string): Promise<number | undefined> {
    const r = await this.db.raw(
      `SELECT e.stream_pos FROM events e JOIN state_keys sk ON sk.state_key_nid = e.state_key_nid
       WHERE e.room_nid = ? AND sk.state_key = ? AND e.membership = 'join' AND NOT e.outlier AND NOT e.rejected
       ORDER BY e.stream_pos DESC LIMIT 1`,
      [roomNid, userId],
    );
    return r.rows[0] ? Number(r.rows[0].stream_pos) : undefined;
  }

  /** The user's first member event after `pos` (the end of a join): its position and state after it. */
  async memberEventAfter(roomNid: number, userId: string, pos: number): Promise<{ stream_pos: number; state_after: number } | undefined> {
    const r = await this.db.raw(
      `SELECT e.stream_pos, e.state_after FROM events e JOIN state_keys sk ON sk.state_key_nid = e.state_key_nid
       WHERE e.room_nid = ? AND sk.state_key = ? AND e.membership IS NOT NULL AND e.stream_pos > ? AND NOT e.outlier AND NOT e.rejected
       ORDER BY e.stream_pos ASC LIMIT 1`,
      [roomNid, userId, pos],
    );
    const row = r.rows[0];
    return row ? { stream_pos: Number(row.stream_pos), state_after: Number(row.state_after) } : undefined;
  }

  /** The state snapshot after the room's latest event at or before `pos`. */
  async stateGroupAt(roomNid: number, pos: number): Promise<number | undefined> {
    const r = await this.db.raw(
      'SELECT state_after FROM events WHERE room_nid = ? AND stream_pos <= ? AND NOT outlier AND NOT rejected ORDER BY stream_pos DESC LIMIT 1',
      [roomNid, pos],
    );
    return r.rows[0] ? Number(r.rows[0].state_after) : undefined;
  }
}
