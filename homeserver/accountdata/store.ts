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

  async put(userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<void> {
    const positions: number[] = [];
    try {
      await this.db.transaction(async (trx) => {
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        await trx.raw(
          `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content, stream_pos = EXCLUDED.stream_pos`,
          [userId, roomId, type, JSON.stringify(content), pos],
        );
      });
    } finally {
      this.tracker.done(positions);
    }
    const pos = positions[0]!;
    this.tracker.whenVisible(pos, () => this.notifier.notify([userId], pos));
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
    if (pos !== undefined) this.tracker.whenVisible(pos, () => this.notifier.notify([userId], pos));
    return result;
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
