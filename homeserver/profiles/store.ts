import type { Db } from '../storage/db.ts';
import type { Profile } from '../rooms/service.ts';

export class ProfileStore {
  constructor(private db: Db) {}

  async get(userId: string): Promise<Profile | undefined> {
    const r = await this.db.raw(
      'SELECT p.displayname, p.avatar_url FROM profiles p JOIN users u ON u.user_id = p.user_id WHERE p.user_id = ? AND NOT u.deactivated',
      [userId],
    );
    return r.rows[0];
  }

  async set(userId: string, field: 'displayname' | 'avatar_url', value: string | null): Promise<void> {
    await this.db.raw(`UPDATE profiles SET ${field} = ? WHERE user_id = ?`, [value, userId]);
  }

  /** User directory: users who share a room with the searcher or are in a public room, as Synapse does by default. */
  async search(searcher: string, term: string, limit: number): Promise<{ results: Array<{ user_id: string; display_name?: string; avatar_url?: string }>; limited: boolean }> {
    const like = `%${term.replace(/[\\%_]/g, (c) => '\\' + c)}%`;
    const r = await this.db.raw(
      `SELECT p.user_id, p.displayname, p.avatar_url FROM profiles p JOIN users u ON u.user_id = p.user_id
       WHERE NOT u.deactivated AND (p.user_id ILIKE ? OR p.displayname ILIKE ?)
         AND (p.user_id = ? OR EXISTS (
           SELECT 1 FROM room_memberships a JOIN room_memberships b ON a.room_nid = b.room_nid
           WHERE a.user_id = p.user_id AND a.membership = 'join' AND b.user_id = ? AND b.membership = 'join')
         OR EXISTS (
           SELECT 1 FROM room_memberships a JOIN rooms r ON r.room_nid = a.room_nid
           WHERE a.user_id = p.user_id AND a.membership = 'join' AND r.published))
       ORDER BY (p.displayname ILIKE ?) DESC, p.user_id LIMIT ?`,
      [like, like, searcher, searcher, `${term.replace(/[\\%_]/g, (c) => '\\' + c)}%`, limit + 1],
    );
    const rows = r.rows as Array<{ user_id: string; displayname: string | null; avatar_url: string | null }>;
    return {
      limited: rows.length > limit,
      results: rows.slice(0, limit).map((x) => ({
        user_id: x.user_id,
        ...(x.displayname ? { display_name: x.displayname } : {}),
        ...(x.avatar_url ? { avatar_url: x.avatar_url } : {}),
      })),
    };
  }
}
