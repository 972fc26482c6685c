import type { EventRow, RelationRow } from './store.ts';
import type { RoomEventFilter } from './filter.ts';
import type { RoomMembersSummary, TimelineWindow } from './sync-read-store.ts';

/** Where the cache reads from (the room engine's stores, through RoomReader). */
export interface RecentEventsSource {
  /** The newest `limit` events of each window, newest first (SyncReadStore.timelines). */
  timelines(windows: TimelineWindow[], limit: number, filter: RoomEventFilter | undefined): Promise<Map<number, EventRow[]>>;
  /** The whole state at each of some snapshots (one statement). */
  statesAtGroups(groups: number[]): Promise<Map<number, EventRow[]>>;
  /** Member counts and hero candidates of some rooms. */
  summaries(roomNids: number[]): Promise<Map<number, RoomMembersSummary>>;
}

export interface RecentEventsLimits {
  /** Events kept over all rooms (timeline rows and cached state rows). */
  maxEvents: number;
  /** Newest events kept per room (a timeline asks for at most 101). */
  perRoom: number;
  /** A state snapshot larger than this is not kept (a huge room's state is read per sync, filtered in SQL). */
  maxStateRows: number;
}

const DEFAULT_LIMITS: RecentEventsLimits = { maxEvents: 40_000, perRoom: 128, maxStateRows: 5_000 };
/**
 * Events read for a room not kept yet: enough for the timelines clients ask (Element 20, the
 * default 10, each plus one), not the whole per-room allowance: an initial sync over 500 rooms
 * reads 500 × this. A room that stays busy grows to `perRoom` as new events arrive.
 */
const COLD_FILL = 32;
/** State snapshots kept per room: the current one and the one before it. */
const STATES_PER_ROOM = 2;

interface RoomEntry {
  nid: number;
  /** Rows are complete in (from, upto]: every event of the room in that range is in `rows`. */
  from: number;
  /** -1: nothing read yet. Never above a position the caller was allowed to read (tracker.current()). */
  upto: number;
  /** Oldest first. Shared by every reader: never mutated once handed out (arrays are replaced, rows never touched). */
  rows: EventRow[];
  /** The read in flight that brings this room forward (shared by everyone waiting on it). */
  loading?: Promise<void>;
  /** State snapshots by group, with their row count once read. */
  states: Map<number, { rows: Promise<EventRow[]>; n: number }>;
  stateRows: number;
  /** What this entry adds to the cache's total now. */
  counted: number;
  stateTooBig: boolean;
  summary?: Promise<RoomMembersSummary>;
}

/** Counters for tests and benchmarks (how many reads the cache made for how many asks). */
export interface RecentEventsStats {
  /** Statements reading timelines to fill or extend the cache. */
  loads: number;
  /** Rooms those statements covered. */
  loadedRooms: number;
  /** Windows asked for; windows served from memory. */
  windows: number;
  hits: number;
  /** Statements reading windows the cache could not serve. */
  fallbacks: number;
  stateLoads: number;
  summaryLoads: number;
}

/**
 * The recent events of each room, shared by every /sync that reads them: woken by one send, a
 * thousand long-polls read the new event with one statement (the first to ask starts it, the others
 * wait on the same promise), then each decides visibility and formats it for its user in memory.
 *
 * Per room it keeps the newest events up to a position the caller may read (the persisted-up-to
 * ceiling: a sync never asks beyond tracker.current()), complete between two positions, plus the
 * state snapshots and member summary recent syncs needed. Bounded: LRU over rooms, by the total
 * of events kept.
 *
 * Rows change after they are written in one way only: a redaction sets `redacted_by`. A redaction
 * is itself an event of the same room with a later position, so extending a room past it reads
 * it; then the room's cached rows and state are read again. Every sync extends a room to its own
 * `to` before reading anything else of it, so nothing cached is served unredacted past a
 * redaction the sync could see, whichever worker wrote it.
 */
export class RecentEvents {
  private rooms = new Map<number, RoomEntry>();
  private total = 0;
  readonly stats: RecentEventsStats = { loads: 0, loadedRooms: 0, windows: 0, hits: 0, fallbacks: 0, stateLoads: 0, summaryLoads: 0 };
  private limits: RecentEventsLimits;

