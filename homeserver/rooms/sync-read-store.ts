import type { Db } from '../storage/db.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow } from './store.ts';
import { filterSql, type RoomEventFilter } from './filter.ts';

export interface MembershipRow {
  room_nid: number;
  room_id: string;
  membership: string;
  event_nid: number;
  stream_pos: number;
  forgotten: boolean;
}

/** One room's slice of timeline: events in (lower, upper], newest first. */
export interface TimelineWindow {
  roomNid: number;
  /** Exclusive; undefined: from the room's start. */
  lower?: number;
  /** Inclusive. */
  upper: number;
}

export interface RoomSummaryCounts {
  heroes: string[];
  joined: number;
  invited: number;
}

/** Heroes are five members other than the reader: six candidates always leave five. */
const HERO_CANDIDATES = 6;

/** A room's member counts and its earliest joined or invited members (hero candidates). */
export interface RoomMembersSummary {
  members: string[];
  joined: number;
  invited: number;
}

/**
 * What /sync reads of the room engine's tables, offered to sync through RoomReader. Every read
 * covers all the rooms of one sync in one statement, so that a sync covering 500 rooms costs a
 * handful of queries, not a few per room.
 */
export class SyncReadStore {
  constructor(private db: Db) {}

  /** A user's membership of every room they ever had one in. */
  async memberships(userId: string): Promise<MembershipRow[]> {
    const r = await this.db.raw(
      `SELECT m.room_nid, r.room_id, m.membership, m.event_nid, m.stream_pos, m.forgotten
       FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ?`,
      [userId],
    );
    return r.rows;
  }

  /** Which of these rooms have events in (since, to]. */
  async roomsWithEvents(roomNids: number[], since: number, to: number): Promise<Set<number>> {
    if (!roomNids.length) return new Set();
    const r = await this.db.raw(
      `SELECT w.room_nid FROM unnest(?::int[]) AS w(room_nid)
       WHERE EXISTS (SELECT 1 FROM events e WHERE e.room_nid = w.room_nid AND e.stream_pos > ? AND e.stream_pos <= ?)`,
      [roomNids, since, to],
    );
    return new Set(r.rows.map((x: { room_nid: number }) => Number(x.room_nid)));
  }

  /**
   * The rooms (of these current member events) whose member was already joined at `since`: walks
   * each member event's chain of replaced events back to the one current at `since`. A profile
   * change moves a membership's position but is no new join; leaving and joining again is.
   */
  async joinedAt(memberEventNids: number[], since: number): Promise<Set<number>> {
    if (!memberEventNids.length) return new Set();
    const r = await this.db.raw(
      `WITH RECURSIVE chain AS (
         SELECT e.room_nid, e.replaces_nid, e.stream_pos, e.membership FROM events e WHERE e.event_nid = ANY(?::bigint[])
         UNION ALL
         SELECT p.room_nid, p.replaces_nid, p.stream_pos, p.membership
         FROM chain c JOIN events p ON p.event_nid = c.replaces_nid WHERE c.stream_pos > ?
       )
       SELECT room_nid FROM chain GROUP BY room_nid
       -- Joined then, and never out of the room since (a leave and a rejoin is a new join).
       HAVING bool_or(stream_pos <= ? AND membership = 'join') AND NOT bool_or(stream_pos > ? AND membership <> 'join')`,
      [memberEventNids, since, since, since],
    );
    return new Set(r.rows.map((x: { room_nid: number }) => Number(x.room_nid)));
  }

  /**
   * The newest `limit` events of each window that pass the filter, newest first: one index probe per
   * room (a LATERAL join), in one statement.
   */
  async timelines(windows: TimelineWindow[], limit: number, filter: RoomEventFilter | undefined): Promise<Map<number, EventRow[]>> {
    const out = new Map<number, EventRow[]>(windows.map((w) => [w.roomNid, []]));
    if (!windows.length || limit <= 0) return out;
    const f = filterSql(filter);
    const r = await this.db.raw(
      `SELECT x.* FROM unnest(?::int[], ?::bigint[], ?::bigint[]) WITH ORDINALITY AS w(room_nid, lower, upper, i)
       CROSS JOIN LATERAL (
         SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
         WHERE e.room_nid = w.room_nid AND e.stream_pos > w.lower AND e.stream_pos <= w.upper AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed ${f.sql}
         ORDER BY e.stream_pos DESC LIMIT ?
       ) x
       ORDER BY w.i, x.stream_pos DESC`,
      [windows.map((w) => w.roomNid), windows.map((w) => w.lower ?? 0), windows.map((w) => w.upper), ...f.params, limit],
    );
    for (const row of r.rows as EventRow[]) out.get(Number(row.room_nid))!.push(row);
    return out;
  }

