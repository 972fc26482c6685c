import type { Db } from '../storage/db.ts';

/** The few reads and writes of a room upgrade that the room engine's store does not offer. */
export class UpgradeStore {
  constructor(private db: Db) {}

  /** The newest event of a room: the predecessor's "last known event". */
  async lastEventId(roomNid: number): Promise<string | undefined> {
    const r = await this.db.raw(
      'SELECT event_id FROM events WHERE room_nid = ? AND NOT outlier AND NOT rejected ORDER BY stream_pos DESC LIMIT 1',
      [roomNid],
    );
    return r.rows[0]?.event_id;
  }

  /** Points every alias of the old room at the new one. */
  async moveAliases(oldRoomId: string, newRoomId: string): Promise<void> {
    await this.db.raw('UPDATE room_aliases SET room_id = ? WHERE room_id = ?', [newRoomId, oldRoomId]);
  }

  /** Local users joined to a room. */
  async localJoined(roomNid: number, serverName: string): Promise<string[]> {
    const r = await this.db.raw(
      "SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership = 'join' AND user_id LIKE ? ESCAPE '\\' ORDER BY user_id",
      [roomNid, `%:${serverName.replace(/[\\%_]/g, (c) => '\\' + c)}`],
    );
    return r.rows.map((x: { user_id: string }) => x.user_id);
  }
}
