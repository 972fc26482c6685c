// Issue 9 (moderation, mod9): what the admin API reads of rooms (the Synapse room list and room
// details, a user's recent events) and the purge of a room's rows. The room engine's tables are
// queried here only; homeserver/moderation/ reaches this through RoomReader and RoomService.
import type { Bindings, Db } from '../storage/db.ts';

/** Synapse's order_by values for GET /_synapse/admin/v1/rooms. */
export const ROOM_ORDERS = ['name', 'canonical_alias', 'joined_members', 'joined_local_members', 'version', 'creator',
  'encryption', 'federatable', 'public', 'join_rules', 'guest_access', 'history_visibility', 'state_events'] as const;
export type RoomOrder = (typeof ROOM_ORDERS)[number];

export interface AdminRoomQuery {
  /** Case-insensitive substring of the name, canonical alias or room id. */
  term?: string;
  orderBy: RoomOrder;
  dir: 'f' | 'b';
  from: number;
  limit: number;
  /** This server's name: joined_local_members counts its users. */
  serverName: string;
  /**
   * The event stream position read before the call: when neither it nor the newest state snapshot
   * moved since the last refresh, no room's state can have changed and the refresh is skipped.
   */
  asOf?: number;
}

export interface AdminRoomRow {
  room_id: string;
  name: string | null;
  topic: string | null;
  avatar: string | null;
  canonical_alias: string | null;
  joined_members: number;
  joined_local_members: number;
  version: string;
  creator: string;
  encryption: string | null;
  federatable: boolean;
  public: boolean;
  join_rules: string | null;
  guest_access: string | null;
  history_visibility: string | null;
  state_events: number;
  room_type: string | null;
}

/** Rows a purge removed, by table. */
export type PurgeCounts = Record<string, number>;

/** One current state value of room `r` (state key ''): `content ->> key` of the unredacted event of `type`. */
function stateValue(type: string, key: string): string {
  return `(SELECT CASE WHEN jsonb_typeof(c -> '${key}') = 'string' THEN c ->> '${key}' END
     FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
     CROSS JOIN LATERAL (SELECT jsonb_or_null(e.json) -> 'content' AS c) x
     WHERE cs.room_nid = r.room_nid AND cs.type_nid = (SELECT type_nid FROM event_types WHERE type = '${type}')
       AND cs.state_key_nid = (SELECT state_key_nid FROM state_keys WHERE state_key = '') AND e.redacted_by IS NULL)`;
}

const federatable = `COALESCE((SELECT CASE WHEN c -> 'm.federate' = 'false'::jsonb THEN FALSE ELSE TRUE END
     FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
     CROSS JOIN LATERAL (SELECT jsonb_or_null(e.json) -> 'content' AS c) x
     WHERE cs.room_nid = r.room_nid AND cs.type_nid = (SELECT type_nid FROM event_types WHERE type = 'm.room.create')
       AND cs.state_key_nid = (SELECT state_key_nid FROM state_keys WHERE state_key = '')), TRUE)`;

/** The SQL of each column of the listing (`?` placeholders: the local server suffix for joined_local_members). */
function columns(localSuffix: string): Record<keyof AdminRoomRow, { sql: string; params: Bindings }> {
  const none: Bindings = [];
  return {
    room_id: { sql: 'r.room_id', params: none },
    name: { sql: stateValue('m.room.name', 'name'), params: none },
    topic: { sql: stateValue('m.room.topic', 'topic'), params: none },
    avatar: { sql: stateValue('m.room.avatar', 'url'), params: none },
    canonical_alias: { sql: stateValue('m.room.canonical_alias', 'alias'), params: none },
    joined_members: { sql: "(SELECT count(*)::int FROM room_memberships m WHERE m.room_nid = r.room_nid AND m.membership = 'join')", params: none },
    joined_local_members: { sql: "(SELECT count(*)::int FROM room_memberships m WHERE m.room_nid = r.room_nid AND m.membership = 'join' AND right(m.user_id, ?) = ?)", params: [localSuffix.length, localSuffix] },
    version: { sql: 'r.room_version', params: none },
    creator: { sql: 'r.creator', params: none },
    encryption: { sql: stateValue('m.room.encryption', 'algorithm'), params: none },
    federatable: { sql: federatable, params: none },
    public: { sql: 'r.published', params: none },
    join_rules: { sql: stateValue('m.room.join_rules', 'join_rule'), params: none },
    guest_access: { sql: stateValue('m.room.guest_access', 'guest_access'), params: none },
    history_visibility: { sql: stateValue('m.room.history_visibility', 'history_visibility'), params: none },
    state_events: { sql: '(SELECT count(*)::int FROM current_state cs WHERE cs.room_nid = r.room_nid)', params: none },
    room_type: { sql: stateValue('m.room.create', 'type'), params: none },
  };
}

