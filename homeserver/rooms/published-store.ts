import type { Bindings, Db } from '../storage/db.ts';
import { redactEvent } from '../protocol/redaction.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';

/** The state events a room's directory entry and summary are made of. */
export const SUMMARY_TYPES = [
  'm.room.create',
  'm.room.name',
  'm.room.topic',
  'm.room.avatar',
  'm.room.canonical_alias',
  'm.room.join_rules',
  'm.room.history_visibility',
  'm.room.guest_access',
  'm.room.encryption',
];

export interface RoomStats {
  room_id: string;
  room_nid: number;
  room_version: string;
  published: boolean;
  joined_members: number;
  /** Content of each summary state event (redactions applied), by type. */
  state: Map<string, Record<string, unknown>>;
}

/** A position in the directory's order (most joined members first, then room ID descending). */
export interface DirectoryBound {
  members: number;
  roomId: string;
}

export interface DirectoryPageQuery {
  /** Rooms after this one in the order (forward paging), or before it (backward). */
  after?: DirectoryBound;
  before?: DirectoryBound;
  /** At most this many (undefined: all). */
  limit?: number;
  /** Lower-case text the name, topic or canonical alias must contain. */
  term?: string;
  /** Room types listed (null: rooms without a type); undefined: any. */
  roomTypes?: Array<string | null>;
}

/** The `content` of each current state event (state key '') of these types of room `r`, aggregated by `cols`. */
function stateOf(types: string[], cols: string): string {
  return `CROSS JOIN LATERAL (
      SELECT ${cols}
      FROM current_state cs
      JOIN event_types t ON t.type_nid = cs.type_nid
      JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid AND sk.state_key = ''
      JOIN events e ON e.event_nid = cs.event_nid
      -- Content that jsonb cannot hold (a NUL, a lone surrogate) reads as absent instead of failing the listing.
      CROSS JOIN LATERAL (SELECT jsonb_or_null(e.json) -> 'content' AS content) c
      WHERE cs.room_nid = r.room_nid AND t.type IN (${types.map((t) => `'${t}'`).join(', ')})
    )`;
}

const string = (key: string, type: string, unredacted = false) =>
  `max(CASE WHEN jsonb_typeof(c.content -> '${key}') = 'string' THEN c.content ->> '${key}' END) FILTER (WHERE t.type = '${type}'${unredacted ? ' AND e.redacted_by IS NULL' : ''})`;

/** What decides whether a room is listed: its join rule, history visibility and type (all kept by redaction). */
const LISTING_STATE = stateOf(['m.room.join_rules', 'm.room.history_visibility', 'm.room.create'], `
  ${string('join_rule', 'm.room.join_rules')} AS join_rule,
  ${string('history_visibility', 'm.room.history_visibility')} AS history_visibility,
  max(CASE WHEN jsonb_typeof(c.content -> 'type') = 'string' AND c.content ->> 'type' <> '' THEN c.content ->> 'type' END) FILTER (WHERE t.type = 'm.room.create') AS room_type`);

/** What a search term matches: name, plain-text topic, canonical alias (read only when there is a term). */
const SEARCHED_STATE = stateOf(['m.room.name', 'm.room.topic', 'm.room.canonical_alias'], `
  ${string('name', 'm.room.name', true)} AS name,
  max(COALESCE(
    (SELECT b ->> 'body' FROM jsonb_array_elements(CASE WHEN jsonb_typeof(c.content -> 'm.topic' -> 'm.text') = 'array' THEN c.content -> 'm.topic' -> 'm.text' ELSE '[]' END)
       WITH ORDINALITY AS x(b, i)
     WHERE jsonb_typeof(b) = 'object' AND jsonb_typeof(b -> 'body') = 'string' AND (b -> 'mimetype' IS NULL OR b ->> 'mimetype' = 'text/plain')
     ORDER BY i LIMIT 1),
    CASE WHEN jsonb_typeof(c.content -> 'topic') = 'string' THEN c.content ->> 'topic' END)) FILTER (WHERE t.type = 'm.room.topic' AND e.redacted_by IS NULL) AS topic,
  ${string('alias', 'm.room.canonical_alias', true)} AS alias`);

/** Rooms a directory lists: published, someone joined, and anyone may join, knock or read. */
function listed(withSearch: boolean): string {
  return `
  WITH listed AS (
    SELECT r.room_nid, r.room_id, jm.n AS joined_members${withSearch ? ', se.name, se.topic, se.alias' : ''}
    FROM rooms r
    CROSS JOIN LATERAL (SELECT count(*)::int AS n FROM room_memberships m WHERE m.room_nid = r.room_nid AND m.membership = 'join') jm
    ${LISTING_STATE} st
    ${withSearch ? `${SEARCHED_STATE} se` : ''}
    WHERE r.published AND jm.n > 0
      AND (st.join_rule IN ('public', 'knock', 'knock_restricted') OR st.history_visibility = 'world_readable')
      AND (?::boolean OR (st.room_type IS NULL AND ?::boolean) OR st.room_type = ANY(?::text[]))
  )`;
}

