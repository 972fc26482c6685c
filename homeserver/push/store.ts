import type { Bindings, Db } from '../storage/db.ts';

/** One notifying push action: a user, an event, its thread, whether it highlights. */
export interface ActionRow {
  userId: string;
  streamPos: number;
  roomId: string;
  eventId: string;
  threadId: string;
  highlight: boolean;
  /** JSON of the actions, or null for ["notify"]. */
  actions: string | null;
  ts: number;
  /** Counts in the room's unread counts (false for the invitee's own invite). */
  unread: boolean;
}

export interface StoredAction {
  user_id: string;
  stream_pos: number;
  room_id: string;
  event_id: string;
  thread_id: string;
  highlight: boolean;
  actions: string | null;
  ts: number;
}

/** The SQL of event_push_actions and push_progress (migration 008). */
export class PushStore {
  constructor(private db: Db) {}

  /** Every action of a batch of events in one statement; an action already there stays (catch-up is idempotent). */
  async insertActions(rows: ActionRow[]): Promise<void> {
    if (!rows.length) return;
    const col = <K extends keyof ActionRow>(k: K) => rows.map((r) => r[k]);
    await this.db.raw(
      `INSERT INTO event_push_actions (user_id, stream_pos, room_id, event_id, thread_id, highlight, actions, ts, unread)
       SELECT * FROM unnest(?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::boolean[], ?::text[], ?::bigint[], ?::boolean[])
       ON CONFLICT (user_id, stream_pos) DO NOTHING`,
      [col('userId'), col('streamPos'), col('roomId'), col('eventId'), col('threadId'), col('highlight'), col('actions'), col('ts'), col('unread')] as Bindings,
    );
  }

  /**
   * Unread counts per (room, thread): the user's actions after their read position, where an
   * action's read position is the later of the room's unthreaded one and its thread's.
   */
  async counts(
    userId: string,
    rooms: { ids: string[]; upto: number[] },
    threads: { rooms: string[]; ids: string[]; upto: number[] },
  ): Promise<Array<{ room_id: string; thread_id: string; n: number; h: number }>> {
    if (!rooms.ids.length) return [];
    const r = await this.db.raw(
      `SELECT a.room_id, a.thread_id, count(*)::int AS n, (count(*) FILTER (WHERE a.highlight))::int AS h
       FROM unnest(?::text[], ?::bigint[]) AS rm(room_id, upto)
       JOIN event_push_actions a ON a.user_id = ? AND a.room_id = rm.room_id AND a.stream_pos > rm.upto
       LEFT JOIN unnest(?::text[], ?::text[], ?::bigint[]) AS t(room_id, thread_id, upto) ON t.room_id = a.room_id AND t.thread_id = a.thread_id
       WHERE a.unread AND a.stream_pos > COALESCE(t.upto, 0)
       GROUP BY a.room_id, a.thread_id`,
      [rooms.ids, rooms.upto, userId, threads.rooms, threads.ids, threads.upto],
    );
    return r.rows;
  }

  /** The user's actions after `pos`, oldest first. */
  async after(userId: string, pos: number, limit: number): Promise<StoredAction[]> {
    const r = await this.db.raw(
      'SELECT * FROM event_push_actions WHERE user_id = ? AND stream_pos > ? ORDER BY stream_pos ASC LIMIT ?',
      [userId, pos, limit],
    );
    return r.rows;
  }

  /** The user's actions before `before` (all when undefined), newest first; only highlights if asked. */
  async page(userId: string, before: number | undefined, limit: number, onlyHighlight: boolean): Promise<StoredAction[]> {
    const r = await this.db.raw(
      `SELECT * FROM event_push_actions WHERE user_id = ? AND stream_pos < ? ${onlyHighlight ? 'AND highlight' : ''}
       ORDER BY stream_pos DESC LIMIT ?`,
      [userId, before ?? Number.MAX_SAFE_INTEGER, limit],
    );
    return r.rows;
  }

  // ---- push_progress: up to where each worker process has evaluated the events it wrote --------

  async saveProgress(instance: string, upto: number, now: number): Promise<void> {
    await this.db.raw(
      `INSERT INTO push_progress (instance, upto, heartbeat_ts) VALUES (?, ?, ?)
       ON CONFLICT (instance) DO UPDATE SET upto = EXCLUDED.upto, heartbeat_ts = EXCLUDED.heartbeat_ts`,
      [instance, upto, now],
    );
  }

  async dropProgress(instance: string): Promise<void> {
    await this.db.raw('DELETE FROM push_progress WHERE instance = ?', [instance]);
  }

  /**
   * Takes over the rows of dead workers (no heartbeat since `staleBefore`): deletes them and, in the
   * same transaction, lowers this worker's own position to the lowest of theirs, so that what they
   * left is evaluated again even if this worker dies too. Returns that lowest position.
   */
  async takeOver(instance: string, staleBefore: number, now: number): Promise<number | undefined> {
    return this.db.transaction(async (trx) => {
      const r = await trx.raw('DELETE FROM push_progress WHERE heartbeat_ts < ? AND instance <> ? RETURNING upto', [staleBefore, instance]);
      if (!r.rows.length) return undefined;
      const lowest = Math.min(...r.rows.map((x: { upto: number }) => Number(x.upto)));
      await trx.raw(
        `INSERT INTO push_progress (instance, upto, heartbeat_ts) VALUES (?, ?, ?)
         ON CONFLICT (instance) DO UPDATE SET upto = LEAST(push_progress.upto, EXCLUDED.upto), heartbeat_ts = EXCLUDED.heartbeat_ts`,
        [instance, lowest, now],
      );
      return lowest;
    });
  }
}
