import type pg from 'pg';
import type { Db } from '../storage/db.ts';

/**
 * The SQL of the room engine's write path. It runs on a pg client taken from knex's pool with named
 * (prepared) statements: a send is the hot path, and planning the same statements again on every
 * send cost more PostgreSQL CPU than running them. Writes of a batch are multi-row statements.
 */
export class PersistStore {
  constructor(private db: Db) {}

  /** Runs `fn` in one transaction on one pooled connection. */
  async transaction<T>(fn: (q: Query) => Promise<T>): Promise<T> {
    const client = (await this.db.client.acquireConnection()) as pg.Client;
    const q = new Query(client);
    try {
      await client.query('BEGIN');
      const result = await fn(q);
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

  /** The room's current snapshot and last position: a cache made at these values is still true. */
  async roomHead(roomNid: number): Promise<RoomHead> {
    const r = await this.run('room_head', 'SELECT state_group, last_pos FROM rooms WHERE room_nid = $1', [roomNid]);
    const row = r.rows[0];
    return { state_group: row.state_group === null ? null : Number(row.state_group), last_pos: Number(row.last_pos) };
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

  async priorTxns(userIds: string[], deviceIds: string[], txnIds: string[]): Promise<Map<string, string>> {
    const r = await this.run(
      'prior_txns',
      `SELECT t.user_id, t.device_id, t.txn_id, t.event_id FROM event_txns t
       JOIN unnest($1::text[], $2::text[], $3::text[]) AS w(user_id, device_id, txn_id)
         ON t.user_id = w.user_id AND t.device_id = w.device_id AND t.txn_id = w.txn_id`,
      [userIds, deviceIds, txnIds],
    );
    return new Map(r.rows.map((x) => [`${x.user_id}\0${x.device_id}\0${x.txn_id}`, x.event_id]));
  }

  /** Event nids and stream positions for n events, in increasing order. */
  async allocate(n: number): Promise<Array<{ nid: number; pos: number }>> {
    const r = await this.run(
      'allocate_events',
      `SELECT nextval('events_event_nid_seq') AS nid, nextval('stream_positions') AS pos FROM generate_series(1, $1)`,
      [n],
    );
    return r.rows.map((x) => ({ nid: Number(x.nid), pos: Number(x.pos) })).sort((a, b) => a.pos - b.pos);
  }

  async allocateStateGroup(): Promise<number> {
    const r = await this.run('allocate_group', "SELECT nextval('state_groups_state_group_seq') AS g", []);
    return Number(r.rows[0].g);
  }

  async insertEvents(rows: EventInsert[]): Promise<void> {
    const col = <K extends keyof EventInsert>(k: K) => rows.map((r) => r[k]);
    await this.run(
      'insert_events',
      `INSERT INTO events (event_nid, event_id, room_nid, stream_pos, depth, type_nid, state_key_nid, sender, origin_server_ts,
         state_before, state_after, replaces_nid, membership, rel_type, relates_to, redacts, txn_device, txn_id, json)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::int[], $7::int[], $8::text[],
         $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
         $18::text[], $19::text[])`,
      [col('nid'), col('eventId'), col('roomNid'), col('streamPos'), col('depth'), col('typeNid'), col('stateKeyNid'), col('sender'),
        col('ts'), col('stateBefore'), col('stateAfter'), col('replacesNid'), col('membership'), col('relType'), col('relatesTo'),
        col('redacts'), col('txnDevice'), col('txnId'), col('json')],
    );
  }

  async insertEdges(eventNids: number[], prevIds: string[]): Promise<void> {
    await this.run('insert_edges', 'INSERT INTO event_edges (event_nid, prev_event_id) SELECT * FROM unnest($1::bigint[], $2::text[])', [eventNids, prevIds]);
  }

  async insertAuthEdges(eventNids: number[], authNids: number[]): Promise<void> {
    await this.run('insert_auth_edges', 'INSERT INTO event_auth_edges (event_nid, auth_event_nid) SELECT * FROM unnest($1::bigint[], $2::bigint[])', [eventNids, authNids]);
  }

  async replaceExtremities(roomNid: number, remove: string[], add: string): Promise<void> {
    await this.run('del_extremities', 'DELETE FROM forward_extremities WHERE room_nid = $1 AND event_id = ANY($2::text[])', [roomNid, remove]);
    await this.run('add_extremity', 'INSERT INTO forward_extremities (room_nid, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [roomNid, add]);
  }

  async insertStateGroups(groups: number[], roomNid: number, prevGroups: Array<number | null>, chainLens: number[]): Promise<void> {
    await this.run(
      'insert_state_groups',
      'INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len) SELECT g, $2, p, c FROM unnest($1::bigint[], $3::bigint[], $4::int[]) AS x(g, p, c)',
      [groups, roomNid, prevGroups, chainLens],
    );
  }

  async insertStateEntries(groups: number[], typeNids: number[], keyNids: number[], eventNids: number[]): Promise<void> {
    await this.run(
      'insert_state_entries',
      'INSERT INTO state_group_entries (state_group, type_nid, state_key_nid, event_nid) SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::bigint[])',
      [groups, typeNids, keyNids, eventNids],
    );
  }

  async upsertCurrentState(roomNid: number, typeNids: number[], keyNids: number[], eventNids: number[]): Promise<void> {
    await this.run(
      'upsert_current_state',
      `INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid)
       SELECT $1, * FROM unnest($2::int[], $3::int[], $4::bigint[])
       ON CONFLICT (room_nid, type_nid, state_key_nid) DO UPDATE SET event_nid = EXCLUDED.event_nid`,
      [roomNid, typeNids, keyNids, eventNids],
    );
  }

  async upsertMemberships(roomNid: number, userIds: string[], memberships: string[], eventNids: number[], positions: number[], senders: string[]): Promise<void> {
    await this.run(
      'upsert_memberships',
      `INSERT INTO room_memberships (user_id, room_nid, membership, event_nid, stream_pos, sender, forgotten)
       SELECT u, $1, m, e, p, s, FALSE FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) AS x(u, m, e, p, s)
       ON CONFLICT (user_id, room_nid) DO UPDATE SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid,
         stream_pos = EXCLUDED.stream_pos, sender = EXCLUDED.sender, forgotten = FALSE`,
      [roomNid, userIds, memberships, eventNids, positions, senders],
    );
  }

  async insertTxns(userIds: string[], deviceIds: string[], txnIds: string[], eventIds: string[]): Promise<void> {
    await this.run(
      'insert_txns',
      'INSERT INTO event_txns (user_id, device_id, txn_id, event_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])',
      [userIds, deviceIds, txnIds, eventIds],
    );
  }

  async indexForSearch(eventNids: number[], roomNid: number, keys: string[], texts: string[]): Promise<void> {
    await this.run(
      'insert_search',
      "INSERT INTO event_search (event_nid, room_nid, key, vector) SELECT n, $2, k, to_tsvector('simple', t) FROM unnest($1::bigint[], $3::text[], $4::text[]) AS x(n, k, t)",
      [eventNids, roomNid, keys, texts],
    );
  }

  async markRedacted(targetId: string, redactionId: string): Promise<void> {
    await this.run('mark_redacted', 'UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND redacted_by IS NULL', [targetId, redactionId]);
    await this.run('unindex_redacted', 'DELETE FROM event_search WHERE event_nid = (SELECT event_nid FROM events WHERE event_id = $1)', [targetId]);
  }

  async setRoomHead(roomNid: number, stateGroup: number | null, lastPos: number): Promise<void> {
    await this.run('set_room_head', 'UPDATE rooms SET state_group = $2, last_pos = $3 WHERE room_nid = $1', [roomNid, stateGroup, lastPos]);
  }

  async eventById(eventId: string): Promise<{ event_id: string; stream_pos: number; json: string } | undefined> {
    const r = await this.run('event_by_id_min', 'SELECT event_id, stream_pos, json FROM events WHERE event_id = $1', [eventId]);
    return r.rows[0];
  }
}