  constructor(private source: RecentEventsSource, limits: Partial<RecentEventsLimits> = {}, private trace?: (what: string, n: number) => void) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /**
   * The newest `limit` events of each window that pass the filter, newest first, as
   * SyncReadStore.timelines: from memory where the cache covers the window, else from the database
   * (every uncovered window in one statement).
   */
  async timelines(windows: TimelineWindow[], limit: number, filter: RoomEventFilter | undefined): Promise<Map<number, EventRow[]>> {
    const out = new Map<number, EventRow[]>(windows.map((w) => [w.roomNid, []]));
    if (!windows.length || limit <= 0) return out;
    const match = compileFilter(filter);
    if (!match) return this.source.timelines(windows, limit, filter);
    await this.bring(windows, limit);
    this.stats.windows += windows.length;
    const missed: TimelineWindow[] = [];
    for (const w of windows) {
      const rows = this.window(w, limit, match);
      if (rows) {
        out.set(w.roomNid, rows);
        this.stats.hits++;
      } else missed.push(w);
    }
    if (missed.length) {
      this.stats.fallbacks++;
      for (const [nid, rows] of await this.source.timelines(missed, limit, filter)) out.set(nid, rows);
    }
    return out;
  }

  /**
   * Brings each room to (at least) its window's upper bound. Call before reading a room's state or
   * summary from the cache: it is what notices redactions up to that position.
   */
  async bring(windows: Array<{ roomNid: number; upper: number }>, limit = 0): Promise<void> {
    const byUpper = new Map<number, number[]>();
    for (const w of windows) {
      const list = byUpper.get(w.upper) ?? [];
      list.push(w.roomNid);
      byUpper.set(w.upper, list);
    }
    const cold = Math.min(this.limits.perRoom, Math.max(COLD_FILL, limit));
    await Promise.all([...byUpper].map(([upper, nids]) => this.ensure(nids, upper, cold)));
  }

  /**
   * The whole state at a snapshot of a room, shared; undefined when not kept (the caller reads it
   * itself). Only once the room was brought to `upper` (the reader's position): then every
   * redaction up to it has been noticed.
   */
  stateAt(roomNid: number, group: number, upper: number): Promise<EventRow[]> | undefined {
    const e = this.rooms.get(roomNid);
    if (!e || e.stateTooBig || e.upto < 0 || e.upto < upper) return undefined;
    const hit = e.states.get(group);
    if (hit) return hit.rows;
    const entry = { rows: this.stateRead(group), n: 0 };
    e.states.set(group, entry);
    while (e.states.size > STATES_PER_ROOM) e.states.delete(e.states.keys().next().value as number);
    this.recount(e);
    entry.rows.then((rows) => {
      if (e.states.get(group) !== entry) return;
      if (rows.length > this.limits.maxStateRows) {
        e.stateTooBig = true;
        e.states.delete(group);
      } else entry.n = rows.length;
      this.recount(e);
      this.evict();
    }, () => {
      if (e.states.get(group) === entry) e.states.delete(group);
      this.recount(e);
    });
    return entry.rows;
  }

  /** State reads asked in this turn of the event loop: read together, one statement. */
  private pendingStates = new Map<number, Array<{ resolve: (rows: EventRow[]) => void; reject: (e: unknown) => void }>>();

  private stateRead(group: number): Promise<EventRow[]> {
    return new Promise((resolve, reject) => {
      const waiters = this.pendingStates.get(group);
      if (waiters) {
        waiters.push({ resolve, reject });
        return;
      }
      this.pendingStates.set(group, [{ resolve, reject }]);
      if (this.pendingStates.size > 1) return;
      setImmediate(() => {
        const batch = this.pendingStates;
        this.pendingStates = new Map();
        this.stats.stateLoads++;
        this.trace?.('state', batch.size);
        this.source.statesAtGroups([...batch.keys()]).then((m) => {
          for (const [g, ws] of batch) for (const w of ws) w.resolve(m.get(g) ?? []);
        }, (e) => {
          for (const ws of batch.values()) for (const w of ws) w.reject(e);
        });
      });
    });
  }

