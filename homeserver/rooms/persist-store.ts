import type pg from 'pg';
import type { Db } from '../storage/db.ts';

/**
 * The SQL of the room engine's write path. It runs on a pg client taken from knex's pool with named
 * (prepared) statements: a send is the hot path, and planning the same statements again on every
 * send cost more PostgreSQL CPU than running them. Writes of a batch are multi-row statements.
 */
export class PersistStore {
  constructor(private db: Db) {}

  /**
   * Runs `fn` in one transaction on one pooled connection. With a room, the transaction starts
   * holding that room's lock (events of one room are persisted in order, across workers too) and
   * `fn` gets the room's head as read under the lock — BEGIN, lock and read in one round trip.
   */
  async transaction<T>(roomNid: number | null, fn: (q: Query, head: RoomHead) => Promise<T>): Promise<T> {
    const client = (await this.db.client.acquireConnection()) as pg.Client;
    const q = new Query(client);
    try {
      let head: RoomHead = { state_group: null, last_pos: 0 };
      if (roomNid === null) await client.query('BEGIN');
      else {
        if (!Number.isSafeInteger(roomNid)) throw new Error(`bad room nid ${roomNid}`);
        const results = (await client.query(
          `BEGIN; SELECT pg_advisory_xact_lock(1, ${roomNid}); SELECT state_group, last_pos FROM rooms WHERE room_nid = ${roomNid}`,
        )) as unknown as pg.QueryResult[];
        const row = results[2]!.rows[0];
        head = { state_group: row.state_group === null ? null : Number(row.state_group), last_pos: Number(row.last_pos) };
      }
      const result = await fn(q, head);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      await this.db.client.releaseConnection(client);
    }
  }
}

export interface RoomHead {
  state_group: number | null;
  last_pos: number;
}

export interface StateEntry {
  event_nid: number;
  event_id: string;
  json: string;
}

export interface EventInsert {
  nid: number;
  eventId: string;
  roomNid: number;
  streamPos: number;
  depth: number;
  typeNid: number;
  stateKeyNid: number | null;
  sender: string;
  ts: number;
  stateBefore: number;
  stateAfter: number;
  replacesNid: number | null;
  membership: string | null;
  relType: string | null;
  relatesTo: string | null;
  redacts: string | null;
  txnDevice: string | null;
  txnId: string | null;
  json: string;
}

/** The rows of one batch, column by column. */
export interface BatchWrite {
  events: EventInsert[];
  edges: { nids: number[]; prev: string[] };
  authEdges: { nids: number[]; auth: number[] };
  groups: { ids: number[]; prev: Array<number | null>; chain: number[] };
  entries: { groups: number[]; types: number[]; keys: number[]; nids: number[] };
  current: { types: number[]; keys: number[]; nids: number[] };
  members: { users: string[]; memberships: string[]; nids: number[]; positions: number[]; senders: string[] };
  extremities: { remove: string[]; add: string[] };
  txns: { users: string[]; devices: string[]; txns: string[]; events: string[] };
  search: { nids: number[]; keys: string[]; texts: string[] };
  head: RoomHead;
}

export class Query {
  constructor(private client: pg.Client) {}

  private async run(name: string, text: string, values: unknown[]): Promise<pg.QueryResult> {
    return this.client.query({ name, text, values });
  }

  async insertRoom(roomId: string, version: string, creator: string): Promise<number> {
    const r = await this.run(
      'insert_room',
      'INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4) RETURNING room_nid',
      [roomId, version, creator, Date.now()],
    );
    return Number(r.rows[0].room_nid);
  }

  async lockRoom(roomNid: number): Promise<void> {
    await this.run('lock_room', 'SELECT pg_advisory_xact_lock(1, $1)', [roomNid]);
  }

  async extremities(roomNid: number): Promise<Array<{ event_id: string; depth: number }>> {
    const r = await this.run(
      'room_extremities',
      `SELECT f.event_id, e.depth FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
       WHERE f.room_nid = $1 ORDER BY e.depth DESC, e.stream_pos DESC LIMIT 10`,
      [roomNid],
    );
    return r.rows.map((x) => ({ event_id: x.event_id, depth: Number(x.depth) }));
  }

