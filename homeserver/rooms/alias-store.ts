import type { Db } from '../storage/db.ts';

/** Room aliases of this server: #name:server → room id. */
export class AliasStore {
  constructor(private db: Db) {}

  async resolve(alias: string): Promise<string | undefined> {
    const r = await this.db.raw('SELECT room_id FROM room_aliases WHERE alias = ?', [alias]);
    return r.rows[0]?.room_id;
  }

  /** False when the alias is taken. */
  async create(alias: string, roomId: string, creator: string): Promise<boolean> {
    const r = await this.db.raw('INSERT INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING alias', [alias, roomId, creator]);
    return r.rows.length > 0;
  }

  async get(alias: string): Promise<{ alias: string; room_id: string; creator: string } | undefined> {
    const r = await this.db.raw('SELECT alias, room_id, creator FROM room_aliases WHERE alias = ?', [alias]);
    return r.rows[0];
  }

  async delete(alias: string): Promise<void> {
    await this.db.raw('DELETE FROM room_aliases WHERE alias = ?', [alias]);
  }

  /** Points every alias of a room at its replacement (a room upgrade). */
  async moveAll(oldRoomId: string, newRoomId: string): Promise<void> {
    await this.db.raw('UPDATE room_aliases SET room_id = ? WHERE room_id = ?', [newRoomId, oldRoomId]);
  }

  async forRoom(roomId: string): Promise<string[]> {
    const r = await this.db.raw('SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias', [roomId]);
    return r.rows.map((x: { alias: string }) => x.alias);
  }
}
