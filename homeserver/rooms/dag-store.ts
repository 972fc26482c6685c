import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';
import type { EventInsert, RoomHead, TransactionWrites } from './persist-store.ts';

/** An event as the DAG path needs it: its place, its state snapshots and its flags. */
export interface DagEventRow {
  event_nid: number;
  event_id: string;
  room_nid: number;
  stream_pos: number;
  depth: number;
  type_nid: number;
  state_key_nid: number | null;
  state_before: number;
  state_after: number;
  outlier: boolean;
  rejected: boolean;
  soft_failed: boolean;
  json: string;
}

/** One entry of a state snapshot: (type, state key) → event, with the interned ids. */
export interface GroupEntry {
  type: string;
  state_key: string;
  type_nid: number;
  state_key_nid: number;
  event_nid: number;
  event_id: string;
}

/** A row of `events` as the DAG path writes it: a local event's row without a transaction id, with its outcome. */
export interface DagEventInsert extends Omit<EventInsert, 'txnDevice' | 'txnId'> {
  outlier: boolean;
  rejected: boolean;
  softFailed: boolean;
  /** The redaction that applies to it (stored before it, or in the same call). */
  redactedBy?: string;
}

export interface DagWrite {
  roomNid: number;
  /** Rows of outliers being persisted again with their state: replaced (same nid). */
  replaced: number[];
  events: DagEventInsert[];
  groups: Array<{ id: number; prev: number | null; chainLen: number; entries: Array<{ typeNid: number; keyNid: number; nid: number }> }>;
  currentSet: Array<{ typeNid: number; keyNid: number; nid: number }>;
  currentDeleted: Array<{ typeNid: number; keyNid: number }>;
  memberships: Array<{ user: string; membership: string; nid: number; pos: number; sender: string }>;
  gapsAdded: Array<{ missing: string; waiting: number }>;
  gapsFilled: string[];
  /** Full-text search rows of accepted events. */
  search: Array<{ nid: number; key: string; text: string }>;
  /** [target, redaction] for targets stored before this call. */
  redactions: Array<[string, string]>;
  head?: RoomHead;
}

const DAG_COLUMNS = `e.event_nid, e.event_id, e.room_nid, e.stream_pos, e.depth, e.type_nid, e.state_key_nid, e.state_before,
  e.state_after, e.outlier, e.rejected, e.soft_failed, e.json`;

function numeric(r: Record<string, unknown>): DagEventRow {
  return {
    ...(r as unknown as DagEventRow),
    event_nid: Number(r.event_nid), room_nid: Number(r.room_nid), stream_pos: Number(r.stream_pos), depth: Number(r.depth),
    type_nid: Number(r.type_nid), state_key_nid: r.state_key_nid === null ? null : Number(r.state_key_nid),
    state_before: Number(r.state_before), state_after: Number(r.state_after),
  };
}

/** The SQL of persisting authorised events (rooms/dag.ts): one transaction per call. */
export class DagStore {
  constructor(readonly db: Db) {}

  transaction<T>(fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return this.db.transaction(fn);
  }

  /** The room's head, locked until the transaction ends (a local write waits, then retries). */
  async lockRoom(trx: Knex, roomId: string): Promise<{ roomNid: number; version: string; head: RoomHead } | undefined> {
    const r = await trx.raw('SELECT room_nid, room_version, state_group, last_pos, extremities, depth FROM rooms WHERE room_id = ? FOR UPDATE', [roomId]);
    const x = r.rows[0];
    if (!x) return undefined;
    return {
      roomNid: Number(x.room_nid),
      version: x.room_version,
      head: { state_group: x.state_group === null ? null : Number(x.state_group), last_pos: Number(x.last_pos), extremities: x.extremities, depth: Number(x.depth) },
    };
  }

  /** A room first known through its create event (ON CONFLICT: another transaction made it first). */
  async insertRoom(trx: Knex, roomId: string, version: string, creator: string): Promise<void> {
    await trx.raw('INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT (room_id) DO NOTHING', [roomId, version, creator, Date.now()]);
  }

  async eventsById(trx: Knex, ids: string[]): Promise<DagEventRow[]> {
    if (!ids.length) return [];
    const r = await trx.raw(`SELECT ${DAG_COLUMNS} FROM events e WHERE e.event_id = ANY(?)`, [ids]);
    return r.rows.map(numeric);
  }

