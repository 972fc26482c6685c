import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';

/** Advisory lock class of friend writes: a pair of users changes one write at a time. */
const FRIENDS_LOCK = 7271300;

export type LinkState = 'friend' | 'outgoing' | 'incoming' | 'none';

export interface LinkRow {
  user_id: string;
  other_id: string;
  state: LinkState;
  blocked: boolean;
  message: string | null;
  updated_ts: number;
  stream_pos: number;
}

/** One side's new row in a change of a pair (undefined: that side's row stays as it is). */
export interface LinkWrite {
  state: LinkState;
  blocked?: boolean;
  message?: string | null;
}

/**
 * The friends tables. Every change takes a position of the account data stream (friends are
 * per-user private state, as account data is, and ride on its stream: no new part in the sync token)
 * and wakes the /sync of each user whose row changed.
 */
export class FriendStore {
  constructor(private db: Db, private tracker: StreamTracker, private notifier: Notifier) {}

  async link(userId: string, otherId: string): Promise<LinkRow | undefined> {
    const r = await this.db.raw('SELECT * FROM friend_links WHERE user_id = ? AND other_id = ?', [userId, otherId]);
    return r.rows[0] as LinkRow | undefined;
  }

  /** The user's rows that say something (not 'none' unless blocked). */
  async list(userId: string): Promise<LinkRow[]> {
    const r = await this.db.raw("SELECT * FROM friend_links WHERE user_id = ? AND (state <> 'none' OR blocked) ORDER BY other_id", [userId]);
    return r.rows as LinkRow[];
  }

  /** Rows of the user changed in (since, to]. */
  async changed(userId: string, since: number, to: number): Promise<LinkRow[]> {
    const r = await this.db.raw('SELECT * FROM friend_links WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos', [userId, since, to]);
    return r.rows as LinkRow[];
  }

  async settingsChangedSince(userId: string, since: number, to: number): Promise<boolean> {
    const r = await this.db.raw('SELECT 1 FROM friend_settings WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?', [userId, since, to]);
    return r.rows.length > 0;
  }

  async onlyFriendsDm(userId: string): Promise<boolean> {
    const r = await this.db.raw('SELECT only_friends_dm FROM friend_settings WHERE user_id = ?', [userId]);
    return !!r.rows[0]?.only_friends_dm;
  }

  async setOnlyFriendsDm(userId: string, value: boolean): Promise<void> {
    const positions: number[] = [];
    try {
      await this.db.transaction(async (trx) => {
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        await trx.raw(
          `INSERT INTO friend_settings (user_id, only_friends_dm, stream_pos) VALUES (?, ?, ?)
           ON CONFLICT (user_id) DO UPDATE SET only_friends_dm = EXCLUDED.only_friends_dm, stream_pos = EXCLUDED.stream_pos`,
          [userId, value, pos],
        );
      });
    } finally {
      this.tracker.done(positions);
    }
    const pos = positions[0];
    if (pos !== undefined) this.tracker.whenVisible(pos, () => this.notifier.notify('accountData', [userId], pos));
  }

  /**
   * Read-modify-write of a pair under the pair's advisory lock, in one transaction: `decide` gets
   * both sides' rows and returns the new rows of each side (or throws a MatrixError: nothing
   * changes). `inTransaction` runs in the same transaction after `decide`. Returns what `decide` returned.
   */
  async change<T extends { mine?: LinkWrite; theirs?: LinkWrite }>(
    userId: string, otherId: string,
    decide: (mine: LinkRow | undefined, theirs: LinkRow | undefined) => T,
    inTransaction?: (trx: Db, result: T) => Promise<void>,
  ): Promise<T> {
    const positions: number[] = [];
    const woken: string[] = [];
    let result: T | undefined;
    try {
      await this.db.transaction(async (trx) => {
        const pair = [userId, otherId].sort().join('\n');
        await trx.raw('SELECT pg_advisory_xact_lock(?, hashtext(?))', [FRIENDS_LOCK, pair]);
        const rows = (await trx.raw('SELECT * FROM friend_links WHERE (user_id = ? AND other_id = ?) OR (user_id = ? AND other_id = ?)', [userId, otherId, otherId, userId])).rows as LinkRow[];
        const mine = rows.find((r) => r.user_id === userId);
        const theirs = rows.find((r) => r.user_id === otherId);
        result = decide(mine, theirs);
        // What must commit with the change (the EDU to a remote user's server).
        if (inTransaction) await inTransaction(trx, result);
        const writes: Array<[string, string, LinkWrite, LinkRow | undefined]> = [];
        if (result.mine) writes.push([userId, otherId, result.mine, mine]);
        if (result.theirs) writes.push([otherId, userId, result.theirs, theirs]);
        if (!writes.length) return;
        const pos = await this.tracker.allocate(trx);
        positions.push(pos);
        const now = Date.now();
        for (const [u, o, w, before] of writes) {
          await trx.raw(
            `INSERT INTO friend_links (user_id, other_id, state, blocked, message, updated_ts, stream_pos) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (user_id, other_id) DO UPDATE SET state = EXCLUDED.state, blocked = EXCLUDED.blocked,
               message = EXCLUDED.message, updated_ts = EXCLUDED.updated_ts, stream_pos = EXCLUDED.stream_pos`,
            [u, o, w.state, w.blocked ?? before?.blocked ?? false, w.message === undefined ? (before?.message ?? null) : w.message, now, pos],
          );
          woken.push(u);
        }
      });
    } finally {
      this.tracker.done(positions);
    }
    const pos = positions[0];
    if (pos !== undefined) this.tracker.whenVisible(pos, () => this.notifier.notify('accountData', woken, pos));
    return result!;
  }
}
