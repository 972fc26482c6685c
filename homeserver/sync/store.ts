import type { Db } from '../storage/db.ts';

/** The filters clients upload for /sync and /messages: sync's own table. */
export class SyncStore {
  constructor(private db: Db) {}

  /** Stores a filter (JSON text); its new id. */
  async insertFilter(userId: string, filterJson: string): Promise<string> {
    const r = await this.db.raw('INSERT INTO filters (user_id, filter) VALUES (?, ?) RETURNING filter_id', [userId, filterJson]);
    return String(r.rows[0].filter_id);
  }

  /** A user's filter as stored (JSON text), or undefined. `filterId`: digits within BIGINT. */
  async filter(userId: string, filterId: string): Promise<string | undefined> {
    const r = await this.db.raw('SELECT filter FROM filters WHERE user_id = ? AND filter_id = ?', [userId, filterId]);
    return r.rows[0]?.filter;
  }
}
