import type pg from 'pg';
import type { Db } from '../storage/db.ts';

/**
 * The SQL of the room engine's write path. It runs on a pg client taken from knex's pool with named
 * (prepared) statements: a send is the hot path, and planning the same statements again on every
 * send cost more PostgreSQL CPU than running them. Writes of a batch are multi-row statements.
 */
export class PersistStore {
  constructor(private db: Db) {}

  /** Runs `fn` on one pooled connection, each statement its own transaction. */
  async connection<T>(fn: (q: Query) => Promise<T>): Promise<T> {
    const client = (await this.db.client.acquireConnection()) as pg.Client;
    try {
      return await fn(new Query(client));
    } finally {
      await this.db.client.releaseConnection(client);
    }
  }

  /** Runs `fn` in one transaction on one pooled connection. */
  async transaction<T>(fn: (q: Query) => Promise<T>): Promise<T> {
    const client = (await this.db.client.acquireConnection()) as pg.Client;
    try {
      await client.query('BEGIN');
      const result = await fn(new Query(client, true));
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

/**
 * The write found a room's head moved (another worker wrote first), or deadlocked with a write of
 * authorised events to the room (which locks the room's row first: dag-store.ts): read again and retry.
 */
export function isHeadMoved(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: string }).code : undefined;
  return code === '40001' || code === '40P01';
}

export interface RoomHead {
  state_group: number | null;
  last_pos: number;
  extremities: string[];
  depth: number;
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
  redactedBy?: string;
  /** content.url is a string (what `contains_url` filters match). */
  containsUrl: boolean;
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
  readonly txns = { users: [] as string[], devices: [] as string[], txns: [] as string[], events: [] as string[] };
  readonly search = { nids: [] as number[], rooms: [] as number[], keys: [] as string[], texts: [] as string[] };
  /** New heads, and the last positions the write expects to replace (optimistic concurrency). */
  readonly heads = {
    rooms: [] as number[],
    groups: [] as Array<number | null>,
    positions: [] as number[],
    expected: [] as number[],
    extremities: [] as string[][],
    depths: [] as number[],
  };
  /** [target, redaction] for targets written before this write. */
  readonly redactions: Array<[string, string]> = [];

  /** A redaction: of an event of this very write (marked as it is inserted), or of an older one. */
  redact(target: string, redactionId: string): void {
    const ev = this.events.find((e) => e.eventId === target);
    if (!ev) {
      this.redactions.push([target, redactionId]);
      return;
    }
    ev.redactedBy ??= redactionId;
    const i = this.search.nids.indexOf(ev.nid);
    if (i >= 0) for (const col of Object.values(this.search)) col.splice(i, 1);
  }
}

/**
 * Rows another capability writes in the event's own statement (its SQL, its tables): so that what
 * it derives from the events commits with them, atomically and in the same round trip. The rooms
 * write path carries it without knowing what it is.
 */
export interface TransactionWrites {
  /** Names the statement's shape (which CTEs), so that each shape is prepared once per connection. */
  shape: string;
  /** Data-modifying CTEs (`name AS (INSERT ... RETURNING 1)`), parameters through `param`. */
  ctes(param: (value: unknown, type: string) => string): string[];
}

/** A PostgreSQL array literal of strings, each quoted. */
function arrayLiteral(items: string[]): string {
  return `{${items.map((s) => `"${s.replace(/[\\"]/g, (c) => '\\' + c)}"`).join(',')}}`;
}

export class Query {
  /** `inTransaction`: rows written through it may still be rolled back. */
  constructor(private client: pg.Client, readonly inTransaction = false) {}

  /** A statement with knex's `?` placeholders on this connection (interning, RawSql). */
  raw(sql: string, bindings: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }> {
    let n = 0;
    return this.client.query(sql.replace(/\?/g, () => `$${++n}`), bindings);
  }

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

