import type { Db } from '../storage/db.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow } from './store.ts';

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
       WHERE e.room_nid = ? AND sk.state_key = ? AND e.membership = 'join' AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed
       ORDER BY e.stream_pos DESC LIMIT 1`,
      [roomNid, userId],
    );
    return r.rows[0] ? Number(r.rows[0].stream_pos) : undefined;
  }

  /** The user's first member event after `pos` (the end of a join): its position and state after it. */
  async memberEventAfter(roomNid: number, userId: string, pos: number): Promise<{ stream_pos: number; state_after: number } | undefined> {
    const r = await this.db.raw(
      `SELECT e.stream_pos, e.state_after FROM events e JOIN state_keys sk ON sk.state_key_nid = e.state_key_nid
       WHERE e.room_nid = ? AND sk.state_key = ? AND e.membership IS NOT NULL AND e.stream_pos > ? AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed
       ORDER BY e.stream_pos ASC LIMIT 1`,
      [roomNid, userId, pos],
    );
    const row = r.rows[0];
    return row ? { stream_pos: Number(row.stream_pos), state_after: Number(row.state_after) } : undefined;
  }

  /** The state snapshot after the room's latest event at or before `pos`. */
  async stateGroupAt(roomNid: number, pos: number): Promise<number | undefined> {
    const r = await this.db.raw(
      'SELECT state_after FROM events WHERE room_nid = ? AND stream_pos <= ? AND NOT outlier AND NOT rejected AND NOT soft_failed ORDER BY stream_pos DESC LIMIT 1',
      [roomNid, pos],
    );
    return r.rows[0] ? Number(r.rows[0].state_after) : undefined;
  }

  /**
   * For each (snapshot, user) asked: the snapshot's m.room.history_visibility and the user's member
   * event in it, for all of them in one statement (every delta chain walked at once, each probed
   * by primary key). Rows carry `state_root`, the snapshot asked for.
   */
  async visibilityAt(groups: number[], users: string[]): Promise<Array<EventRow & { state_root: number }>> {
    if (!groups.length) return [];
    const r = await this.db.raw(
      `WITH RECURSIVE want(root, user_id) AS (SELECT * FROM unnest(?::bigint[], ?::text[])),
       roots AS (SELECT DISTINCT root FROM want),
       chain(root, state_group, prev_group, n) AS (
         SELECT g.state_group, g.state_group, g.prev_group, 0 FROM state_groups g WHERE g.state_group IN (SELECT root FROM roots)
         UNION ALL
         SELECT c.root, g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group
       ),
       keys(root, type_nid, state_key_nid) AS (
         SELECT w.root, t.type_nid, sk.state_key_nid FROM want w
           JOIN event_types t ON t.type = 'm.room.member' JOIN state_keys sk ON sk.state_key = w.user_id
         UNION ALL
         SELECT r.root, t.type_nid, sk.state_key_nid FROM roots r
           JOIN event_types t ON t.type = 'm.room.history_visibility' JOIN state_keys sk ON sk.state_key = ''
       ),
       entries AS (
         SELECT DISTINCT ON (c.root, se.type_nid, se.state_key_nid) c.root, se.event_nid
         FROM chain c JOIN state_group_entries se ON se.state_group = c.state_group
         WHERE (c.root, se.type_nid, se.state_key_nid) IN (SELECT root, type_nid, state_key_nid FROM keys)
         ORDER BY c.root, se.type_nid, se.state_key_nid, c.n
       )
       SELECT en.root AS state_root, ${EVENT_COLUMNS} FROM entries en JOIN events e ON e.event_nid = en.event_nid ${EVENT_JOINS}`,
      [groups, users],
    );
    return r.rows as Array<EventRow & { state_root: number }>;
  }
}