  async eventsByNid(trx: Knex, nids: number[]): Promise<DagEventRow[]> {
    if (!nids.length) return [];
    const r = await trx.raw(`SELECT ${DAG_COLUMNS} FROM events e WHERE e.event_nid = ANY(?)`, [nids]);
    return r.rows.map(numeric);
  }

  /** The whole state at each snapshot (delta chains walked) and each snapshot's chain length. */
  async groups(trx: Knex, groups: number[]): Promise<Map<number, { chainLen: number; entries: GroupEntry[] }>> {
    const out = new Map<number, { chainLen: number; entries: GroupEntry[] }>();
    if (!groups.length) return out;
    const r = await trx.raw(
      `WITH RECURSIVE chain(root, state_group, prev_group, n) AS (
         SELECT state_group, state_group, prev_group, 0 FROM state_groups WHERE state_group = ANY(?)
         UNION ALL
         SELECT c.root, g.state_group, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.state_group = c.prev_group
       ),
       entries AS (
         SELECT DISTINCT ON (c.root, se.type_nid, se.state_key_nid) c.root, se.type_nid, se.state_key_nid, se.event_nid
         FROM chain c JOIN state_group_entries se ON se.state_group = c.state_group
         ORDER BY c.root, se.type_nid, se.state_key_nid, c.n
       )
       SELECT 'g' AS k, g.state_group AS root, g.chain_len AS type_nid, NULL::int AS state_key_nid, NULL::bigint AS event_nid,
         NULL::text AS event_id, NULL::text AS type, NULL::text AS state_key
       FROM state_groups g WHERE g.state_group = ANY(?)
       UNION ALL
       SELECT 'e', en.root, en.type_nid, en.state_key_nid, en.event_nid, e.event_id, t.type, sk.state_key
       FROM entries en JOIN events e ON e.event_nid = en.event_nid JOIN event_types t ON t.type_nid = en.type_nid
       JOIN state_keys sk ON sk.state_key_nid = en.state_key_nid`,
      [groups, groups],
    );
    for (const x of r.rows) {
      const root = Number(x.root);
      let g = out.get(root);
      if (!g) out.set(root, (g = { chainLen: 0, entries: [] }));
      if (x.k === 'g') g.chainLen = Number(x.type_nid);
      else g.entries.push({ type: x.type, state_key: x.state_key, type_nid: Number(x.type_nid), state_key_nid: Number(x.state_key_nid), event_nid: Number(x.event_nid), event_id: x.event_id });
    }
    return out;
  }

  /** n ids of a sequence, increasing. */
  async nextIds(trx: Knex, sequence: 'events_event_nid_seq' | 'state_groups_state_group_seq' | 'stream_positions' | 'backfill_positions', n: number): Promise<number[]> {
    if (n <= 0) return [];
    const r = await trx.raw('SELECT nextval(?::regclass) AS v FROM generate_series(1, ?)', [sequence, n]);
    return r.rows.map((x: { v: string }) => Number(x.v)).sort((a: number, b: number) => a - b);
  }

  /** Redactions stored (with their state) that target one of these events. */
  async redactionsOf(trx: Knex, roomNid: number, eventIds: string[]): Promise<Array<{ event_id: string; redacts: string; sender: string }>> {
    if (!eventIds.length) return [];
    const r = await trx.raw(
      `SELECT event_id, redacts, sender FROM events WHERE redacts = ANY(?) AND room_nid = ? AND NOT outlier AND NOT rejected AND NOT soft_failed`,
      [eventIds, roomNid],
    );
    return r.rows;
  }

  /** Outliers waiting for one of these events (their missing prev events). */
  async waitingOn(trx: Knex, roomNid: number, eventIds: string[]): Promise<DagEventRow[]> {
    if (!eventIds.length) return [];
    const r = await trx.raw(
      `SELECT ${DAG_COLUMNS} FROM events e WHERE e.event_nid IN (
         SELECT waiting_event_nid FROM room_backfill_points WHERE room_nid = ? AND missing_event_id = ANY(?)) AND e.outlier`,
      [roomNid, eventIds],
    );
    return r.rows.map(numeric);
  }

