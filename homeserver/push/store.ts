import type pg from 'pg';
import type { Db } from '../storage/db.ts';
import type { TransactionWrites } from '../rooms/engine.ts';

/** A member's own push actions for an event (differing from the event's shared ones). */
export interface ActionRow {
  userId: string;
  streamPos: number;
  roomId: string;
  eventId: string;
  threadId: string;
  notify: boolean;
  highlight: boolean;
  /** JSON of the actions, or null for ["notify"]. */
  actions: string | null;
  ts: number;
  /** Counts in the room's unread counts (false for the invitee's own invite). */
  unread: boolean;
}

/** An event's shared actions: every member joined at it except its sender and those with an ActionRow. */
export interface SharedRow {
  roomId: string;
  streamPos: number;
  eventId: string;
  threadId: string;
  sender: string;
  highlight: boolean;
  actions: string | null;
  ts: number;
}

/** A member event as push evaluation saw it: joined since `pos`, left at `pos`, or seen joined (pos 0). */
export interface MemberRow {
  roomId: string;
  userId: string;
  joined: boolean;
  pos: number;
}

/** What the writes of one batch carry: one statement. */
export interface PushWrite {
  shared: SharedRow[];
  actions: ActionRow[];
  members: MemberRow[];
  /** Who is notified by these rows (not stored: for the `notified` topic). */
  notified: Set<string>;
}

export interface StoredAction {
  room_id: string;
  stream_pos: number;
  event_id: string;
  thread_id: string;
  highlight: boolean;
  actions: string | null;
  ts: number;
}

/** Unread rows counted per room at most (of each kind): clients show "99+" long before. */
const COUNT_CAP = 1000;

/** The user's notifying actions: their own rows, and the shared ones of rooms they were joined to. */
const USER_ACTIONS = `
  SELECT a.room_id, a.stream_pos, a.event_id, a.thread_id, a.highlight, a.actions, a.ts, a.unread
  FROM event_push_actions a WHERE a.user_id = $1 AND a.notify AND RANGE_A
  UNION ALL
  SELECT pe.room_id, pe.stream_pos, pe.event_id, pe.thread_id, pe.highlight, pe.actions, pe.ts, TRUE
  FROM push_members j
  JOIN push_events pe ON pe.room_id = j.room_id AND pe.stream_pos > j.joined_pos AND (j.left_pos IS NULL OR pe.stream_pos < j.left_pos)
  WHERE j.user_id = $1 AND pe.sender <> $1 AND RANGE_E
    AND NOT EXISTS (SELECT 1 FROM event_push_actions x WHERE x.user_id = $1 AND x.stream_pos = pe.stream_pos)`;

/** The SQL of push_events, event_push_actions, push_members and push_progress (migration 008). */
export class PushStore {
  constructor(private db: Db) {}

  /** A statement with $n placeholders (one parameter used several times), on a pooled connection. */
  private async query<T = StoredAction>(sql: string, params: unknown[]): Promise<T[]> {
    const client = (await this.db.client.acquireConnection()) as pg.Client;
    try {
      return (await client.query(sql, params)).rows as T[];
    } finally {
      await this.db.client.releaseConnection(client);
    }
  }

  /** A batch's shared actions, own actions and member changes in one statement; what is there stays (catch-up is idempotent). */
  async write(w: PushWrite): Promise<void> {
    const params: unknown[] = [];
    const writes = this.transactionWrites(w);
    if (!writes) return;
    const ctes = writes.ctes((value, type) => `$${params.push(value)}::${type}`);
    await this.query(`WITH ${ctes.join(',\n')} SELECT 1`, params);
  }