  /** Member counts and hero candidates of rooms, from the cache where kept, the rest in one statement. */
  async summaries(roomNids: number[]): Promise<Map<number, RoomMembersSummary>> {
    const out = new Map<number, RoomMembersSummary>();
    const missing: number[] = [];
    const waits: Array<Promise<void>> = [];
    for (const nid of roomNids) {
      const p = this.rooms.get(nid)?.summary;
      if (p) waits.push(p.then((s) => void out.set(nid, s)));
      else missing.push(nid);
    }
    if (missing.length) {
      this.stats.summaryLoads++;
      this.trace?.('summary', missing.length);
      const read = this.source.summaries(missing);
      for (const nid of missing) {
        const e = this.rooms.get(nid);
        if (e && e.upto >= 0) {
          const one = read.then((m) => m.get(nid)!);
          e.summary = one;
          // A failed read is not kept.
          one.catch(() => { if (e.summary === one) e.summary = undefined; });
        }
      }
      waits.push(read.then((m) => { for (const nid of missing) out.set(nid, m.get(nid)!); }));
    }
    await Promise.all(waits);
    return out;
  }

  /** The database's one writer (the room engine, when no other process writes): see trustWriter. */
  private writer: { lastCommitted(roomNid: number): number | undefined } | undefined;

  /**
   * The room engine, as the one writer: `lastCommitted` is the last position it committed in a
   * room (undefined when it cannot tell). A room kept up to that position has nothing more to read
   * up to any readable position, so bringing it forward costs no statement.
   */
  trustWriter(writer: { lastCommitted(roomNid: number): number | undefined }): void {
    this.writer = writer;
  }

  /**
   * The rows the one writer just made readable in a room, the room's last position before them
   * being `before`: appended to a room kept up to exactly there (else the next sync reads them).
   * A redaction is not appended: the room is read again, as when a read meets one.
   */
  written(roomNid: number, before: number, rows: EventRow[]): void {
    const e = this.rooms.get(roomNid);
    if (!e || e.loading || e.upto < before || rows.length === 0) return;
    if (e.upto >= Number(rows[0]!.stream_pos)) return;
    if (rows.some((r) => r.type === 'm.room.redaction')) return;
    const n = this.limits.perRoom;
    let kept = e.rows.concat(rows);
    if (kept.length > n) {
      kept = kept.slice(kept.length - n);
      e.from = Math.max(e.from, Number(kept[0]!.stream_pos) - 1);
    }
    e.rows = kept;
    e.upto = Number(rows[rows.length - 1]!.stream_pos);
    if (rows.some((r) => r.type === 'm.room.member')) e.summary = undefined;
    this.recount(e);
    this.evict();
  }

  /**
   * The bundled-aggregation relations (m.replace, m.thread, m.reference; not redacted) of events a
   * sync reading up to `at` shows, oldest first, where the cache can tell them: the target's room
   * is kept complete from before the target up to `at`, so every relation to it up to there (a
   * relation is in its target's room, and comes after it) is among the kept rows. `unknown`: the
   * ids whose relations the caller reads from the database.
   */
  relations(targets: EventRow[], at: number): { found: RelationRow[]; unknown: string[] } {
    const found: RelationRow[] = [];
    const unknown: string[] = [];
    for (const t of targets) {
      const e = this.rooms.get(Number(t.room_nid));
      if (!e || e.upto < at || Number(t.stream_pos) <= e.from) {
        unknown.push(t.event_id);
        continue;
      }
      for (const r of relationIndex(e.rows).get(t.event_id) ?? []) if (Number(r.stream_pos) <= at) found.push(r);
    }
    found.sort((a, b) => Number(a.stream_pos) - Number(b.stream_pos));
    return { found, unknown };
  }

  /** Drops what is kept of a room (tests; a room purged or forgotten by everyone). */
  forget(roomNid: number): void {
    const e = this.rooms.get(roomNid);
    if (!e) return;
    this.rooms.delete(roomNid);
    this.total -= e.counted;
    e.counted = 0;
  }

  /** Rooms and events kept now. */
  size(): { rooms: number; events: number } {
    return { rooms: this.rooms.size, events: this.total };
  }

  // ---- internals --------------------------------------------------------------------------------