const ORDER_COLUMN: Record<RoomOrder, keyof AdminRoomRow> = {
  name: 'name', canonical_alias: 'canonical_alias', joined_members: 'joined_members', joined_local_members: 'joined_local_members',
  version: 'version', creator: 'creator', encryption: 'encryption', federatable: 'federatable', public: 'public',
  join_rules: 'join_rules', guest_access: 'guest_access', history_visibility: 'history_visibility', state_events: 'state_events',
};

export class RoomAdminStore {
  constructor(private db: Db) {}

  /** The columns room_list_stats keeps (the others are read from rooms itself). */
  private static STATS: Array<keyof AdminRoomRow> = ['name', 'canonical_alias', 'joined_members', 'joined_local_members', 'encryption',
    'federatable', 'join_rules', 'guest_access', 'history_visibility', 'state_events', 'room_type'];

  /**
   * Brings room_list_stats up to date: the rows of rooms whose state snapshot moved since they were
   * read (new rooms, state changes, memberships) are read again, in one statement.
   */
  async refreshStats(serverName: string): Promise<number> {
    const cols = columns(`:${serverName}`);
    const names = RoomAdminStore.STATS;
    // The statement's estimated cost (a subquery per column per room) makes PostgreSQL JIT-compile
    // it, which costs seconds, while the refresh usually touches a few rooms: no JIT here.
    const r = await this.db.transaction(async (trx) => {
      await trx.raw('SET LOCAL jit = off');
      return trx.raw(
      `INSERT INTO room_list_stats (room_nid, room_id, version, creator, state_group, ${names.join(', ')})
       SELECT r.room_nid, r.room_id, r.room_version, r.creator, r.state_group, ${names.map((n) => cols[n].sql).join(', ')}
       FROM rooms r LEFT JOIN room_list_stats s ON s.room_nid = r.room_nid
       WHERE s.room_nid IS NULL OR s.state_group IS DISTINCT FROM r.state_group
       ORDER BY r.room_nid -- two workers refreshing at once lock rows in the same order
       ON CONFLICT (room_nid) DO UPDATE SET state_group = EXCLUDED.state_group, ${names.map((n) => `${n} = EXCLUDED.${n}`).join(', ')}`,
      names.flatMap((n) => cols[n].params));
    });
    const n = (r as unknown as { rowCount: number }).rowCount;
    // Many rows at once (the first listing of a big server): the planner learns the table's size,
    // or it keeps sorting pages instead of reading them from the indexes until autovacuum comes.
    if (n > 500) await this.db.raw('ANALYZE room_list_stats');
    return n;
  }

  /** What the last refresh saw: the stream position before it and the newest state snapshot. */
  private refreshed: { asOf: number; group: string } | undefined;

  /**
   * Refreshes room_list_stats unless nothing can have moved since the last refresh: every change of
   * a room's head (a state change, a fork's resolution, a new room) comes with a new event at a new
   * stream position, and every new state comes with a new snapshot (a primary-key probe). The
   * check of every room's snapshot costs ~10 ms at 10,000 rooms; this probe well under one.
   */
  private async refreshIfMoved(serverName: string, asOf: number | undefined): Promise<void> {
    const group = String((await this.db.raw('SELECT max(state_group) AS g FROM state_groups')).rows[0]?.g ?? '');
    if (asOf !== undefined && this.refreshed?.asOf === asOf && this.refreshed.group === group) return;
    await this.refreshStats(serverName);
    if (asOf !== undefined) this.refreshed = { asOf, group };
  }

