import type { Bindings } from '../storage/db.ts';
import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';
import type { PDU } from '../protocol/auth.ts';
import { LruCache } from '../cache/lru.ts';

/** An event row as read for serving: the signed JSON plus the columns we query. */
export interface EventRow {
  event_nid: number;
  event_id: string;
  room_nid: number;
  room_id: string;
  room_version: string;
  stream_pos: number;
  depth: number;
  type: string;
  state_key: string | null;
  sender: string;
  origin_server_ts: number;
  state_before: number;
  state_after: number;
  replaces_nid: number | null;
  membership: string | null;
  redacted_by: string | null;
  txn_device: string | null;
  txn_id: string | null;
  json: string;
}

/** A relation of an event to another (columns relates_to, rel_type), as bundled aggregations read it. */
/** An event that relates to another (an edit, a thread reply, a reference). */
export type RelationRow = EventRow & { relates_to: string; rel_type: string };

export interface RoomRow {
  room_nid: number;
  room_id: string;
  room_version: string;
  creator: string;
  published: boolean;
  state_group: number | null;
}

export const EVENT_COLUMNS = `e.event_nid, e.event_id, e.room_nid, r.room_id, r.room_version, e.stream_pos, e.depth, t.type,
  sk.state_key, e.sender, e.origin_server_ts, e.state_before, e.state_after, e.replaces_nid, e.membership,
  e.redacted_by, e.txn_device, e.txn_id, e.json`;
export const EVENT_JOINS = `JOIN rooms r ON r.room_nid = e.room_nid JOIN event_types t ON t.type_nid = e.type_nid
  LEFT JOIN state_keys sk ON sk.state_key_nid = e.state_key_nid`;

/** Runs SQL with `?` placeholders: knex, or the room engine's held connection (persist-store Query). */
export interface RawSql {
  raw(sql: string, bindings: Bindings): PromiseLike<{ rows: Array<Record<string, unknown>> }>;
}

/**
 * Interned strings never change once assigned, so every worker may cache them forever. A caller
 * that holds a pooled connection passes that connection: asking the pool for a second one while
 * holding the first deadlocks once every connection is held that way. State keys are user IDs
 * too, so the cache is bounded: an evicted string is looked up again.
 */
class Interner {
  private byName = new LruCache<string, number>(INTERNED_CACHED);
  constructor(private table: string, private nidCol: string, private col: string) {}

  async nid(db: RawSql, name: string): Promise<number> {
    const hit = this.byName.get(name);
    if (hit !== undefined) return hit;
    await db.raw(`INSERT INTO ${this.table} (${this.col}) VALUES (?) ON CONFLICT DO NOTHING`, [name]);
    const r = await db.raw(`SELECT ${this.nidCol} AS nid FROM ${this.table} WHERE ${this.col} = ?`, [name]);
    const nid = Number(r.rows[0].nid);
    this.byName.set(name, nid);
    return nid;
  }

  /** The nid if the string was ever interned; undefined means no row can refer to it. */
  async lookup(db: RawSql, name: string): Promise<number | undefined> {
    const hit = this.byName.get(name);
    if (hit !== undefined) return hit;
    const r = await db.raw(`SELECT ${this.nidCol} AS nid FROM ${this.table} WHERE ${this.col} = ?`, [name]);
    if (!r.rows[0]) return undefined;
    const nid = Number(r.rows[0].nid);
    this.byName.set(name, nid);
    return nid;
  }
}

/** Interned strings kept in memory per table: event types are few, state keys grow with users. */
const INTERNED_CACHED = 100_000;
/** Rooms kept in memory (a row is ~200 bytes). */
const ROOMS_CACHED = 20_000;

export class RoomStore {
  readonly types = new Interner('event_types', 'type_nid', 'type');
  readonly stateKeys = new Interner('state_keys', 'state_key_nid', 'state_key');
  /** Rooms by ID (nid and version never change; `published` is kept in step by setPublished). */
  private roomCache = new LruCache<string, RoomRow>(ROOMS_CACHED);

  constructor(readonly db: Db) {}

  async room(roomId: string, db: Knex = this.db): Promise<RoomRow | undefined> {
    const r = await db.raw('SELECT room_nid, room_id, room_version, creator, published, state_group FROM rooms WHERE room_id = ?', [roomId]);
    return r.rows[0] as RoomRow | undefined;
  }

  /** Version and nid never change: cached. */
  async roomMeta(roomId: string): Promise<RoomRow | undefined> {
    const hit = this.roomCache.get(roomId);
    if (hit) return hit;
    const row = await this.room(roomId);
    if (row) this.roomCache.set(roomId, row);
    return row;
  }