  async chainLen(group: number): Promise<number> {
    const r = await this.run('chain_len', 'SELECT chain_len FROM state_groups WHERE state_group = $1', [group]);
    return Number(r.rows[0].chain_len);
  }

  /** Current state entries for (type_nid, state_key_nid) pairs. */
  async currentState(roomNid: number, typeNids: number[], keyNids: number[]): Promise<Array<StateEntry & { type_nid: number; state_key_nid: number }>> {
    const r = await this.run(
      'current_state_pairs',
      `SELECT cs.type_nid, cs.state_key_nid, e.event_nid, e.event_id, e.json
       FROM unnest($2::int[], $3::int[]) AS want(type_nid, state_key_nid)
       JOIN current_state cs ON cs.room_nid = $1 AND cs.type_nid = want.type_nid AND cs.state_key_nid = want.state_key_nid
       JOIN events e ON e.event_nid = cs.event_nid`,
      [roomNid, typeNids, keyNids],
    );
    return r.rows.map((x) => ({ ...x, type_nid: Number(x.type_nid), state_key_nid: Number(x.state_key_nid), event_nid: Number(x.event_nid) }));
  }

  /** The whole current state as (type_nid, state_key_nid) → event_nid, for a full snapshot. */
  async currentStateNids(roomNid: number): Promise<Array<{ type_nid: number; state_key_nid: number; event_nid: number }>> {
    const r = await this.run('current_state_all', 'SELECT type_nid, state_key_nid, event_nid FROM current_state WHERE room_nid = $1', [roomNid]);
    return r.rows.map((x) => ({ type_nid: Number(x.type_nid), state_key_nid: Number(x.state_key_nid), event_nid: Number(x.event_nid) }));
  }

  /**
   * Event nids and stream positions for n events, in increasing order, and which of the given
   * transactions were already persisted (user\0device\0txn → event id): one round trip.
   */
  async allocate(n: number, txnUsers: string[], txnDevices: string[], txnIds: string[]): Promise<{ ids: Array<{ nid: number; pos: number }>; prior: Map<string, string> }> {
    const r = await this.run(
      'allocate_events',
      `SELECT nextval('events_event_nid_seq') AS nid, nextval('stream_positions') AS pos,
         NULL::text AS u, NULL::text AS d, NULL::text AS x, NULL::text AS event_id
       FROM generate_series(1, $1)
       UNION ALL
       SELECT NULL, NULL, t.user_id, t.device_id, t.txn_id, t.event_id FROM event_txns t
       JOIN unnest($2::text[], $3::text[], $4::text[]) AS w(user_id, device_id, txn_id)
         ON t.user_id = w.user_id AND t.device_id = w.device_id AND t.txn_id = w.txn_id`,
      [n, txnUsers, txnDevices, txnIds],
    );
    const ids: Array<{ nid: number; pos: number }> = [];
    const prior = new Map<string, string>();
    for (const x of r.rows) {
      if (x.event_id === null) ids.push({ nid: Number(x.nid), pos: Number(x.pos) });
      else prior.set(`${x.u}\0${x.d}\0${x.x}`, x.event_id);
    }
    return { ids: ids.sort((a, b) => a.pos - b.pos), prior };
  }

  async allocateStateGroup(): Promise<number> {
    const r = await this.run('allocate_group', "SELECT nextval('state_groups_state_group_seq') AS g", []);
    return Number(r.rows[0].g);
  }

