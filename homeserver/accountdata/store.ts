import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';

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

  /** What changed in (since, to]; everything when since is undefined. */
  async changed(userId: string, since: number | undefined, to: number): Promise<AccountDataRow[]> {
    const r = await this.db.raw(
      'SELECT room_id, type, content, stream_pos FROM account_data WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?',
      [userId, since ?? 0, to],
    );
    return r.rows;
  }
}
