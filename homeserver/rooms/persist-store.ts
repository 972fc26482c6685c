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
   * Runs `fn` in one transaction on one pooled connection. The transaction starts holding the
   * given rooms' locks (events of one room are persisted in order, across workers too; taken in
   * ascending order, so two transactions never wait on each other in a cycle), and `fn` gets each
   * room's head as read under its lock: BEGIN, locks and heads in one round trip.
   */
  async transaction<T>(roomNids: number[], fn: (q: Query, heads: Map<number, RoomHead>) => Promise<T>): Promise<T> {
    const client = (await this.db.client.acquireConnection()) as pg.Client;
    const q = new Query(client);
    try {
      const heads = new Map<number, RoomHead>();
      if (!roomNids.length) await client.query('BEGIN');
      else {
        if (!roomNids.every(Number.isSafeInteger)) throw new Error(`bad room nids ${roomNids.join(',')}`);
        const list = roomNids.join(',');
        const results = (await client.query(
          `BEGIN;
           SELECT pg_advisory_xact_lock(1, n) FROM (SELECT unnest(ARRAY[${list}]::int[]) AS n ORDER BY 1) AS sorted;
           SELECT room_nid, state_group, last_pos FROM rooms WHERE room_nid IN (${list})`,
        )) as unknown as pg.QueryResult[];
        for (const row of results[2]!.rows) {
          heads.set(Number(row.room_nid), { state_group: row.state_group === null ? null : Number(row.state_group), last_pos: Number(row.last_pos) });
        }
      }
      const result = await fn(q, heads);
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
  prevEventIds: string[];
  authEventNids: number[];
  json: string;
}

/**
 * The rows a transaction writes, for any number of rooms, column by column: one multi-row
 * statement per table, all in one round trip.
 */
export class WriteSet {
  readonly events: EventInsert[] = [];
  readonly groups = { ids: [] as number[], rooms: [] as number[], prev: [] as Array<number | null>, chain: [] as number[] };
  readonly entries = { groups: [] as number[], types: [] as number[], keys: [] as number[], nids: [] as number[] };
  /** Last write wins per (room, type, state key) and per (room, user): one row each. */
  readonly current = new Map<string, { room: number; type: number; key: number; nid: number }>();
  readonly members = new Map<string, { room: number; user: string; membership: string; nid: number; pos: number; sender: string }>();
  readonly extremities = { remove: [] as string[], rooms: [] as number[], add: [] as string[] };
  readonly txns = { users: [] as string[], devices: [] as string[], txns: [] as string[], events: [] as string[] };
  readonly search = { nids: [] as number[], rooms: [] as number[], keys: [] as string[], texts: [] as string[] };
  readonly heads = { rooms: [] as number[], groups: [] as Array<number | null>, positions: [] as number[] };
  /** Applied after the insert: a redaction may target an event of the same transaction. */
  readonly redactions: Array<[string, string]> = [];
}

/** A PostgreSQL array literal of strings, each quoted. */
function arrayLiteral(items: string[]): string {
  return `{${items.map((s) => `"${s.replace(/[\\"]/g, (c) => '\\' + c)}"`).join(',')}}`;
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

  /** Everything a transaction writes, in one statement of data-modifying CTEs (one round trip). */
  async write(w: WriteSet): Promise<void> {
    const ev = w.events;
    const col = <K extends keyof EventInsert>(k: K) => ev.map((r) => r[k]);
    const cur = [...w.current.values()];
    const mem = [...w.members.values()];
    await this.run(
      'write_batch',
      `WITH
       ev AS (INSERT INTO events (event_nid, event_id, room_nid, stream_pos, depth, type_nid, state_key_nid, sender, origin_server_ts,
           state_before, state_after, replaces_nid, membership, rel_type, relates_to, redacts, txn_device, txn_id, json,
           prev_event_ids, auth_event_nids)
         SELECT n, i, r, sp, d, t, k, s, ts, sb, sa, rp, m, rt, rl, rd, td, ti, j, pe::text[], ae::bigint[]
         FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::int[], $7::int[], $8::text[],
           $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
           $18::text[], $19::text[], $20::text[], $21::text[])
           AS x(n, i, r, sp, d, t, k, s, ts, sb, sa, rp, m, rt, rl, rd, td, ti, j, pe, ae) RETURNING 1),
       sg AS (INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len)
         SELECT * FROM unnest($22::bigint[], $23::int[], $24::bigint[], $25::int[]) RETURNING 1),
       se AS (INSERT INTO state_group_entries (state_group, type_nid, state_key_nid, event_nid)
         SELECT * FROM unnest($26::bigint[], $27::int[], $28::int[], $29::bigint[]) RETURNING 1),
       cs AS (INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid)
         SELECT * FROM unnest($30::int[], $31::int[], $32::int[], $33::bigint[])
         ON CONFLICT (room_nid, type_nid, state_key_nid) DO UPDATE SET event_nid = EXCLUDED.event_nid RETURNING 1),
       rm AS (INSERT INTO room_memberships (user_id, room_nid, membership, event_nid, stream_pos, sender, forgotten)
         SELECT u, r, m, e, p, s, FALSE FROM unnest($34::text[], $35::int[], $36::text[], $37::bigint[], $38::bigint[], $39::text[]) AS x(u, r, m, e, p, s)
         ON CONFLICT (user_id, room_nid) DO UPDATE SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid,
           stream_pos = EXCLUDED.stream_pos, sender = EXCLUDED.sender, forgotten = FALSE RETURNING 1),
       fd AS (DELETE FROM forward_extremities WHERE event_id = ANY($40::text[]) RETURNING 1),
       fi AS (INSERT INTO forward_extremities (room_nid, event_id) SELECT * FROM unnest($41::int[], $42::text[]) ON CONFLICT DO NOTHING RETURNING 1),
       tx AS (INSERT INTO event_txns (user_id, device_id, txn_id, event_id) SELECT * FROM unnest($43::text[], $44::text[], $45::text[], $46::text[])
         ON CONFLICT DO NOTHING RETURNING 1),
       sr AS (INSERT INTO event_search (event_nid, room_nid, key, vector)
         SELECT n, r, k, to_tsvector('simple', t) FROM unnest($47::bigint[], $48::int[], $49::text[], $50::text[]) AS x(n, r, k, t) RETURNING 1),
       rh AS (UPDATE rooms SET state_group = x.g, last_pos = x.p FROM unnest($51::int[], $52::bigint[], $53::bigint[]) AS x(n, g, p)
         WHERE rooms.room_nid = x.n RETURNING 1)
       SELECT 1`,
      [col('nid'), col('eventId'), col('roomNid'), col('streamPos'), col('depth'), col('typeNid'), col('stateKeyNid'), col('sender'),
        col('ts'), col('stateBefore'), col('stateAfter'), col('replacesNid'), col('membership'), col('relType'), col('relatesTo'),
        col('redacts'), col('txnDevice'), col('txnId'), col('json'),
        // Arrays per row travel as array literals: unnest would flatten an array of arrays.
        ev.map((r) => arrayLiteral(r.prevEventIds)), ev.map((r) => `{${r.authEventNids.join(',')}}`),
        w.groups.ids, w.groups.rooms, w.groups.prev, w.groups.chain,
        w.entries.groups, w.entries.types, w.entries.keys, w.entries.nids,
        cur.map((c) => c.room), cur.map((c) => c.type), cur.map((c) => c.key), cur.map((c) => c.nid),
        mem.map((m) => m.user), mem.map((m) => m.room), mem.map((m) => m.membership), mem.map((m) => m.nid), mem.map((m) => m.pos), mem.map((m) => m.sender),
        w.extremities.remove, w.extremities.rooms, w.extremities.add,
        w.txns.users, w.txns.devices, w.txns.txns, w.txns.events,
        w.search.nids, w.search.rooms, w.search.keys, w.search.texts,
        w.heads.rooms, w.heads.groups, w.heads.positions],
    );
    for (const [target, redaction] of w.redactions) await this.markRedacted(target, redaction);
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