  /** Current state entries for the given (type, state_key) pairs, with the event JSON. */
  async currentStateFor(db: Knex, roomNid: number, pairs: Array<[string, string]>): Promise<Array<{ type: string; state_key: string; event_nid: number; event_id: string; json: string }>> {
    if (pairs.length === 0) return [];
    const types = pairs.map((p) => p[0]);
    const keys = pairs.map((p) => p[1]);
    const r = await db.raw(
      `SELECT t.type, sk.state_key, e.event_nid, e.event_id, e.json
       FROM unnest(?::text[], ?::text[]) AS want(type, state_key)
       JOIN event_types t ON t.type = want.type
       JOIN state_keys sk ON sk.state_key = want.state_key
       JOIN current_state cs ON cs.room_nid = ? AND cs.type_nid = t.type_nid AND cs.state_key_nid = sk.state_key_nid
       JOIN events e ON e.event_nid = cs.event_nid`,
      [types, keys, roomNid],
    );
    return r.rows;
  }

  /** The whole current state of a room, optionally only some types. */
  async currentState(db: Knex, roomNid: number, types?: string[]): Promise<EventRow[]> {
    const r = await db.raw(
      `SELECT ${EVENT_COLUMNS} FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid ${EVENT_JOINS}
       WHERE cs.room_nid = ? ${types ? 'AND t.type = ANY(?)' : ''}`,
      types ? [roomNid, types] : [roomNid],
    );
    return r.rows;
  }

  /**
   * State at a snapshot: walks the delta chain (at most ~100 links) and keeps, for each key, the
   * entry of the newest group. `pairs` restricts it to some keys.
   */
  async stateAtGroup(db: Knex, group: number, filter?: { types?: string[]; pairs?: Array<[string, string]>; members?: string[]; extra?: { sql: string; params: Bindings } }): Promise<EventRow[]> {
    const conds: string[] = ['TRUE'];
    const params: Bindings = [group];
    if (filter?.members) {
      // Lazy-loading: every state event but only these users' member events.
      conds.push("(t.type <> 'm.room.member' OR sk.state_key = ANY(?))");
      params.push(filter.members);
    }
    if (filter?.pairs) {
      conds.push('(t.type, sk.state_key) IN (SELECT * FROM unnest(?::text[], ?::text[]))');
      params.push(filter.pairs.map((p) => p[0]), filter.pairs.map((p) => p[1]));
    }
    if (filter?.types) {
      conds.push('t.type = ANY(?)');
      params.push(filter.types);
    }
    const extra = filter?.extra ?? { sql: '', params: [] };
    params.push(...extra.params);
    const r = await db.raw(
      `WITH RECURSIVE chain(state_group, prev_group, n) AS (
         SELECT state_group, prev_group, 0 FROM state_groups WHERE state_group = ?
         UNION ALL
         SELECT g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group
       ),
       entries AS (
         SELECT DISTINCT ON (se.type_nid, se.state_key_nid) se.event_nid
         FROM chain c JOIN state_group_entries se ON se.state_group = c.state_group
         ORDER BY se.type_nid, se.state_key_nid, c.n
       )
       SELECT ${EVENT_COLUMNS} FROM entries en JOIN events e ON e.event_nid = en.event_nid ${EVENT_JOINS}
       WHERE ${conds.join(' AND ')} ${extra.sql}`,
      params,
    );
    return r.rows;
  }

  async txnEvent(userId: string, deviceId: string, txnId: string, db: Knex = this.db): Promise<string | undefined> {
    const r = await db.raw('SELECT event_id FROM event_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?', [userId, deviceId, txnId]);
    return r.rows[0]?.event_id;
  }

  async eventById(eventId: string, db: Knex = this.db): Promise<EventRow | undefined> {
    const r = await db.raw(`SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS} WHERE e.event_id = ?`, [eventId]);
    return r.rows[0];
  }

  async eventsByNid(nids: number[]): Promise<EventRow[]> {
    if (!nids.length) return [];
    const r = await this.db.raw(`SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS} WHERE e.event_nid = ANY(?)`, [nids]);
    return r.rows;
  }

  async eventsById(ids: string[]): Promise<EventRow[]> {
    if (!ids.length) return [];
    const r = await this.db.raw(`SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS} WHERE e.event_id = ANY(?)`, [ids]);
    return r.rows;
  }

  async membership(userId: string, roomNid: number, db: Knex = this.db): Promise<{ membership: string; event_nid: number; stream_pos: number; forgotten: boolean } | undefined> {
    const r = await db.raw('SELECT membership, event_nid, stream_pos, forgotten FROM room_memberships WHERE user_id = ? AND room_nid = ?', [userId, roomNid]);
    return r.rows[0];
  }

  async joinedRoomIds(userId: string): Promise<string[]> {
    const r = await this.db.raw(
      `SELECT r.room_id FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid
       WHERE m.user_id = ? AND m.membership = 'join'`,
      [userId],
    );
    return r.rows.map((x: { room_id: string }) => x.room_id);
  }

  /** The user's current member event in each room they are joined to (room_memberships points at it). */
  async joinedMemberEvents(userId: string): Promise<Array<{ room_id: string; json: string }>> {
    const r = await this.db.raw(
      `SELECT r.room_id, e.json FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid JOIN events e ON e.event_nid = m.event_nid
       WHERE m.user_id = ? AND m.membership = 'join'`,
      [userId],
    );
    return r.rows;
  }