/** What the published room directory and room summaries read: current state and member counts. */
export class PublishedRoomStore {
  constructor(private db: Db) {}

  /**
   * One page of the directory, ordered, filtered and cut in PostgreSQL, and how many rooms are
   * listed in all (before the search term). Most joined members first, then room ID descending
   * (bytewise, as the page tokens compare them).
   */
  async page(q: DirectoryPageQuery): Promise<{ rooms: Array<{ room_id: string; joined_members: number }>; total: number }> {
    const anyType = q.roomTypes === undefined;
    const withNull = !!q.roomTypes?.includes(null);
    const types = (q.roomTypes ?? []).filter((t): t is string => t !== null);
    const conds: string[] = ['TRUE'];
    const params: Bindings = [anyType, withNull, types];
    if (q.term) {
      conds.push('(strpos(lower(l.name), ?) > 0 OR strpos(lower(l.topic), ?) > 0 OR strpos(lower(l.alias), ?) > 0)');
      params.push(q.term, q.term, q.term);
    }
    const bound = q.after ?? q.before;
    if (bound) {
      const op = q.after ? '<' : '>';
      conds.push(`(l.joined_members ${op} ? OR (l.joined_members = ? AND l.room_id COLLATE "C" ${op} ?))`);
      params.push(bound.members, bound.members, bound.roomId);
    }
    const dir = q.before ? 'ASC' : 'DESC';
    const limit = q.limit === undefined ? 'ALL' : String(Math.max(0, Math.floor(q.limit)));
    const r = await this.db.raw(
      `${listed(!!q.term)}
       SELECT t.total, p.room_id, p.joined_members
       FROM (SELECT count(*)::int AS total FROM listed) t
       LEFT JOIN LATERAL (
         SELECT l.room_id, l.joined_members FROM listed l WHERE ${conds.join(' AND ')}
         ORDER BY l.joined_members ${dir}, l.room_id COLLATE "C" ${dir} LIMIT ${limit}
       ) p ON TRUE`,
      params,
    );
    const rows = r.rows as Array<{ total: number; room_id: string | null; joined_members: number | null }>;
    const rooms = rows.filter((x) => x.room_id !== null).map((x) => ({ room_id: x.room_id!, joined_members: Number(x.joined_members) }));
    if (q.before) rooms.reverse();
    return { rooms, total: Number(rows[0]?.total ?? 0) };
  }

  /** Some rooms by ID, in the order given (missing ones left out). */
  async statsOf(roomIds: string[]): Promise<RoomStats[]> {
    if (!roomIds.length) return [];
    const found = new Map((await this.stats({ roomIds })).map((s) => [s.room_id, s]));
    return roomIds.map((id) => found.get(id)).filter((s): s is RoomStats => s !== undefined);
  }

  /** Some rooms by ID, or one. */
  async stats(which: { roomIds: string[] } | { roomId: string }): Promise<RoomStats[]> {
    const where = 'roomIds' in which ? 'r.room_id = ANY(?)' : 'r.room_id = ?';
    const params = 'roomIds' in which ? [which.roomIds] : [which.roomId];
    const rooms = await this.db.raw(
      `SELECT r.room_nid, r.room_id, r.room_version, r.published,
         (SELECT count(*) FROM room_memberships m WHERE m.room_nid = r.room_nid AND m.membership = 'join') AS joined_members
       FROM rooms r WHERE ${where}`,
      params,
    );
    const out = new Map<number, RoomStats>();
    for (const row of rooms.rows as Array<{ room_nid: number; room_id: string; room_version: string; published: boolean; joined_members: number }>) {
      out.set(Number(row.room_nid), {
        room_id: row.room_id,
        room_nid: Number(row.room_nid),
        room_version: row.room_version,
        published: row.published,
        joined_members: Number(row.joined_members),
        state: new Map(),
      });
    }
    if (!out.size) return [];
    const state = await this.db.raw(
      `SELECT cs.room_nid, t.type, e.json, e.redacted_by
       FROM current_state cs
       JOIN event_types t ON t.type_nid = cs.type_nid
       JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid
       JOIN events e ON e.event_nid = cs.event_nid
       WHERE cs.room_nid = ANY(?) AND sk.state_key = '' AND t.type = ANY(?)`,
      [[...out.keys()], SUMMARY_TYPES],
    );
    for (const row of state.rows as Array<{ room_nid: number; type: string; json: string; redacted_by: string | null }>) {
      const stats = out.get(Number(row.room_nid))!;
      let pdu = JSON.parse(row.json) as Record<string, unknown>;
      if (row.redacted_by) pdu = redactEvent(pdu, getRoomVersion(stats.room_version) ?? getRoomVersion('10')!);
      stats.state.set(row.type, (pdu.content as Record<string, unknown>) ?? {});
    }
    return [...out.values()];
  }
}