  /** Newest `limit` rows of the window passing `match`, or undefined if the cache cannot tell them. */
  private window(w: TimelineWindow, limit: number, match: (row: EventRow) => boolean): EventRow[] | undefined {
    const e = this.rooms.get(w.roomNid);
    if (!e || e.upto < w.upper) return undefined;
    const lower = w.lower ?? 0;
    const got: EventRow[] = [];
    for (let i = e.rows.length - 1; i >= 0 && got.length < limit; i--) {
      const row = e.rows[i]!;
      const pos = Number(row.stream_pos);
      if (pos > w.upper) continue;
      if (pos <= lower) break;
      if (match(row)) got.push(row);
    }
    // Complete if the window starts inside the complete range, or the newest `limit` are all inside it.
    return got.length >= limit || lower >= e.from ? got : undefined;
  }

  /** Makes every room's entry reach `upper`: one statement for all the rooms that need reading. */
  private async ensure(nids: number[], upper: number, cold: number): Promise<void> {
    // A few rounds at most: a room evicted again meanwhile is read by the caller's fallback instead.
    for (let round = 0; round < 3; round++) {
      const waits: Array<Promise<void>> = [];
      const need: RoomEntry[] = [];
      for (const nid of nids) {
        let e = this.rooms.get(nid);
        if (e) {
          // Most recently used last.
          this.rooms.delete(nid);
          this.rooms.set(nid, e);
        } else {
          e = { nid, from: 0, upto: -1, rows: [], states: new Map(), stateRows: 0, counted: 0, stateTooBig: false };
          this.rooms.set(nid, e);
        }
        if (e.upto >= upper) continue;
        if (!e.loading && e.upto >= 0) {
          // Nothing of the room committed after what is kept: nothing to read up to `upper`.
          const last = this.writer?.lastCommitted(nid);
          if (last !== undefined && last <= e.upto) {
            e.upto = upper;
            continue;
          }
        }
        if (e.loading) waits.push(e.loading);
        else need.push(e);
      }
      if (need.length) {
        const p = this.load(need, upper, cold);
        for (const e of need) e.loading = p;
        const clear = () => { for (const e of need) if (e.loading === p) e.loading = undefined; };
        p.then(clear, clear);
        waits.push(p);
      }
      if (!waits.length) return;
      await Promise.all(waits);
      // Another caller's read may have stopped below `upper`: look again.
    }
  }

  private async load(need: RoomEntry[], upper: number, coldN: number): Promise<void> {
    const n = this.limits.perRoom;
    const cold = need.filter((e) => e.upto < 0);
    const warm = need.filter((e) => e.upto >= 0);
    const [c, w] = await Promise.all([
      this.read(cold.map((e) => ({ roomNid: e.nid, upper })), coldN),
      this.read(warm.map((e) => ({ roomNid: e.nid, lower: e.upto, upper })), n),
    ]);
    const again: RoomEntry[] = [];
    for (const e of cold) this.fill(e, c.get(e.nid) ?? [], upper, coldN);
    for (const e of warm) {
      const rows = (w.get(e.nid) ?? []).reverse();
      if (rows.some((r) => r.type === 'm.room.redaction')) {
        // Something kept may now be redacted: read the room again, state included.
        again.push(e);
        continue;
      }
      if (rows.length >= n) {
        // More new events than kept per room: the newest ones, complete from the oldest of them.
        e.rows = rows;
        e.from = Number(rows[0]!.stream_pos) - 1;
      } else if (rows.length) {
        let kept = e.rows.concat(rows);
        if (kept.length > n) {
          kept = kept.slice(kept.length - n);
          e.from = Math.max(e.from, Number(kept[0]!.stream_pos) - 1);
        }
        e.rows = kept;
      }
      e.upto = upper;
      // Member counts come from the current memberships: a new member event may change them.
      if (rows.some((r) => r.type === 'm.room.member')) e.summary = undefined;
      this.recount(e);
    }
    if (again.length) {
      const r = await this.read(again.map((e) => ({ roomNid: e.nid, upper })), n);
      for (const e of again) this.fill(e, r.get(e.nid) ?? [], upper, n);
    }
    this.evict();
  }

