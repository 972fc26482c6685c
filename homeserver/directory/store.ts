import type { Db } from '../storage/db.ts';
import { redactEvent } from '../protocol/redaction.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';

/** The state events a room's directory entry and summary are made of. */
export const SUMMARY_TYPES = [
  'm.room.create',
  'm.room.name',
  'm.room.topic',
  'm.room.avatar',
  'm.room.canonical_alias',
  'm.room.join_rules',
  'm.room.history_visibility',
  'm.room.guest_access',
  'm.room.encryption',
];

export interface RoomStats {
  room_id: string;
  room_nid: number;
  room_version: string;
  published: boolean;
  joined_members: number;
  /** Content of each summary state event (redactions applied), by type. */
  state: Map<string, Record<string, unknown>>;
}

/** What the published room directory and room summaries read: current state and member counts. */
export class DirectoryStore {
  constructor(private db: Db) {}

  /** Every published room, or one room by ID. */
  async stats(which: { published: true } | { roomId: string }): Promise<RoomStats[]> {
    const where = 'published' in which ? 'r.published' : 'r.room_id = ?';
    const params = 'published' in which ? [] : [which.roomId];
    const rooms = await this.db.raw(
      `SELECT r.room_nid, r.room_id, r.room_version, r.published,
         (SELECT count(*) FROM room_memberships m WHERE m.room_nid = r.room_nid AND m.membership = 'join') AS joined_members
       FROM rooms r WHERE ${where}`,
      params,
    );
    const out = new Map<number, RoomStats>();
    for (const row of rooms.rows as Array<{ room_nid: number; room_id: string; room_version: string; published: boolean; joined_members: number }>) {
      out.set(Number(row.room_nid), {
        room_id: row.room_id,
        room_nid: Number(row.room_nid),
        room_version: row.room_version,
        published: row.published,
        joined_members: Number(row.joined_members),
        state: new Map(),
      });
    }
    if (!out.size) return [];
    const state = await this.db.raw(
      `SELECT cs.room_nid, t.type, e.json, e.redacted_by
       FROM current_state cs
       JOIN event_types t ON t.type_nid = cs.type_nid
       JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid
       JOIN events e ON e.event_nid = cs.event_nid
       WHERE cs.room_nid = ANY(?) AND sk.state_key = '' AND t.type = ANY(?)`,
      [[...out.keys()], SUMMARY_TYPES],
    );
    for (const row of state.rows as Array<{ room_nid: number; type: string; json: string; redacted_by: string | null }>) {
      const stats = out.get(Number(row.room_nid))!;
      let pdu = JSON.parse(row.json) as Record<string, unknown>;
      if (row.redacted_by) pdu = redactEvent(pdu, getRoomVersion(stats.room_version) ?? getRoomVersion('10')!);
      stats.state.set(row.type, (pdu.content as Record<string, unknown>) ?? {});
    }
    return [...out.values()];
  }
}