  /**
   * One page of every room of the server, ordered (ties by room id) and cut in PostgreSQL, and how
   * many rooms match, from room_list_stats (refreshed first); the page's rooms get their columns.
   */
  async list(q: AdminRoomQuery): Promise<{ rooms: AdminRoomRow[]; total: number }> {
    await this.refreshIfMoved(q.serverName, q.asOf);
    const key = q.orderBy === 'public' ? 'r.published' : `s.${ORDER_COLUMN[q.orderBy]}`;
    const term = q.term?.toLowerCase();
    const where = term ? '(strpos(lower(s.room_id), ?) > 0 OR strpos(lower(s.name), ?) > 0 OR strpos(lower(s.canonical_alias), ?) > 0)' : 'TRUE';
    const params = term ? [term, term, term] : [];
    // Default null placement (last ascending, first descending) and the room id in bytes: the order
    // of the indexes on room_list_stats, so a page is read in index order instead of sorting, and
    // only the page's rooms are joined for `public` (the one column not kept in room_list_stats).
    const dir = q.dir === 'b' ? 'DESC' : 'ASC';
    const order = `${key} ${dir}, s.room_id COLLATE "C" ${dir}`;
    const join = q.orderBy === 'public' ? 'JOIN rooms r ON r.room_nid = s.room_nid' : '';
    const r = await this.db.raw(
      `SELECT p.*, r.published AS public FROM (
         SELECT s.room_nid, s.room_id, s.version, s.creator, NULL AS topic, NULL AS avatar, ${RoomAdminStore.STATS.map((n) => `s.${n}`).join(', ')}
         FROM room_list_stats s ${join} WHERE ${where} ORDER BY ${order} OFFSET ? LIMIT ?) p
       JOIN rooms r ON r.room_nid = p.room_nid ORDER BY ${q.orderBy === 'public' ? 'r.published' : `p.${ORDER_COLUMN[q.orderBy]}`} ${dir}, p.room_id COLLATE "C" ${dir}`,
      [...params, q.from, q.limit]);
    const rows = (r.rows as Array<AdminRoomRow & { room_nid?: number }>).map(({ room_nid: _n, ...row }) => row as AdminRoomRow);
    const total = rows.length < q.limit && (rows.length > 0 || q.from === 0)
      ? q.from + rows.length
      : Number((await this.db.raw(`SELECT count(*)::int AS n FROM room_list_stats s WHERE ${where}`, params)).rows[0].n);
    return { rooms: rows, total };
  }

  /** Every column of some rooms, by room id (unknown ones left out). */
  async details(roomIds: string[], serverName: string): Promise<Map<string, AdminRoomRow>> {
    if (!roomIds.length) return new Map();
    const cols = columns(`:${serverName}`);
    const names = Object.keys(cols) as Array<keyof AdminRoomRow>;
    const params: Bindings = names.flatMap((n) => cols[n].params);
    const r = await this.db.raw(
      `SELECT ${names.map((n) => `${cols[n].sql} AS ${n}`).join(', ')} FROM rooms r WHERE r.room_id = ANY(?)`,
      [...params, roomIds]);
    return new Map((r.rows as AdminRoomRow[]).map((row) => [row.room_id, row]));
  }

  /** Ids of a user's events in the rooms given (all their rooms when empty), newest first, not yet redacted. */
  async recentEventsOf(userId: string, roomIds: string[] | undefined, limit: number): Promise<Array<{ event_id: string; room_id: string; type: string; state_key: string | null }>> {
    const r = await this.db.raw(
      `SELECT e.event_id, r.room_id, t.type, sk.state_key FROM events e
       JOIN rooms r ON r.room_nid = e.room_nid JOIN event_types t ON t.type_nid = e.type_nid
       LEFT JOIN state_keys sk ON sk.state_key_nid = e.state_key_nid
       WHERE e.sender = ? AND e.redacted_by IS NULL AND NOT e.outlier AND NOT e.rejected
         AND t.type NOT IN ('m.room.redaction', 'm.room.create', 'm.room.member', 'm.room.power_levels', 'm.room.join_rules')
         ${roomIds ? 'AND r.room_id = ANY(?)' : ''}
       ORDER BY e.stream_pos DESC LIMIT ?`,
      roomIds ? [userId, roomIds, limit] : [userId, limit]);
    return r.rows;
  }