  /** The state snapshot after a room's newest event up to `to`. */
  async stateGroupAt(roomNid: number, to: number): Promise<number | undefined> {
    const r = await this.db.raw('SELECT state_after FROM events WHERE room_nid = ? AND stream_pos <= ? ORDER BY stream_pos DESC LIMIT 1', [roomNid, to]);
    return r.rows[0] ? Number(r.rows[0].state_after) : undefined;
  }

  /** The newest state event of each key that changed in (since, before): the gap before a cut timeline. */
  async stateChanges(roomNid: number, since: number, before: number, stateFilter: RoomEventFilter | undefined): Promise<EventRow[]> {
    const extra = filterSql(stateFilter);
    const r = await this.db.raw(
      `SELECT DISTINCT ON (e.type_nid, e.state_key_nid) ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
       WHERE e.room_nid = ? AND e.state_key_nid IS NOT NULL AND e.stream_pos > ? AND e.stream_pos < ? ${extra.sql}
       ORDER BY e.type_nid, e.state_key_nid, e.stream_pos DESC`,
      [roomNid, since, before, ...extra.params],
    );
    return r.rows;
  }

  /**
   * Member counts and the six earliest joined or invited members of each room, in one statement
   * (each user's heroes are the first five of them other than the user).
   */
  async summaries(roomNids: number[]): Promise<Map<number, RoomMembersSummary>> {
    const out = new Map<number, RoomMembersSummary>(roomNids.map((n) => [n, { members: [], joined: 0, invited: 0 }]));
    if (!roomNids.length) return out;
    const r = await this.db.raw(
      `SELECT w.room_nid, c.joined, c.invited, h.members FROM unnest(?::int[]) AS w(room_nid)
       CROSS JOIN LATERAL (
         SELECT count(*) FILTER (WHERE membership = 'join')::int AS joined, count(*) FILTER (WHERE membership = 'invite')::int AS invited
         FROM room_memberships WHERE room_nid = w.room_nid AND membership IN ('join', 'invite')
       ) c
       CROSS JOIN LATERAL (
         SELECT coalesce(array_agg(x.user_id ORDER BY x.stream_pos), '{}') AS members FROM (
           SELECT user_id, stream_pos FROM room_memberships
           WHERE room_nid = w.room_nid AND membership IN ('join', 'invite') ORDER BY stream_pos LIMIT ${HERO_CANDIDATES}
         ) x
       ) h`,
      [roomNids],
    );
    for (const row of r.rows as Array<{ room_nid: number; joined: number; invited: number; members: string[] }>) {
      out.set(Number(row.room_nid), { members: row.members, joined: row.joined, invited: row.invited });
    }
    return out;
  }

  /**
   * The whole state at each of some snapshots, in one statement: walks every delta chain at once
   * and keeps, per snapshot and key, the entry of the newest group (as RoomStore.stateAtGroup).
   */
  async statesAtGroups(groups: number[]): Promise<Map<number, EventRow[]>> {
    const out = new Map<number, EventRow[]>(groups.map((g) => [g, []]));
    if (!groups.length) return out;
    const r = await this.db.raw(
      `WITH RECURSIVE chain(root, state_group, prev_group, n) AS (
         SELECT state_group, state_group, prev_group, 0 FROM state_groups WHERE state_group = ANY(?::bigint[])
         UNION ALL
         SELECT c.root, g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group
       ),
       entries AS (
         SELECT DISTINCT ON (c.root, se.type_nid, se.state_key_nid) c.root, se.event_nid
         FROM chain c JOIN state_group_entries se ON se.state_group = c.state_group
         ORDER BY c.root, se.type_nid, se.state_key_nid, c.n
       )
       SELECT en.root AS state_root, ${EVENT_COLUMNS} FROM entries en JOIN events e ON e.event_nid = en.event_nid ${EVENT_JOINS}`,
      [groups],
    );
    for (const row of r.rows as Array<EventRow & { state_root?: number }>) {
      const root = Number(row.state_root);
      delete row.state_root;
      out.get(root)?.push(row);
    }
    return out;
  }
}