  /** A room's gaps: the prev events it misses, with the outliers that wait for each. */
  async backfillPoints(roomNid: number): Promise<Array<{ missing_event_id: string; waiting_event_id: string; depth: number }>> {
    const r = await this.db.raw(
      `SELECT p.missing_event_id, e.event_id AS waiting_event_id, e.depth FROM room_backfill_points p
       JOIN events e ON e.event_nid = p.waiting_event_nid WHERE p.room_nid = ? ORDER BY e.depth DESC, p.missing_event_id`,
      [roomNid],
    );
    return r.rows.map((x: { missing_event_id: string; waiting_event_id: string; depth: string }) => ({ ...x, depth: Number(x.depth) }));
  }

  /**
   * State snapshots (immutable, referenced by id). On `this.db` rather than the transaction, they
   * commit before it: what reads a snapshot on another connection meanwhile (push evaluation of
   * the events) finds it; if the transaction fails they stay unreferenced.
   */
  async insertGroups(db: Knex, roomNid: number, groups: DagWrite['groups']): Promise<void> {
    if (!groups.length) return;
    await db.raw('INSERT INTO state_groups (state_group, room_nid, prev_group, chain_len) SELECT * FROM unnest(?::bigint[], ?::int[], ?::bigint[], ?::int[])', bind([
      groups.map((g) => g.id), groups.map(() => roomNid), groups.map((g) => g.prev), groups.map((g) => g.chainLen),
    ]));
    const entries = groups.flatMap((g) => g.entries.map((e) => ({ g: g.id, ...e })));
    if (entries.length) {
      await db.raw('INSERT INTO state_group_entries (state_group, type_nid, state_key_nid, event_nid) SELECT * FROM unnest(?::bigint[], ?::int[], ?::int[], ?::bigint[])', [
        entries.map((e) => e.g), entries.map((e) => e.typeNid), entries.map((e) => e.keyNid), entries.map((e) => e.nid),
      ]);
    }
  }