  async joinedMembers(roomNid: number): Promise<string[]> {
    const r = await this.db.raw("SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership = 'join'", [roomNid]);
    return r.rows.map((x: { user_id: string }) => x.user_id);
  }

  /** Rooms where the user's latest membership is one of these (forgotten ones too unless told otherwise). */
  async roomsWithMembership(userId: string, memberships: string[], includeForgotten = true): Promise<Array<{ room_nid: number; room_id: string; membership: string; stream_pos: number }>> {
    const r = await this.db.raw(
      `SELECT m.room_nid, r.room_id, m.membership, m.stream_pos FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid
       WHERE m.user_id = ? AND m.membership = ANY(?) ${includeForgotten ? '' : 'AND NOT m.forgotten'}`,
      [userId, memberships],
    );
    return (r.rows as Array<{ room_nid: number; room_id: string; membership: string; stream_pos: number }>).map((x) => ({ ...x, room_nid: Number(x.room_nid), stream_pos: Number(x.stream_pos) }));
  }

  /** Joined members of a room whose user IDs end in `:serverName` (this server's users), sorted. */
  async localJoined(roomNid: number, serverName: string): Promise<string[]> {
    const r = await this.db.raw(
      "SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership = 'join' AND user_id LIKE ? ESCAPE '\\' ORDER BY user_id",
      [roomNid, `%:${serverName.replace(/[\\%_]/g, (c) => '\\' + c)}`],
    );
    return r.rows.map((x: { user_id: string }) => x.user_id);
  }

  /** Which of these users `searcher` may find in the user directory: themselves, users sharing a joined room, users joined to a published room. */
  async findableBy(searcher: string, userIds: string[]): Promise<Set<string>> {
    if (!userIds.length) return new Set();
    const r = await this.db.raw(
      `SELECT c.user_id FROM unnest(?::text[]) AS c(user_id)
       WHERE c.user_id = ? OR EXISTS (
           SELECT 1 FROM room_memberships a JOIN room_memberships b ON a.room_nid = b.room_nid
           WHERE a.user_id = c.user_id AND a.membership = 'join' AND b.user_id = ? AND b.membership = 'join')
         OR EXISTS (
           SELECT 1 FROM room_memberships a JOIN rooms r ON r.room_nid = a.room_nid
           WHERE a.user_id = c.user_id AND a.membership = 'join' AND r.published)`,
      [userIds, searcher, searcher],
    );
    return new Set(r.rows.map((x: { user_id: string }) => x.user_id));
  }

  /** The room a room was upgraded from (its m.room.create's predecessor), if any. */
  async predecessor(roomId: string): Promise<string | undefined> {
    const r = await this.db.raw(
      `SELECT e.json FROM rooms r
       JOIN event_types t ON t.type = 'm.room.create'
       JOIN state_keys sk ON sk.state_key = ''
       JOIN current_state cs ON cs.room_nid = r.room_nid AND cs.type_nid = t.type_nid AND cs.state_key_nid = sk.state_key_nid
       JOIN events e ON e.event_nid = cs.event_nid
       WHERE r.room_id = ?`,
      [roomId],
    );
    if (!r.rows[0]) return undefined;
    const p = JSON.parse(r.rows[0].json).content?.predecessor?.room_id;
    return typeof p === 'string' ? p : undefined;
  }

  /** The relations bundled with these events (m.replace, m.thread, m.reference), oldest first. */
  async aggregatedRelations(eventIds: string[]): Promise<RelationRow[]> {
    const r = await this.db.raw(
      `SELECT ${EVENT_COLUMNS}, e.relates_to, e.rel_type
       FROM events e ${EVENT_JOINS} WHERE e.relates_to = ANY(?) AND e.rel_type IN ('m.replace', 'm.thread', 'm.reference')
         AND e.redacted_by IS NULL AND NOT e.rejected AND NOT e.soft_failed
       ORDER BY e.stream_pos`,
      [eventIds],
    );
    return r.rows;
  }

  async setForgotten(userId: string, roomNid: number): Promise<void> {
    await this.db.raw('UPDATE room_memberships SET forgotten = TRUE WHERE user_id = ? AND room_nid = ?', [userId, roomNid]);
  }

  async setPublished(roomId: string, published: boolean): Promise<void> {
    await this.db.raw('UPDATE rooms SET published = ? WHERE room_id = ?', [published, roomId]);
    const hit = this.roomCache.get(roomId);
    if (hit) hit.published = published;
    this.roomChanged?.(roomId);
  }

  /** Set by main.ts with several workers: `published` changed here, drop the room on every other worker. */
  roomChanged: ((roomId: string) => void) | undefined;

  /** Drops a cached room (its `published` changed on another worker); with no argument, all of them. */
  forgetRoom(roomId?: string): void {
    if (roomId === undefined) this.roomCache.clear();
    else this.roomCache.delete(roomId);
  }
}

export function pduOf(row: { json: string; event_id: string }): PDU {
  const pdu = JSON.parse(row.json) as PDU;
  pdu.event_id = row.event_id;
  return pdu;
}