  /** The local media ids (mxc://serverName/…) the room's events name. */
  async mediaIdsIn(roomId: string, serverName: string): Promise<string[]> {
    const r = await this.db.raw(
      `SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid
       WHERE r.room_id = ? AND strpos(e.json, 'mxc://') > 0`, [roomId]);
    const ids = new Set<string>();
    const prefix = `mxc://${serverName}/`;
    for (const row of r.rows as Array<{ json: string }>) {
      for (const m of row.json.matchAll(/mxc:\/\/[^"\s/]+\/[A-Za-z0-9_-]+/g)) if (m[0].startsWith(prefix)) ids.add(m[0].slice(prefix.length));
    }
    return [...ids];
  }

  /** The rooms taking the most space (Synapse's statistics/database/rooms), estimated from the stored events. */
  async largestRooms(limit: number): Promise<Array<{ room_id: string; estimated_size: number }>> {
    const r = await this.db.raw(
      `SELECT r.room_id, s.size::bigint AS estimated_size FROM (
         SELECT room_nid, sum(pg_column_size(e.*)) AS size FROM events e GROUP BY room_nid ORDER BY size DESC LIMIT ?) s
       JOIN rooms r ON r.room_nid = s.room_nid ORDER BY s.size DESC`, [limit]);
    return (r.rows as Array<{ room_id: string; estimated_size: number }>).map((x) => ({ room_id: x.room_id, estimated_size: Number(x.estimated_size) }));
  }

  /**
   * Deletes every row of the room in the engine's tables in one transaction: events, their search
   * index and transaction ids, state snapshots, current state, memberships, aliases, the room.
   * Returns the rows removed by table (undefined: no such room).
   */
  async purge(roomId: string): Promise<{ counts: PurgeCounts; members: string[] } | undefined> {
    return this.db.transaction(async (trx) => {
      const room = (await trx.raw('SELECT room_nid FROM rooms WHERE room_id = ? FOR UPDATE', [roomId])).rows[0] as { room_nid: number } | undefined;
      if (!room) return undefined;
      const nid = room.room_nid;
      const members = ((await trx.raw('SELECT user_id FROM room_memberships WHERE room_nid = ?', [nid])).rows as Array<{ user_id: string }>).map((x) => x.user_id);
      const counts: PurgeCounts = {};
      const run = async (table: string, sql: string, params: Bindings) => { counts[table] = (counts[table] ?? 0) + ((await trx.raw(sql, params)) as { rowCount: number }).rowCount; };
      await run('event_search', 'DELETE FROM event_search WHERE room_nid = ?', [nid]);
      await run('event_txns', `DELETE FROM event_txns x USING events e
        WHERE e.room_nid = ? AND e.txn_device IS NOT NULL AND x.user_id = e.sender AND x.device_id = e.txn_device AND x.event_id = e.event_id`, [nid]);
      await run('current_state', 'DELETE FROM current_state WHERE room_nid = ?', [nid]);
      await run('room_memberships', 'DELETE FROM room_memberships WHERE room_nid = ?', [nid]);
      await run('state_group_entries', 'DELETE FROM state_group_entries g USING state_groups s WHERE s.room_nid = ? AND g.state_group = s.state_group', [nid]);
      await run('state_groups', 'DELETE FROM state_groups WHERE room_nid = ?', [nid]);
      await run('events', 'DELETE FROM events WHERE room_nid = ?', [nid]);
      await run('room_aliases', 'DELETE FROM room_aliases WHERE room_id = ?', [roomId]);
      await run('room_list_stats', 'DELETE FROM room_list_stats WHERE room_nid = ?', [nid]);
      await run('rooms', 'DELETE FROM rooms WHERE room_nid = ?', [nid]);
      return { counts, members };
    });
  }

  /** Rows the room still has in the engine's tables (the purge benchmark's "rows left"). */
  async rowsOf(roomId: string): Promise<number> {
    const r = await this.db.raw(
      `WITH n AS (SELECT room_nid FROM rooms WHERE room_id = ?)
       SELECT (SELECT count(*) FROM events WHERE room_nid IN (SELECT room_nid FROM n))
            + (SELECT count(*) FROM current_state WHERE room_nid IN (SELECT room_nid FROM n))
            + (SELECT count(*) FROM room_memberships WHERE room_nid IN (SELECT room_nid FROM n))
            + (SELECT count(*) FROM state_groups WHERE room_nid IN (SELECT room_nid FROM n))
            + (SELECT count(*) FROM event_search WHERE room_nid IN (SELECT room_nid FROM n))
            + (SELECT count(*) FROM room_aliases WHERE room_id = ?)
            + (SELECT count(*) FROM n) AS n`, [roomId, roomId]);
    return Number(r.rows[0].n);
  }
}