  /** Everything one call persists, in the caller's transaction. */
  async write(trx: Knex, w: DagWrite, extra?: TransactionWrites): Promise<void> {
    if (w.replaced.length) await trx.raw('DELETE FROM events WHERE event_nid = ANY(?) AND outlier', [w.replaced]);
    const ev = w.events;
    if (ev.length) {
      const col = <K extends keyof DagEventInsert>(k: K) => ev.map((r) => r[k] ?? null);
      await trx.raw(
        `INSERT INTO events (event_nid, event_id, room_nid, stream_pos, depth, type_nid, state_key_nid, sender, origin_server_ts,
           state_before, state_after, replaces_nid, membership, rel_type, relates_to, redacts, json, prev_event_ids, auth_event_nids,
           outlier, rejected, soft_failed, contains_url, redacted_by)
         SELECT n, i, r, sp, d, t, k, s, ts, sb, sa, rp, m, rt, rl, rd, j, pe::text[], ae::bigint[], o, rj, sf, cu, rb
         FROM unnest(?::bigint[], ?::text[], ?::int[], ?::bigint[], ?::bigint[], ?::int[], ?::int[], ?::text[], ?::bigint[], ?::bigint[],
           ?::bigint[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::boolean[], ?::boolean[],
           ?::boolean[], ?::boolean[], ?::text[])
           AS x(n, i, r, sp, d, t, k, s, ts, sb, sa, rp, m, rt, rl, rd, j, pe, ae, o, rj, sf, cu, rb)`,
        bind([
          col('nid'), col('eventId'), col('roomNid'), col('streamPos'), col('depth'), col('typeNid'), col('stateKeyNid'), col('sender'), col('ts'),
          col('stateBefore'), col('stateAfter'), col('replacesNid'), col('membership'), col('relType'), col('relatesTo'), col('redacts'), col('json'),
          ev.map((r) => arrayLiteral(r.prevEventIds)), ev.map((r) => `{${r.authEventNids.join(',')}}`),
          col('outlier'), col('rejected'), col('softFailed'), col('containsUrl'), col('redactedBy'),
        ]),
      );
    }
    await this.insertGroups(trx, w.roomNid, w.groups);
    if (w.currentDeleted.length) {
      await trx.raw('DELETE FROM current_state WHERE room_nid = ? AND (type_nid, state_key_nid) IN (SELECT * FROM unnest(?::int[], ?::int[]))', [
        w.roomNid, w.currentDeleted.map((c) => c.typeNid), w.currentDeleted.map((c) => c.keyNid),
      ]);
    }
    if (w.currentSet.length) {
      await trx.raw(
        `INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid) SELECT ?, * FROM unnest(?::int[], ?::int[], ?::bigint[])
         ON CONFLICT (room_nid, type_nid, state_key_nid) DO UPDATE SET event_nid = EXCLUDED.event_nid`,
        [w.roomNid, w.currentSet.map((c) => c.typeNid), w.currentSet.map((c) => c.keyNid), w.currentSet.map((c) => c.nid)],
      );
    }
    if (w.memberships.length) {
      const m = w.memberships;
      await trx.raw(
        `INSERT INTO room_memberships (user_id, room_nid, membership, event_nid, stream_pos, sender, forgotten)
         SELECT u, ?, mm, e, p, s, FALSE FROM unnest(?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::text[]) AS x(u, mm, e, p, s)
         ON CONFLICT (user_id, room_nid) DO UPDATE SET membership = EXCLUDED.membership, event_nid = EXCLUDED.event_nid,
           stream_pos = EXCLUDED.stream_pos, sender = EXCLUDED.sender, forgotten = FALSE`,
        [w.roomNid, m.map((x) => x.user), m.map((x) => x.membership), m.map((x) => x.nid), m.map((x) => x.pos), m.map((x) => x.sender)],
      );
    }
    if (w.search.length) {
      await trx.raw(
        "INSERT INTO event_search (event_nid, room_nid, key, vector) SELECT n, ?, k, to_tsvector('simple', t) FROM unnest(?::bigint[], ?::text[], ?::text[]) AS x(n, k, t)",
        [w.roomNid, w.search.map((x) => x.nid), w.search.map((x) => x.key), w.search.map((x) => x.text)],
      );
    }
    if (w.redactions.length) {
      const targets = w.redactions.map((r) => r[0]);
      await trx.raw(
        `UPDATE events e SET redacted_by = x.r FROM unnest(?::text[], ?::text[]) AS x(t, r)
         WHERE e.event_id = x.t AND e.room_nid = ? AND e.redacted_by IS NULL`,
        [targets, w.redactions.map((r) => r[1]), w.roomNid],
      );
      await trx.raw('DELETE FROM event_search WHERE event_nid IN (SELECT event_nid FROM events WHERE event_id = ANY(?) AND room_nid = ?)', [targets, w.roomNid]);
    }
    if (w.gapsFilled.length) await trx.raw('DELETE FROM room_backfill_points WHERE room_nid = ? AND missing_event_id = ANY(?)', [w.roomNid, w.gapsFilled]);
    if (w.gapsAdded.length) {
      await trx.raw('INSERT INTO room_backfill_points (room_nid, missing_event_id, waiting_event_nid) SELECT ?, * FROM unnest(?::text[], ?::bigint[]) ON CONFLICT DO NOTHING', [
        w.roomNid, w.gapsAdded.map((g) => g.missing), w.gapsAdded.map((g) => g.waiting),
      ]);
    }
    if (extra) {
      // Another capability's rows (push actions), in this transaction: its CTEs, with knex placeholders.
      const values: unknown[] = [];
      const ctes = extra.ctes((value, type) => {
        values.push(value);
        return `?::${type}`;
      });
      await trx.raw(`WITH ${ctes.join(',\n')} SELECT 1`, bind(values));
    }
    if (w.head) {
      await trx.raw('UPDATE rooms SET state_group = ?, last_pos = ?, extremities = ?::text[], depth = ? WHERE room_nid = ?', [
        w.head.state_group, w.head.last_pos, arrayLiteral(w.head.extremities), w.head.depth, w.roomNid,
      ]);
    }
  }
}

/** Arrays with NULLs are bindings knex passes on as they are. */
function bind(values: unknown[]): Knex.RawBinding[] {
  return values as Knex.RawBinding[];
}

/** A PostgreSQL array literal of strings, each quoted. */
function arrayLiteral(items: string[]): string {
  return `{${items.map((s) => `"${s.replace(/[\\"]/g, (c) => '\\' + c)}"`).join(',')}}`;
}
