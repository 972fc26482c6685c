import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';

export interface ToDeviceMessage {
  userId: string;
  deviceId: string;
  /** The content as JSON text. */
  content: string;
}

export interface ToDeviceRow {
  stream_pos: number;
  sender: string;
  type: string;
  content: string;
}

/** sendToDevice transaction ids are kept this long (a client retries within minutes). */
const TXN_KEEP_MS = 24 * 3600_000;

/** Pending to-device messages (one stream position per sendToDevice) and the senders' transaction ids. */
export class ToDeviceStore {
  constructor(private db: Db, private tracker: StreamTracker) {}

  /**
   * Stores the messages of one sendToDevice at one position, unless the sending device used this
   * transaction id before. Returns the position (undefined: nothing stored) and whether the
   * transaction id was new.
   */
  async send(sender: { userId: string; deviceId: string }, txnId: string, type: string, messages: ToDeviceMessage[]): Promise<{ pos: number | undefined; fresh: boolean }> {
    const positions: number[] = [];
    let stored: number | undefined;
    let fresh = false;
    try {
      await this.db.transaction(async (trx) => {
        const inserted = await trx.raw(
          `INSERT INTO e2ee_to_device_txns (user_id, device_id, txn_id, created_ts) VALUES (?, ?, ?, ?)
           ON CONFLICT DO NOTHING RETURNING 1`,
          [sender.userId, sender.deviceId, txnId, Date.now()],
        );
        if (!inserted.rows.length) return;
        fresh = true;
        if (!messages.length) return;
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        await trx.raw(
          `INSERT INTO e2ee_to_device (user_id, device_id, stream_pos, sender, type, content)
           SELECT u, d, ?, ?, ?, c FROM unnest(?::text[], ?::text[], ?::text[]) AS x(u, d, c)`,
          [pos, sender.userId, type, messages.map((m) => m.userId), messages.map((m) => m.deviceId), messages.map((m) => m.content)],
        );
        stored = pos;
      });
    } finally {
      this.tracker.done(positions);
    }
    return { pos: stored, fresh };
  }

  /** The device has what it was sent up to `upTo`: those messages are gone. */
  async deleteUpTo(userId: string, deviceId: string, upTo: number): Promise<void> {
    await this.db.raw('DELETE FROM e2ee_to_device WHERE user_id = ? AND device_id = ? AND stream_pos <= ?', [userId, deviceId, upTo]);
  }

  /** The device's messages in (since, to], oldest first, at most `limit`. */
  async pending(userId: string, deviceId: string, since: number, to: number, limit: number): Promise<ToDeviceRow[]> {
    const r = await this.db.raw(
      `SELECT stream_pos, sender, type, content FROM e2ee_to_device
       WHERE user_id = ? AND device_id = ? AND stream_pos > ? AND stream_pos <= ?
       ORDER BY stream_pos LIMIT ?`,
      [userId, deviceId, since, to, limit],
    );
    return r.rows;
  }

  async deleteDevices(trx: Knex, userId: string, deviceIds: string[] | 'all'): Promise<void> {
    if (deviceIds === 'all') {
      await trx.raw('DELETE FROM e2ee_to_device WHERE user_id = ?', [userId]);
      await trx.raw('DELETE FROM e2ee_to_device_txns WHERE user_id = ?', [userId]);
      return;
    }
    await trx.raw('DELETE FROM e2ee_to_device WHERE user_id = ? AND device_id = ANY(?::text[])', [userId, deviceIds]);
    await trx.raw('DELETE FROM e2ee_to_device_txns WHERE user_id = ? AND device_id = ANY(?::text[])', [userId, deviceIds]);
  }

  /** Forgets transaction ids older than a day. */
  async pruneTxns(): Promise<number> {
    const r = await this.db.raw('DELETE FROM e2ee_to_device_txns WHERE created_ts < ?', [Date.now() - TXN_KEEP_MS]);
    return r.rowCount ?? 0;
  }

  transaction<T>(fn: (trx: Knex) => Promise<T>): Promise<T> {
    return this.db.transaction(fn);
  }
}