  /** Claims a room alias; false when another room holds it (or claims it in a transaction that commits). */
  async claimAlias(alias: string, roomId: string, creator: string): Promise<boolean> {
    const r = await this.run(
      'claim_alias',
      'INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING alias',
      [alias, roomId, creator],
    );
    return r.rows.length > 0;
  }

  async chainLen(group: number): Promise<number> {
    const r = await this.run('chain_len', 'SELECT chain_len FROM state_groups WHERE state_group = $1', [group]);
    return Number(r.rows[0].chain_len);
  }

  /** Current state entries for (type_nid, state_key_nid) pairs. */
  async currentState(roomNid: number, typeNids: number[], keyNids: number[]): Promise<Array<StateEntry & { type_nid: number; state_key_nid: number }>> {
    const r = await this.run(
      'current_state_pairs',
      // LIMIT keeps each lookup a primary-key probe: a prepared (generic) plan would otherwise be
      // free to join by scanning whole tables, and these tables only grow.
      `SELECT want.type_nid, want.state_key_nid, e.event_nid, e.event_id, e.json
       FROM unnest($2::int[], $3::int[]) AS want(type_nid, state_key_nid)
       CROSS JOIN LATERAL (SELECT cs.event_nid FROM current_state cs
         WHERE cs.room_nid = $1 AND cs.type_nid = want.type_nid AND cs.state_key_nid = want.state_key_nid LIMIT 1) AS cs
       CROSS JOIN LATERAL (SELECT e.event_nid, e.event_id, e.json FROM events e WHERE e.event_nid = cs.event_nid LIMIT 1) AS e`,
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
   * One round trip before building: the rooms' heads (what the write will expect to find), event
   * nids and stream positions for n events in increasing order, and which of the given
   * transactions were already persisted (user\0device\0txn → event id).
   */
  async prepare(roomNids: number[], n: number, txnUsers: string[], txnDevices: string[], txnIds: string[]): Promise<{
    heads: Map<number, RoomHead>;
    ids: Array<{ nid: number; pos: number }>;
    prior: Map<string, string>;
  }> {
    const r = await this.run(
      'prepare_write',
      `SELECT 'h' AS k, room_nid::bigint AS a, state_group AS b, last_pos AS c, NULL::text AS u, NULL::text AS d, NULL::text AS x,
         NULL::text AS e, extremities AS ex, depth AS dp
       FROM rooms WHERE room_nid = ANY($1::int[])
       UNION ALL
       SELECT 'a', nextval('events_event_nid_seq'), nextval('stream_positions'), NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM generate_series(1, $2)
       UNION ALL
       SELECT 't', NULL, NULL, NULL, w.user_id, w.device_id, w.txn_id, t.event_id, NULL, NULL
       FROM unnest($3::text[], $4::text[], $5::text[]) AS w(user_id, device_id, txn_id)
       -- One primary-key probe per transaction (LIMIT keeps the prepared plan from turning this
       -- into a join that scans the whole, ever-growing table).
       CROSS JOIN LATERAL (SELECT event_id FROM event_txns t
         WHERE t.user_id = w.user_id AND t.device_id = w.device_id AND t.txn_id = w.txn_id LIMIT 1) AS t`,
      [roomNids, n, txnUsers, txnDevices, txnIds],
    );
    const heads = new Map<number, RoomHead>();
    const ids: Array<{ nid: number; pos: number }> = [];
    const prior = new Map<string, string>();
    for (const x of r.rows) {
      if (x.k === 'h') {
        heads.set(Number(x.a), { state_group: x.b === null ? null : Number(x.b), last_pos: Number(x.c), extremities: x.ex, depth: Number(x.dp) });
      }
      else if (x.k === 'a') ids.push({ nid: Number(x.a), pos: Number(x.b) });
      else prior.set(`${x.u}\0${x.d}\0${x.x}`, x.e);
    }
    return { heads, ids: ids.sort((a, b) => a.pos - b.pos), prior };
  }

  async allocateStateGroup(): Promise<number> {
    const r = await this.run('allocate_group', "SELECT nextval('state_groups_state_group_seq') AS g", []);
    return Number(r.rows[0].g);
  }

  /** Everything a transaction writes, in one statement of data-modifying CTEs (one round trip). */
  async write(w: WriteSet, extra?: TransactionWrites): Promise<void> {
    const ev = w.events;
    const col = <K extends keyof EventInsert>(k: K) => ev.map((r) => r[k] ?? null);
    const cur = [...w.current.values()];
    const mem = [...w.members.values()];
    const values: unknown[] = [];
    /** A placeholder for one more parameter, typed. */
    const $ = (value: unknown, type: string) => `$${values.push(value)}::${type}`;
    // Redactions of older events are rare: a plan of its own keeps them off the common plan.
    const redacting = w.redactions.length > 0;
    const redact = redacting
      ? `rd AS (UPDATE events SET redacted_by = (${$(w.redactions.map((r) => r[1]), 'text[]')})[array_position($${values.length + 1}::text[], event_id)]
           WHERE event_id = ANY(${$(w.redactions.map((r) => r[0]), 'text[]')}) AND redacted_by IS NULL RETURNING 1),
         ru AS (DELETE FROM event_search WHERE event_nid = ANY(ARRAY(SELECT event_nid FROM events WHERE event_id = ANY($${values.length}::text[]))) RETURNING 1),`
      : '';
    const extraCtes = extra ? extra.ctes($).map((c) => `${c},\n`).join('') : '';
    const sql = `WITH
       ev AS (INSERT INTO events (event_nid, event_id, room_nid, stream_pos, depth, type_nid, state_key_nid, sender, origin_server_ts,
           state_before, state_after, replaces_nid, membership, rel_type, relates_to, redacts, txn_device, txn_id, json,
           prev_event_ids, auth_event_nids, redacted_by, contains_url)
         SELECT n, i, r, sp, d, t, k, s, ts, sb, sa, rp, m, rt, rl, rd, td, ti, j, pe::text[], ae::bigint[], rb, cu
         FROM unnest(${$(col('nid'), 'bigint[]')}, ${$(col('eventId'), 'text[]')}, ${$(col('roomNid'), 'int[]')}, ${$(col('streamPos'), 'bigint[]')},
           ${$(col('depth'), 'bigint[]')}, ${$(col('typeNid'), 'int[]')}, ${$(col('stateKeyNid'), 'int[]')}, ${$(col('sender'), 'text[]')},
           ${$(col('ts'), 'bigint[]')}, ${$(col('stateBefore'), 'bigint[]')}, ${$(col('stateAfter'), 'bigint[]')}, ${$(col('replacesNid'), 'bigint[]')},
           ${$(col('membership'), 'text[]')}, ${$(col('relType'), 'text[]')}, ${$(col('relatesTo'), 'text[]')}, ${$(col('redacts'), 'text[]')},
           ${$(col('txnDevice'), 'text[]')}, ${$(col('txnId'), 'text[]')}, ${$(col('json'), 'text[]')},
           -- Arrays per row travel as array literals: unnest would flatten an array of arrays.
           ${$(ev.map((r) => arrayLiteral(r.prevEventIds)), 'text[]')}, ${$(ev.map((r) => `{${r.authEventNids.join(',')}}`), 'text[]')},
           ${$(col('redactedBy'), 'text[]')}, ${$(col('containsUrl'), 'boolean[]')})
           AS x(n, i, r, sp, d, t, k, s, ts, sb, sa, rp, m, rt, rl, rd, td, ti, j, pe, ae, rb, cu) RETURNING 1),
       sg AS (INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len)
         SELECT * FROM unnest(${$(w.groups.ids, 'bigint[]')}, ${$(w.groups.rooms, 'int[]')}, ${$(w.groups.prev, 'bigint[]')}, ${$(w.groups.chain, 'int[]')}) RETURNING 1),
       se AS (INSERT INTO state_group_entries (state_group, type_nid, state_key_nid, event_nid)
         SELECT * FROM unnest(${$(w.entries.groups, 'bigint[]')}, ${$(w.entries.types, 'int[]')}, ${$(w.entries.keys, 'int[]')}, ${$(w.entries.nids, 'bigint[]')}) RETURNING 1),
       cs AS (INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid)
         SELECT * FROM unnest(${$(cur.map((c) => c.room), 'int[]')}, ${$(cur.map((c) => c.type), 'int[]')}, ${$(cur.map((c) => c.key), 'int[]')}, ${$(cur.map((c) => c.nid), 'bigint[]')})
         ON CONFLICT (room_nid, type_nid, state_key_nid) DO UPDATE SET event_nid = EXCLUDED.event_nid RETURNING 1),
       rm AS (INSERT INTO room_memberships (user_id, room_nid, membership, event_nid, stream_pos, sender, forgotten)
         SELECT u, r, m, e, p, s, FALSE FROM unnest(${$(mem.map((m) => m.user), 'text[]')}, ${$(mem.map((m) => m.room), 'int[]')}, ${$(mem.map((m) => m.membership), 'text[]')},
           ${$(mem.map((m) => m.nid), 'bigint[]')}, ${$(mem.map((m) => m.pos), 'bigint[]')}, ${$(mem.map((m) => m.sender), 'text[]')}) AS x(u, r, m, e, p, s)
         ON CONFLICT (user_id, room_nid) DO UPDATE SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid,
           stream_pos = EXCLUDED.stream_pos, sender = EXCLUDED.sender, forgotten = FALSE RETURNING 1),
       tx AS (INSERT INTO event_txns (user_id, device_id, txn_id, event_id)
         SELECT * FROM unnest(${$(w.txns.users, 'text[]')}, ${$(w.txns.devices, 'text[]')}, ${$(w.txns.txns, 'text[]')}, ${$(w.txns.events, 'text[]')})
         ON CONFLICT DO NOTHING RETURNING 1),
       sr AS (INSERT INTO event_search (event_nid, room_nid, key, vector)
         SELECT n, r, k, to_tsvector('simple', t)
         FROM unnest(${$(w.search.nids, 'bigint[]')}, ${$(w.search.rooms, 'int[]')}, ${$(w.search.keys, 'text[]')}, ${$(w.search.texts, 'text[]')}) AS x(n, r, k, t) RETURNING 1),
       ${redact}${extraCtes}
       -- Each room's head must still be what was read before building: else another worker wrote.
       -- Waiting on the row lock of an earlier write, this re-reads the row once that commits.
       rh AS (UPDATE rooms SET state_group = x.g, last_pos = x.p, extremities = x.e::text[], depth = x.dp
         FROM unnest(${$(w.heads.rooms, 'int[]')}, ${$(w.heads.groups, 'bigint[]')}, ${$(w.heads.positions, 'bigint[]')},
           ${$(w.heads.expected, 'bigint[]')}, ${$(w.heads.extremities.map(arrayLiteral), 'text[]')}, ${$(w.heads.depths, 'bigint[]')}) AS x(n, g, p, old, e, dp)
         WHERE rooms.room_nid = x.n AND rooms.last_pos = x.old RETURNING 1)
       SELECT CASE WHEN (SELECT count(*) FROM rh) = ${$(w.heads.rooms.length, 'int')} THEN 0 ELSE room_head_moved() END AS ok`;
    await this.run(`${redacting ? 'write_batch_redacting' : 'write_batch'}${extra ? `+${extra.shape}` : ''}`, sql, values);
  }

  async eventById(eventId: string): Promise<{ event_id: string; stream_pos: number; json: string } | undefined> {
    const r = await this.run('event_by_id_min', 'SELECT event_id, stream_pos, json FROM events WHERE event_id = $1', [eventId]);
    return r.rows[0];
  }
}