  /**
   * The same rows as CTEs of another statement: the room engine writes them in the events' own
   * statement (undefined when there is nothing to write).
   */
  transactionWrites(w: PushWrite): TransactionWrites | undefined {
    if (!w.shared.length && !w.actions.length && !w.members.length) return undefined;
    const a = w.actions;
    const e = w.shared;
    // One row per (room, user): the latest change wins; "seen joined" only where nothing changed.
    const byKey = new Map<string, MemberRow>();
    for (const m of w.members) {
      const k = `${m.roomId}\0${m.userId}`;
      const prev = byKey.get(k);
      if (!prev || (m.pos !== 0 && m.pos >= prev.pos)) byKey.set(k, m);
    }
    const m = [...byKey.values()];
    // Only the parts this batch has (most batches: one shared row per event and nothing else).
    const shape = `push${e.length ? 'E' : ''}${a.length ? 'A' : ''}${m.length ? 'M' : ''}`;
    return {
      shape,
      ctes: ($) => {
        const parts: string[] = [];
        if (e.length) {
          parts.push(`push_ev AS (INSERT INTO push_events (room_id, stream_pos, event_id, thread_id, sender, highlight, actions, ts)
             SELECT * FROM unnest(${$(e.map((x) => x.roomId), 'text[]')}, ${$(e.map((x) => x.streamPos), 'bigint[]')}, ${$(e.map((x) => x.eventId), 'text[]')},
               ${$(e.map((x) => x.threadId), 'text[]')}, ${$(e.map((x) => x.sender), 'text[]')}, ${$(e.map((x) => x.highlight), 'boolean[]')},
               ${$(e.map((x) => x.actions), 'text[]')}, ${$(e.map((x) => x.ts), 'bigint[]')})
             ON CONFLICT DO NOTHING RETURNING 1)`);
        }
        if (a.length) {
          parts.push(`push_ac AS (INSERT INTO event_push_actions (user_id, stream_pos, room_id, event_id, thread_id, notify, highlight, actions, ts, unread)
             SELECT * FROM unnest(${$(a.map((x) => x.userId), 'text[]')}, ${$(a.map((x) => x.streamPos), 'bigint[]')}, ${$(a.map((x) => x.roomId), 'text[]')},
               ${$(a.map((x) => x.eventId), 'text[]')}, ${$(a.map((x) => x.threadId), 'text[]')}, ${$(a.map((x) => x.notify), 'boolean[]')},
               ${$(a.map((x) => x.highlight), 'boolean[]')}, ${$(a.map((x) => x.actions), 'text[]')}, ${$(a.map((x) => x.ts), 'bigint[]')},
               ${$(a.map((x) => x.unread), 'boolean[]')})
             ON CONFLICT DO NOTHING RETURNING 1)`);
        }
        if (m.length) {
          parts.push(`push_mb AS (INSERT INTO push_members (room_id, user_id, joined_pos, left_pos, changed_pos)
             SELECT r, u, p, CASE WHEN j THEN NULL ELSE p END, p
             FROM unnest(${$(m.map((x) => x.roomId), 'text[]')}, ${$(m.map((x) => x.userId), 'text[]')}, ${$(m.map((x) => x.joined), 'boolean[]')},
               ${$(m.map((x) => x.pos), 'bigint[]')}) AS x(r, u, j, p)
             ON CONFLICT (room_id, user_id) DO UPDATE SET
               joined_pos = CASE WHEN EXCLUDED.left_pos IS NULL THEN EXCLUDED.joined_pos ELSE push_members.joined_pos END,
               left_pos = EXCLUDED.left_pos, changed_pos = EXCLUDED.changed_pos
             WHERE push_members.changed_pos < EXCLUDED.changed_pos RETURNING 1)`);
        }
        return parts;
      },
    };
  }

