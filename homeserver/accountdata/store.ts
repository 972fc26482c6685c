import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';

/** Advisory lock class of account data read-modify-writes (the second key hashes the entry). */
const ACCOUNT_DATA_LOCK = 7271100;

export interface AccountDataRow {
  room_id: string;
  type: string;
  content: string;
  stream_pos: number;
}

/** Account data, global (room '') and per room; each write takes a stream position and wakes /sync. */
export class AccountDataStore {
  constructor(private db: Db, private tracker: StreamTracker, private notifier: Notifier) {}

  async get(userId: string, roomId: string, type: string): Promise<Record<string, unknown> | undefined> {
    const r = await this.db.raw('SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?', [userId, roomId, type]);
    return r.rows[0] ? JSON.parse(r.rows[0].content) : undefined;
  }

  /** Sets one entry (an update that ignores what was there). */
  async put(userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<void> {
    await this.update(userId, roomId, type, () => content);
  }

  /**
   * Read-modify-write of one entry, all on the one connection of one transaction that holds the
   * entry's advisory lock (so concurrent writers, on any worker, take turns and never hold a pooled
   * connection while waiting for another). `change` gets the current content (undefined when
   * absent) and returns the new content, or undefined to leave it as it is. Returns the content now
   * stored.
   */
  async update(
    userId: string, roomId: string, type: string,
    change: (current: Record<string, unknown> | undefined) => Record<string, unknown> | undefined,
  ): Promise<Record<string, unknown> | undefined> {
    const positions: number[] = [];
    let result: Record<string, unknown> | undefined;
    try {
      await this.db.transaction(async (trx) => {
        await trx.raw('SELECT pg_advisory_xact_lock(?, hashtext(?))', [ACCOUNT_DATA_LOCK, `${userId}\n${roomId}\n${type}`]);
        const r = await trx.raw('SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?', [userId, roomId, type]);
        const current = r.rows[0] ? (JSON.parse(r.rows[0].content) as Record<string, unknown>) : undefined;
        const next = change(current);
        result = next ?? current;
        if (next === undefined) return;
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        await trx.raw(
          `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content, stream_pos = EXCLUDED.stream_pos`,
          [userId, roomId, type, JSON.stringify(next), pos],
        );
      });
    } finally {
      this.tracker.done(positions);
    }
    const pos = positions[0];
    if (pos !== undefined) this.tracker.whenVisible(pos, () => this.notifier.notify('accountData', [userId], pos));
    return result;
  }

  /**
   * A room upgrade, for all these members at once (a set-based write at one stream position, not
   * a read and a write per member): their tags of the old room are merged into the new room's,
   * and every m.direct list that names the old room names the new one too.
   */
  async copyToUpgradedRoom(userIds: string[], oldRoomId: string, newRoomId: string): Promise<void> {
    if (!userIds.length) return;
    const positions: number[] = [];
    const touched = new Set<string>();
    try {
      await this.db.transaction(async (trx) => {
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        const tags = await trx.raw(
          `INSERT INTO account_data (user_id, room_id, type, content, stream_pos)
           SELECT a.user_id, ?, 'm.tag', jsonb_build_object('tags', jsonb_or_null(a.content) -> 'tags')::text, ?
           FROM account_data a
           WHERE a.user_id = ANY(?) AND a.room_id = ? AND a.type = 'm.tag'
             AND jsonb_typeof(jsonb_or_null(a.content) -> 'tags') = 'object' AND jsonb_or_null(a.content) -> 'tags' <> '{}'::jsonb
           ON CONFLICT (user_id, room_id, type) DO UPDATE SET
             content = jsonb_build_object('tags',
               (CASE WHEN jsonb_typeof(jsonb_or_null(account_data.content) -> 'tags') = 'object' THEN jsonb_or_null(account_data.content) -> 'tags' ELSE '{}'::jsonb END)
               || (jsonb_or_null(EXCLUDED.content) -> 'tags'))::text,
             stream_pos = EXCLUDED.stream_pos
           RETURNING user_id`,
          [newRoomId, pos, userIds, oldRoomId],
        );
        const lists = (j: string) => `jsonb_each(CASE WHEN jsonb_typeof(jsonb_or_null(${j})) = 'object' THEN jsonb_or_null(${j}) ELSE '{}'::jsonb END)`;
        const names = "jsonb_typeof(v) = 'array' AND v @> to_jsonb(?::text) AND NOT v @> to_jsonb(?::text)";
        const direct = await trx.raw(
          `UPDATE account_data a SET
             content = (SELECT jsonb_object_agg(k, CASE WHEN ${names} THEN v || to_jsonb(?::text) ELSE v END) FROM ${lists('a.content')} AS x(k, v))::text,
             stream_pos = ?
           WHERE a.user_id = ANY(?) AND a.room_id = '' AND a.type = 'm.direct'
             AND EXISTS (SELECT 1 FROM ${lists('a.content')} AS x(k, v) WHERE ${names})
           RETURNING user_id`,
          [oldRoomId, newRoomId, newRoomId, pos, userIds, oldRoomId, newRoomId],
        );
        for (const r of [...tags.rows, ...direct.rows] as Array<{ user_id: string }>) touched.add(r.user_id);
      });
    } finally {
      this.tracker.done(positions);
    }
    const pos = positions[0]!;
    if (touched.size) this.tracker.whenVisible(pos, () => this.notifier.notify('accountData', [...touched], pos));
  }

  /** Which of these users have an entry of this type (global) whose JSON mentions `text`. */
  async usersMentioning(userIds: string[], type: string, text: string): Promise<string[]> {
    if (!userIds.length) return [];
    const r = await this.db.raw(
      "SELECT user_id FROM account_data WHERE user_id = ANY(?) AND room_id = '' AND type = ? AND strpos(content, ?) > 0",
      [userIds, type, text],
    );
    return r.rows.map((x: { user_id: string }) => x.user_id);
  }

  /** What changed in (since, to]; everything when since is undefined. */
  async changed(userId: string, since: number | undefined, to: number): Promise<AccountDataRow[]> {
    const r = await this.db.raw(
      'SELECT room_id, type, content, stream_pos FROM account_data WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?',
      [userId, since ?? 0, to],
    );
    return r.rows;
  }
}