  /** Everything a batch writes, in one statement of data-modifying CTEs (one round trip). */
  async writeBatch(roomNid: number, b: BatchWrite): Promise<void> {
    const ev = b.events;
    const col = <K extends keyof EventInsert>(k: K) => ev.map((r) => r[k]);
    await this.run(
      'write_batch',
      `WITH
       ev AS (INSERT INTO events (event_nid, event_id, room_nid, stream_pos, depth, type_nid, state_key_nid, sender, origin_server_ts,
           state_before, state_after, replaces_nid, membership, rel_type, relates_to, redacts, txn_device, txn_id, json)
         SELECT * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bigint[], $6::bigint[], $7::int[], $8::int[], $9::text[],
           $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
           $19::text[], $20::text[]) RETURNING 1),
       ed AS (INSERT INTO event_edges (event_nid, prev_event_id) SELECT * FROM unnest($21::bigint[], $22::text[]) RETURNING 1),
       ae AS (INSERT INTO event_auth_edges (event_nid, auth_event_nid) SELECT * FROM unnest($23::bigint[], $24::bigint[]) RETURNING 1),
       sg AS (INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len)
         SELECT g, $1, p, c FROM unnest($25::bigint[], $26::bigint[], $27::int[]) AS x(g, p, c) RETURNING 1),
       se AS (INSERT INTO state_group_entries (state_group, type_nid, state_key_nid, event_nid)
         SELECT * FROM unnest($28::bigint[], $29::int[], $30::int[], $31::bigint[]) RETURNING 1),
       cs AS (INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid)
         SELECT $1, * FROM unnest($32::int[], $33::int[], $34::bigint[])
         ON CONFLICT (room_nid, type_nid, state_key_nid) DO UPDATE SET event_nid = EXCLUDED.event_nid RETURNING 1),
       rm AS (INSERT INTO room_memberships (user_id, room_nid, membership, event_nid, stream_pos, sender, forgotten)
         SELECT u, $1, m, e, p, s, FALSE FROM unnest($35::text[], $36::text[], $37::bigint[], $38::bigint[], $39::text[]) AS x(u, m, e, p, s)
         ON CONFLICT (user_id, room_nid) DO UPDATE SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid,
           stream_pos = EXCLUDED.stream_pos, sender = EXCLUDED.sender, forgotten = FALSE RETURNING 1),
       fd AS (DELETE FROM forward_extremities WHERE room_nid = $1 AND event_id = ANY($40::text[]) RETURNING 1),
       fi AS (INSERT INTO forward_extremities (room_nid, event_id) SELECT $1, x FROM unnest($41::text[]) AS x ON CONFLICT DO NOTHING RETURNING 1),
       tx AS (INSERT INTO event_txns (user_id, device_id, txn_id, event_id) SELECT * FROM unnest($42::text[], $43::text[], $44::text[], $45::text[]) ON CONFLICT DO NOTHING RETURNING 1),
       sr AS (INSERT INTO event_search (event_nid, room_nid, key, vector)
         SELECT n, $1, k, to_tsvector('simple', t) FROM unnest($46::bigint[], $47::text[], $48::text[]) AS x(n, k, t) RETURNING 1),
       rh AS (UPDATE rooms SET state_group = $49, last_pos = $50 WHERE room_nid = $1 RETURNING 1)
       SELECT 1`,
      [roomNid, col('nid'), col('eventId'), col('roomNid'), col('streamPos'), col('depth'), col('typeNid'), col('stateKeyNid'), col('sender'),
        col('ts'), col('stateBefore'), col('stateAfter'), col('replacesNid'), col('membership'), col('relType'), col('relatesTo'),
        col('redacts'), col('txnDevice'), col('txnId'), col('json'),
        b.edges.nids, b.edges.prev, b.authEdges.nids, b.authEdges.auth,
        b.groups.ids, b.groups.prev, b.groups.chain,
        b.entries.groups, b.entries.types, b.entries.keys, b.entries.nids,
        b.current.types, b.current.keys, b.current.nids,
        b.members.users, b.members.memberships, b.members.nids, b.members.positions, b.members.senders,
        b.extremities.remove, b.extremities.add,
        b.txns.users, b.txns.devices, b.txns.txns, b.txns.events,
        b.search.nids, b.search.keys, b.search.texts,
        b.head.state_group, b.head.last_pos],
    );
  }

  async markRedacted(targetId: string, redactionId: string): Promise<void> {
    await this.run('mark_redacted', 'UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND redacted_by IS NULL', [targetId, redactionId]);
    await this.run('unindex_redacted', 'DELETE FROM event_search WHERE event_nid = (SELECT event_nid FROM events WHERE event_id = $1)', [targetId]);
  }

  async eventById(eventId: string): Promise<{ event_id: string; stream_pos: number; json: string } | undefined> {
    const r = await this.run('event_by_id_min', 'SELECT event_id, stream_pos, json FROM events WHERE event_id = $1', [eventId]);
    return r.rows[0];
  }
}