  /** A room read from scratch: its newest events up to `upper`; what was derived from older rows goes. */
  private fill(e: RoomEntry, newestFirst: EventRow[], upper: number, asked: number): void {
    const rows = newestFirst.reverse();
    e.rows = rows;
    e.from = rows.length < asked ? 0 : Number(rows[0]!.stream_pos) - 1;
    e.upto = upper;
    e.states = new Map();
    // stateTooBig stays: a room whose state was too big to keep is not read whole again.
    e.summary = undefined;
    this.recount(e);
  }

  private async read(windows: TimelineWindow[], limit: number): Promise<Map<number, EventRow[]>> {
    if (!windows.length) return new Map();
    this.stats.loads++;
    this.stats.loadedRooms += windows.length;
    this.trace?.('events', windows.length);
    return this.source.timelines(windows, limit, undefined);
  }

  /** Keeps the total up to date with an entry's rows and settled state rows. */
  private recount(e: RoomEntry): void {
    let stateRows = 0;
    for (const st of e.states.values()) stateRows += st.n;
    e.stateRows = stateRows;
    if (this.rooms.get(e.nid) !== e) return;
    const now = e.rows.length + stateRows;
    this.total += now - e.counted;
    e.counted = now;
  }

  /** Forgets the least recently used rooms (none being read) until the total fits. */
  private evict(): void {
    if (this.total <= this.limits.maxEvents) return;
    for (const [nid, e] of this.rooms) {
      if (this.total <= this.limits.maxEvents) break;
      if (e.loading) continue;
      this.rooms.delete(nid);
      this.total -= e.counted;
      e.counted = 0;
    }
  }
}

/** Per kept rows array (never mutated, replaced as a whole): its aggregation relations by target. */
const relationIndexes = new WeakMap<EventRow[], Map<string, RelationRow[]>>();
const AGGREGATED = new Set(['m.replace', 'm.thread', 'm.reference']);
/** The longest value the relation columns keep (the room engine indexes only what fits). */
const MAX_RELATION_KEY_BYTES = 255;

function relationIndex(rows: EventRow[]): Map<string, RelationRow[]> {
  let index = relationIndexes.get(rows);
  if (index) return index;
  index = new Map();
  for (const row of rows) {
    if (row.redacted_by || !row.json.includes('m.relates_to')) continue;
    const relates = (JSON.parse(row.json) as { content?: { 'm.relates_to'?: { rel_type?: unknown; event_id?: unknown } | null } }).content?.['m.relates_to'];
    const relType = relates?.rel_type;
    const target = relates?.event_id;
    // As the columns the database query reads (rel_type, relates_to) are written.
    if (typeof relType !== 'string' || !AGGREGATED.has(relType) || typeof target !== 'string' || Buffer.byteLength(target) > MAX_RELATION_KEY_BYTES) continue;
    const list = index.get(target) ?? [];
    list.push({ ...row, relates_to: target, rel_type: relType });
    index.set(target, list);
  }
  relationIndexes.set(rows, index);
  return index;
}

/**
 * A RoomEventFilter as a predicate on rows, matching what filterSql selects; undefined when the
 * filter needs the database (contains_url reads a column rows do not carry).
 */
export function compileFilter(f: RoomEventFilter | undefined): ((row: EventRow) => boolean) | undefined {
  if (!f) return () => true;
  if (f.contains_url !== undefined) return undefined;
  const types = f.types ? f.types.map(globRegExp) : undefined;
  const notTypes = f.not_types?.length ? f.not_types.map(globRegExp) : undefined;
  const senders = f.senders ? new Set(f.senders) : undefined;
  const notSenders = f.not_senders?.length ? new Set(f.not_senders) : undefined;
  if (!types && !notTypes && !senders && !notSenders) return () => true;
  return (row) =>
    (!types || types.some((re) => re.test(row.type)))
    && !notTypes?.some((re) => re.test(row.type))
    && (!senders || senders.has(row.sender))
    && !notSenders?.has(row.sender);
}

/** `m.room.*` wildcards (filterSql's LIKE: `*` any run, everything else literal, case-sensitive). */
function globRegExp(s: string): RegExp {
  return new RegExp('^' + s.split('*').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[\\s\\S]*') + '$');
}