  /**
   * Unread counts per (user, room, thread): each user's notifying actions after their read
   * position, where an action's read position is the later of the room's unthreaded one and its
   * thread's. One row of `pairs` per (user, room, unthreaded read position), threads likewise: one
   * statement for every sync a wake-up sends (each LATERAL probe stays on the user's index). Per
   * room, at most the newest COUNT_CAP rows of each kind are counted: a member who never reads a
   * busy room must not make each of their syncs scan its whole history.
   */
  async countsMany(
    pairs: { users: string[]; rooms: string[]; upto: number[] },
    threads: { users: string[]; rooms: string[]; ids: string[]; upto: number[] },
  ): Promise<Array<{ user_id: string; room_id: string; thread_id: string; n: number; h: number }>> {
    if (!pairs.users.length) return [];
    return this.query<{ user_id: string; room_id: string; thread_id: string; n: number; h: number }>(
      `WITH th AS (SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::bigint[]) AS t(user_id, room_id, thread_id, upto))
       SELECT rm.user_id, rm.room_id, c.thread_id, c.n, c.h
       FROM unnest($1::text[], $2::text[], $3::bigint[]) AS rm(user_id, room_id, upto)
       CROSS JOIN LATERAL (
         SELECT x.thread_id, count(*)::int AS n, (count(*) FILTER (WHERE x.highlight))::int AS h
         FROM (
           (SELECT a.thread_id, a.stream_pos, a.highlight FROM event_push_actions a
            WHERE a.user_id = rm.user_id AND a.room_id = rm.room_id AND a.stream_pos > rm.upto AND a.notify AND a.unread
            ORDER BY a.stream_pos DESC LIMIT ${COUNT_CAP})
           UNION ALL
           (SELECT pe.thread_id, pe.stream_pos, pe.highlight
            FROM push_members j
            JOIN push_events pe ON pe.room_id = j.room_id AND pe.stream_pos > GREATEST(rm.upto, j.joined_pos)
            WHERE j.room_id = rm.room_id AND j.user_id = rm.user_id AND j.left_pos IS NULL AND pe.sender <> rm.user_id
              AND NOT EXISTS (SELECT 1 FROM event_push_actions e WHERE e.user_id = rm.user_id AND e.stream_pos = pe.stream_pos)
            ORDER BY pe.stream_pos DESC LIMIT ${COUNT_CAP})
         ) x
         LEFT JOIN th ON th.user_id = rm.user_id AND th.room_id = rm.room_id AND th.thread_id = x.thread_id
         WHERE x.stream_pos > COALESCE(th.upto, 0)
         GROUP BY x.thread_id) c`,
      [pairs.users, pairs.rooms, pairs.upto, threads.users, threads.rooms, threads.ids, threads.upto],
    );
  }

  /** The user's notifying actions after `pos`, oldest first. */
  async after(userId: string, pos: number, limit: number): Promise<StoredAction[]> {
    const sql = USER_ACTIONS.replace('RANGE_A', 'a.stream_pos > $2').replace('RANGE_E', 'pe.stream_pos > $2');
    return this.query(`SELECT * FROM (${sql}) u ORDER BY stream_pos ASC LIMIT $3`, [userId, pos, limit]);
  }

  /** The user's notifying actions before `before` (all when undefined), newest first; only highlights if asked. */
  async page(userId: string, before: number | undefined, limit: number, onlyHighlight: boolean): Promise<StoredAction[]> {
    const hl = onlyHighlight ? ' AND a.highlight' : '';
    const hlE = onlyHighlight ? ' AND pe.highlight' : '';
    const sql = USER_ACTIONS.replace('RANGE_A', `a.stream_pos < $2${hl}`).replace('RANGE_E', `pe.stream_pos < $2${hlE}`);
    return this.query(`SELECT * FROM (${sql}) u ORDER BY stream_pos DESC LIMIT $3`, [userId, before ?? Number.MAX_SAFE_INTEGER, limit]);
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

  /** issue 9 (mod9): a purged room's notifications, push actions and push members go with it (one transaction). */
  async deleteRoom(roomId: string): Promise<number> {
    return this.db.transaction(async (trx) => {
      let n = 0;
      for (const table of ['event_push_actions', 'push_events', 'push_members']) {
        n += ((await trx.raw(`DELETE FROM ${table} WHERE room_id = ?`, [roomId])) as unknown as { rowCount: number }).rowCount;
      }
      return n;
    });
  }
}
