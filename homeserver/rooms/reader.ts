import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import type { EventRow, RoomRow, RoomStore } from './store.ts';
import { formatEvents, type ClientEvent, type FormatOptions } from './format.ts';
import type { Visibility } from './visibility.ts';
import type { RoomEventFilter } from './filter.ts';
import { TimelineStore } from './timeline-store.ts';
import { RelationStore } from './relation-store.ts';
import { PublishedRoomStore, type DirectoryPageQuery, type RoomStats } from './published-store.ts';
import { EventSearchStore, type SearchHit, type SearchQuery } from './search-store.ts';
import { posToken, topoToken, type PaginationToken, type TopoPosition } from '../storage/stream-token.ts';
import { SyncReadStore, type MembershipRow, type RoomSummaryCounts, type TimelineWindow } from './sync-read-store.ts';
import { filterSql } from './filter.ts';
import { SharedRoomsStore } from './shared-rooms-store.ts';
import { MembershipChangesStore, type MembershipChange } from './membership-changes-store.ts';
import { LruCache } from '../cache/lru.ts';
import { RecentEvents, compileFilter } from './recent-events.ts';
import type { RelationRow } from './store.ts';
import { RoomAdminStore, type AdminRoomQuery, type AdminRoomRow } from './admin-store.ts'; // issue 9 (mod9)

/** Cached state snapshots by (type, state key), built on first use and dropped with the snapshot. */
const stateIndexes = new WeakMap<EventRow[], Map<string, EventRow>>();

/** Formatting lookups kept (each a handful of rows, keyed by position and ids). */
const FORMAT_READS_KEPT = 2_000;

/** Pages of events the user may not see that one /messages request skips before answering. */
const MAX_SKIPPED_PAGES = 10;

type Membership = { membership: string; event_nid: number; stream_pos: number; forgotten: boolean };

export type { EventRow, RoomRow } from './store.ts';
export type { ClientEvent, FormatOptions } from './format.ts';
export type { DirectoryBound, DirectoryPageQuery, RoomStats } from './published-store.ts';
export type { SearchedRoom, SearchHit, SearchQuery } from './search-store.ts';
export type { MembershipRow, RoomSummaryCounts, TimelineWindow } from './sync-read-store.ts';
export type { MembershipChange } from './membership-changes-store.ts';
export type { AdminRoomQuery, AdminRoomRow, RoomOrder } from './admin-store.ts'; // issue 9 (mod9)
export { ROOM_ORDERS } from './admin-store.ts';

/**
 * The read side of rooms: state, members, single events, /messages and /context, and the room
 * engine's read interface for the capabilities built on it (relations, threads, timestamps,
 * search, the directory, upgrades, profiles). Only rooms' store files query the engine's tables.
 */
export class RoomReader {
  private timeline: TimelineStore;
  private relationStore: RelationStore;
  private published: PublishedRoomStore;
  private search: EventSearchStore;
  private syncReads: SyncReadStore;
  private admin: RoomAdminStore; // issue 9 (mod9)
  /** The recent events, state and member summaries of rooms, shared by every /sync. */
  readonly recent: RecentEvents;
  /**
   * Lookups of formatting (relations, replaced and redaction events) by the position read up to:
   * every sync formatting the same rows at the same position shares one read. A later position is
   * another key, so nothing here is served to a reader that could see newer rows.
   */
  private formatReads = new LruCache<string, Promise<unknown>>(FORMAT_READS_KEPT);

  constructor(private store: RoomStore, readonly visibility: Visibility) {
    this.syncReads = new SyncReadStore(store.db);
    // SYNC_CACHE_TRACE=1 writes a line per database read of the cache (tests count them).
    const trace = process.env.SYNC_CACHE_TRACE === '1'
      ? (what: string, n: number) => process.stderr.write(`sync-cache read ${what} rooms=${n}\n`)
      : undefined;
    this.recent = new RecentEvents({
      timelines: (w, limit, f) => this.syncReads.timelines(w, limit, f),
      statesAtGroups: (groups) => this.syncReads.statesAtGroups(groups),
      summaries: (nids) => this.syncReads.summaries(nids),
    }, {}, trace);
    this.timeline = new TimelineStore(store.db);
    this.relationStore = new RelationStore(store.db);
    this.published = new PublishedRoomStore(store.db);
    this.search = new EventSearchStore(store.db);
    this.admin = new RoomAdminStore(store.db);
  }

  // ---- issue 9 (mod9): what the admin API reads ---------------------------------------------

  /** One page of all the server's rooms, as Synapse's admin room list orders and filters them. */
  adminRooms(q: AdminRoomQuery): Promise<{ rooms: AdminRoomRow[]; total: number }> {
    return this.admin.list(q);
  }

  /** The admin API's columns of some rooms (unknown ones left out). */
  adminRoomDetails(roomIds: string[], serverName: string): Promise<Map<string, AdminRoomRow>> {
    return this.admin.details(roomIds, serverName);
  }

  /** A user's most recent events that are not redacted yet (membership and create events left out). */
  recentEventsOf(userId: string, roomIds: string[] | undefined, limit: number): ReturnType<RoomAdminStore['recentEventsOf']> {
    return this.admin.recentEventsOf(userId, roomIds, limit);
  }

  /** The local media ids a room's events name (quarantine of a room's media). */
  mediaIdsIn(roomId: string, serverName: string): Promise<string[]> {
    return this.admin.mediaIdsIn(roomId, serverName);
  }

  /** The rooms whose events take the most space. */
  largestRooms(limit: number): Promise<Array<{ room_id: string; estimated_size: number }>> {
    return this.admin.largestRooms(limit);
  }

  /** Rows a room still has in the engine's tables (0 after its purge). */
  rowsOf(roomId: string): Promise<number> {
    return this.admin.rowsOf(roomId);
  }

  // ---- what /sync reads: each covers all the rooms of one sync in one statement -------------

  /** A user's membership of every room they ever had one in. */
  memberships(userId: string): Promise<MembershipRow[]> {
    return this.syncReads.memberships(userId);
  }

  /** Which of these rooms have events in (since, to]. */
  roomsWithEvents(roomNids: number[], since: number, to: number): Promise<Set<number>> {
    return this.syncReads.roomsWithEvents(roomNids, since, to);
  }

  /** The rooms (of these current member events) whose member was already joined at `since`. */
  joinedAt(memberEventNids: number[], since: number): Promise<Set<number>> {
    return this.syncReads.joinedAt(memberEventNids, since);
  }

  /**
   * The newest `limit` events of each window that pass the filter, newest first. Served from the
   * shared recent-events cache: `upper` must never exceed the persisted-up-to position.
   */
  timelines(windows: TimelineWindow[], limit: number, filter: RoomEventFilter | undefined): Promise<Map<number, EventRow[]>> {
    return this.recent.timelines(windows, limit, filter);
  }

  /** The state snapshot after a room's newest event up to `to`. */
  stateGroupAt(roomNid: number, to: number): Promise<number | undefined> {
    return this.syncReads.stateGroupAt(roomNid, to);
  }

  /** The newest state event of each key that changed in (since, before). */
  stateChanges(roomNid: number, since: number, before: number, stateFilter: RoomEventFilter | undefined): Promise<EventRow[]> {
    return this.syncReads.stateChanges(roomNid, since, before, stateFilter);
  }

  /** Member counts and up to five heroes of each room (shared between syncs until a member event). */
  async summaries(roomNids: number[], userId: string): Promise<Map<number, RoomSummaryCounts>> {
    const out = new Map<number, RoomSummaryCounts>();
    for (const [nid, s] of await this.recent.summaries(roomNids)) {
      out.set(nid, { heroes: s.members.filter((u) => u !== userId).slice(0, 5), joined: s.joined, invited: s.invited });
    }
    return out;
  }

  /**
   * Starts reading the state snapshots a sync is about to ask stateForSync for (room, group, the
   * sync's position), so that the rooms of one sync read them in one statement, not one per room.
   */
  prefetchState(wanted: Array<{ roomNid: number; group: number; upper: number }>): void {
    for (const w of wanted) this.recent.stateAt(w.roomNid, w.group, w.upper)?.catch(() => undefined);
  }

  /**
   * State at a snapshot of a room that passes a state filter; with `members`, only these users'
   * member events (lazy loading), with `pairs` only these keys. From the shared cache (call after
   * `timelines` or `recent.bring` brought the room to the sync's position), else from the database.
   */
  async stateForSync(roomNid: number, group: number, upper: number, opts: { members?: string[]; pairs?: Array<[string, string]>; filter?: RoomEventFilter }): Promise<EventRow[]> {
    const match = compileFilter(opts.filter);
    const cached = match ? this.recent.stateAt(roomNid, group, upper) : undefined;
    if (!cached) {
      if (opts.pairs) return this.store.stateAtGroup(this.store.db, group, { pairs: opts.pairs });
      return this.store.stateAtGroup(this.store.db, group, { members: opts.members, extra: filterSql(opts.filter) });
    }
    const rows = await cached;
    if (opts.pairs) {
      // By key, so that a thousand lazy-loading syncs of a big room each look up a few members
      // instead of scanning its whole state.
      let byKey = stateIndexes.get(rows);
      if (!byKey) {
        byKey = new Map(rows.map((r) => [`${r.type}\u0000${r.state_key}`, r]));
        stateIndexes.set(rows, byKey);
      }
      const out: EventRow[] = [];
      for (const [t, k] of opts.pairs) {
        const row = byKey.get(`${t}\u0000${k}`);
        if (row) out.push(row);
      }
      return out;
    }
    const members = opts.members ? new Set(opts.members) : undefined;
    return rows.filter((r) => (!members || r.type !== 'm.room.member' || members.has(r.state_key!)) && match!(r));
  }

  /** Current state entries for some (type, state_key) pairs. */
  /** A snapshot's state events of the filter's types, read from the database (no sync cache). */
  stateOfGroup(group: number, filter?: RoomEventFilter): Promise<EventRow[]> {
    return this.store.stateAtGroup(this.store.db, group, { extra: filterSql(filter) });
  }

  currentStateFor(roomNid: number, pairs: Array<[string, string]>): Promise<Array<{ type: string; state_key: string; event_nid: number; event_id: string; json: string }>> {
    return this.store.currentStateFor(this.store.db, roomNid, pairs);
  }

  // ---- single rooms and events ------------------------------------------------------------

  /** A room's nid, version and flags (cached). */
  roomMeta(roomId: string): Promise<RoomRow | undefined> {
    return this.store.roomMeta(roomId);
  }

  /** The room's forward extremities and depth (federation: make_join / make_leave templates). */
  head(roomId: string): Promise<{ extremities: string[]; depth: number } | undefined> {
    return this.store.head(roomId);
  }

  eventsById(ids: string[]): Promise<EventRow[]> {
    return this.store.eventsById(ids);
  }

  /** The user's latest membership of a room. */
  membership(userId: string, roomNid: number): Promise<Membership | undefined> {
    return this.store.membership(userId, roomNid);
  }

  eventById(eventId: string): Promise<EventRow | undefined> {
    return this.store.eventById(eventId);
  }

  eventsByNid(nids: number[]): Promise<EventRow[]> {
    return this.store.eventsByNid(nids);
  }

  /** Stored events in the client-server format (see formatEvents). */
  format(rows: EventRow[], opts: FormatOptions = {}): Promise<ClientEvent[]> {
    const userId = opts.userId;
    // Bundled aggregations show only the relating events this user may see.
    const visible = opts.aggregations && userId ? (related: EventRow[]) => this.visibility.filter(related, userId) : undefined;
    return formatEvents(this.store, rows, { ...opts, visible });
  }

  /**
   * format() for /sync at position `at`: the lookups formatting makes (bundled relations, replaced
   * and redaction events) are shared with every sync at the same position asking the same, so a
   * thousand syncs woken by one event read its relations once.
   */
  formatAt(rows: EventRow[], opts: FormatOptions, at: number): Promise<ClientEvent[]> {
    const userId = opts.userId;
    const visible = opts.aggregations && userId ? (related: EventRow[]) => this.visibility.filter(related, userId) : undefined;
    const shared = <T>(kind: string, keys: Array<string | number>, read: () => Promise<T>): Promise<T> => {
      if (!keys.length) return read();
      const key = `${kind}|${at}|${keys.join(',')}`;
      let p = this.formatReads.get(key) as Promise<T> | undefined;
      if (!p) {
        const mine = read();
        p = mine;
        this.formatReads.set(key, mine);
        mine.catch(() => { if (this.formatReads.get(key) === mine) this.formatReads.delete(key); });
      }
      return p;
    };
    const base = this.store;
    // The store as formatEvents sees it: the same, with its three lookups shared.
    const store = Object.create(base, {
      // Relations of events the recent-events cache keeps complete up to `at` come from memory.
      aggregatedRelations: { value: async (ids: string[]): Promise<RelationRow[]> => {
        const wanted = new Set(ids);
        const targets = rows.filter((r) => wanted.has(r.event_id));
        const { found, unknown } = targets.length === wanted.size ? this.recent.relations(targets, at) : { found: [], unknown: ids };
        if (!unknown.length) return found;
        const read = await shared('rel', unknown, () => base.aggregatedRelations(unknown));
        return found.length ? [...found, ...read].sort((a, b) => Number(a.stream_pos) - Number(b.stream_pos)) : read;
      } },
      eventsByNid: { value: (nids: number[]): Promise<EventRow[]> => shared('nid', nids, () => base.eventsByNid(nids)) },
      eventsById: { value: (ids: string[]): Promise<EventRow[]> => shared('id', ids, () => base.eventsById(ids)) },
    }) as RoomStore;
    return formatEvents(store, rows, { ...opts, visible });
  }

  /** The current state of a room, optionally only some types (no visibility check: the caller's business). */
  currentState(roomNid: number, types?: string[]): Promise<EventRow[]> {
    return this.store.currentState(this.store.db, roomNid, types);
  }

  /** State at a snapshot, restricted to some (type, state_key) pairs. */
  stateAt(group: number, pairs: Array<[string, string]>): Promise<EventRow[]> {
    return this.store.stateAtGroup(this.store.db, group, { pairs });
  }

  joinedRoomIds(userId: string): Promise<string[]> {
    return this.store.joinedRoomIds(userId);
  }

  /** The user's current member event in each room they are joined to. */
  joinedMemberEvents(userId: string): Promise<Array<{ room_id: string; json: string }>> {
    return this.store.joinedMemberEvents(userId);
  }

  /** Rooms where the user's latest membership is one of these (forgotten ones only when asked). */
  roomsWithMembership(userId: string, memberships: string[], includeForgotten: boolean): ReturnType<RoomStore['roomsWithMembership']> {
    return this.store.roomsWithMembership(userId, memberships, includeForgotten);
  }

  /** Which of these users `searcher` may find in the user directory (sharing a room, or in a published one). */
  findableBy(searcher: string, userIds: string[]): Promise<Set<string>> {
    return this.store.findableBy(searcher, userIds);
  }

  /** This server's users joined to a room, sorted. */
  localJoined(roomNid: number, serverName: string): Promise<string[]> {
    return this.store.localJoined(roomNid, serverName);
  }

  /** The room a room was upgraded from (m.room.create's predecessor), if any. */
  predecessor(roomId: string): Promise<string | undefined> {
    return this.store.predecessor(roomId);
  }

  /** The newest event of a room. */
  lastEventId(roomNid: number): Promise<string | undefined> {
    return this.timeline.lastEventId(roomNid);
  }

  /** Events around a time (GET /timestamp_to_event), a batch at a time. */
  eventsAroundTimestamp(roomNid: number, ts: number, dir: 'f' | 'b', limit: number, after?: { ts: number; pos: number }): Promise<EventRow[]> {
    return this.timeline.aroundTimestamp(roomNid, ts, dir, limit, after);
  }

  /** Events relating to an event (GET /relations), up to `depth` hops, one page. */
  relationChildren(opts: Parameters<RelationStore['children']>[0]): Promise<EventRow[]> {
    return this.relationStore.children(opts);
  }

  /** Thread roots of a room by latest thread event (GET /threads), one page. */
  threadRoots(opts: Parameters<RelationStore['threads']>[0]): Promise<Array<{ root: EventRow; latest: number }>> {
    return this.relationStore.threads(opts);
  }

  /** One page of the published room directory and how many rooms it lists. */
  publishedPage(q: DirectoryPageQuery): ReturnType<PublishedRoomStore['page']> {
    return this.published.page(q);
  }

  /** Directory stats (members, summary state) of some rooms, in the order given. */
  roomStatsOf(roomIds: string[]): Promise<RoomStats[]> {
    return this.published.statsOf(roomIds);
  }

  /** Directory stats of one room. */
  roomStats(roomId: string): Promise<RoomStats | undefined> {
    return this.published.stats({ roomId }).then((s) => s[0]);
  }

  /** Full-text matches, best first, strictly after `after` in that order. */
  searchByRank(q: SearchQuery, after: { rank: number; pos: number } | undefined, limit: number): Promise<SearchHit[]> {
    return this.search.byRank(q, after, limit);
  }

  /** Full-text matches, newest first, strictly before stream position `before`. */
  searchByRecent(q: SearchQuery, before: number | undefined, limit: number): Promise<SearchHit[]> {
    return this.search.byRecent(q, before, limit);
  }

  private async roomAndMembership(userId: string, roomId: string): Promise<{ room: RoomRow; m: Membership | undefined }> {
    const room = await this.store.roomMeta(roomId);
    if (!room) throw forbidden(`User ${userId} not in room ${roomId}, or room does not exist`);
    return { room, m: await this.store.membership(userId, room.room_nid) };
  }

  /**
   * The state a user may see (Visibility.stateAccess): the current state while joined or when the
   * room is world_readable; the state when their last join ended after leaving, a kick or a ban;
   * never-joined users (invited, knocking, rejected, banned before joining) get 403.
   */
  async visibleState(userId: string, roomId: string, types?: string[]): Promise<EventRow[]> {
    const { room, m } = await this.roomAndMembership(userId, roomId);
    const access = await this.visibility.stateAccess(room.room_nid, userId, m);
    if (!access) throw forbidden(`User ${userId} not in room ${roomId}`);
    if (access.at === 'current') return this.store.currentState(this.store.db, room.room_nid, types);
    return this.store.stateAtGroup(this.store.db, access.group, types ? { types } : undefined);
  }

  async state(me: Requester, roomId: string): Promise<ClientEvent[]> {
    return formatEvents(this.store, await this.visibleState(me.userId, roomId));
  }

  async stateEvent(me: Requester, roomId: string, type: string, key: string): Promise<ClientEvent> {
    const rows = await this.visibleState(me.userId, roomId);
    const row = rows.find((r) => r.type === type && r.state_key === key);
    if (!row) throw notFound('Event not found.');
    return (await formatEvents(this.store, [row]))[0]!;
  }

  async event(me: Requester, roomId: string, eventId: string): Promise<ClientEvent> {
    const { m } = await this.roomAndMembership(me.userId, roomId);
    const row = await this.store.eventById(eventId);
    if (!row || row.room_id !== roomId) throw notFound('Event not found.');
    const visible = await this.visibility.filter([row], me.userId, m);
    if (!visible.length) throw notFound('Event not found.');
    return (await this.format(visible, { userId: me.userId, deviceId: me.deviceId, aggregations: true }))[0]!;
  }

  /**
   * Member events, at a stream position when `at` is given, filtered by membership. Whose state
   * the user may see decides (visibleState): a user who left sees the members as of their leave.
   */
  async members(me: Requester, roomId: string, opts: { at?: number; membership?: string; notMembership?: string }): Promise<ClientEvent[]> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    const access = await this.visibility.stateAccess(room.room_nid, me.userId, m);
    if (!access) throw forbidden(`User ${me.userId} not in room ${roomId}`);
    let rows: EventRow[];
    const limit = Math.min(opts.at ?? Number.MAX_SAFE_INTEGER, access.at === 'group' ? access.pos : Number.MAX_SAFE_INTEGER);
    if (limit === Number.MAX_SAFE_INTEGER) {
      rows = await this.store.currentState(this.store.db, room.room_nid, ['m.room.member']);
    } else {
      const group = await this.visibility.history.stateGroupAt(room.room_nid, limit);
      if (group === undefined) return [];
      rows = await this.store.stateAtGroup(this.store.db, group, { types: ['m.room.member'] });
    }
    rows = rows.filter((r) => (!opts.membership || r.membership === opts.membership) && (!opts.notMembership || r.membership !== opts.notMembership));
    return formatEvents(this.store, rows);
  }

  async joinedMembers(me: Requester, roomId: string): Promise<Record<string, { display_name?: string; avatar_url?: string }>> {
    const rows = await this.visibleState(me.userId, roomId, ['m.room.member']);
    const joined: Record<string, { display_name?: string; avatar_url?: string }> = {};
    for (const r of rows) {
      if (r.membership !== 'join') continue;
      const c = JSON.parse(r.json).content ?? {};
      joined[r.state_key!] = {
        ...(typeof c.displayname === 'string' ? { display_name: c.displayname } : {}),
        ...(typeof c.avatar_url === 'string' ? { avatar_url: c.avatar_url } : {}),
      };
    }
    return joined;
  }

  /** Room events between positions, newest first (dir b) or oldest first (dir f). */
  async eventsBetween(roomNid: number, from: number, to: number | undefined, dir: 'b' | 'f', limit: number, filter?: RoomEventFilter): Promise<EventRow[]> {
    return this.timeline.between(roomNid, from, to, dir, limit, filter);
  }

  // issue 6 (receipts-push helper): push evaluation catches up from a position after a crash.
  /** Events of every room in (from, to], oldest first, at most `limit`. */
  eventsOfAllRoomsAfter(from: number, to: number, limit: number): Promise<EventRow[]> {
    return this.timeline.allRoomsAfter(from, to, limit);
  }

  /**
   * /messages in topological order (depth, then stream position), so that history inserted later
   * (backfill) sorts where it belongs. A stream token (`s…`, from /sync) starts at the room's newest
   * event at or before that position; the tokens answered are topological (`t…`).
   */
  async messages(me: Requester, roomId: string, opts: { from?: PaginationToken; to?: PaginationToken; dir: 'b' | 'f'; limit: number; filter: RoomEventFilter; current: number }): Promise<{ chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] }> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    if (!m && !(await this.visibility.worldReadable(room.room_nid))) throw forbidden(`User ${me.userId} not in room ${roomId}`);
    const limit = Math.min(Math.max(opts.limit, 0), 1000);
    const place = async (t: PaginationToken): Promise<TopoPosition> =>
      t.depth !== undefined ? t : this.timeline.topoAt(room.room_nid, Math.min(t.stream, opts.current));
    const from: TopoPosition = opts.from ? await place(opts.from) : opts.dir === 'b' ? await place({ stream: opts.current }) : { depth: 0, stream: Number.MIN_SAFE_INTEGER };
    const to = opts.to ? await place(opts.to) : undefined;
    // What the user may see is decided per event (Visibility). Pages of events they may not see
    // (after leaving, before joining a `joined` room) are skipped, a bounded number at a time.
    const visible: EventRow[] = [];
    let cursor = from;
    let more = false;
    for (let batch = 0; limit > 0 && batch < MAX_SKIPPED_PAGES; batch++) {
      const asked = limit - visible.length;
      const rows = await this.timeline.topological(room.room_nid, cursor, to, opts.dir, asked, opts.current, opts.filter);
      visible.push(...(await this.visibility.filter(rows, me.userId, m)));
      if (rows.length) {
        const last = rows[rows.length - 1]!;
        const at = { depth: Number(last.depth), stream: Number(last.stream_pos) };
        cursor = opts.dir === 'b' ? { depth: at.depth, stream: at.stream - 1 } : at;
      }
      more = rows.length === asked;
      if (!more || visible.length >= limit) break;
    }
    const chunk = await this.format(visible, { userId: me.userId, deviceId: me.deviceId, aggregations: true });
    const start = opts.from && opts.from.depth === undefined ? posToken(opts.from.stream) : topoToken(from);
    const out: { chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] } = { chunk, start };
    if (more) out.end = topoToken(cursor);
    if (opts.filter.lazy_load_members) out.state = await this.memberEventsFor(room, visible);
    return out;
  }

  /** The current member events of the senders of some events (lazy-loading members). */
  async memberEventsFor(room: RoomRow, events: EventRow[], exclude = new Set<string>()): Promise<ClientEvent[]> {
    const senders = [...new Set(events.map((e) => e.sender))].filter((s) => !exclude.has(s));
    if (!senders.length) return [];
    const rows = await this.store.currentStateFor(this.store.db, room.room_nid, senders.map((s) => ['m.room.member', s]));
    const full = await this.store.eventsByNid(rows.map((r) => Number(r.event_nid)));
    return formatEvents(this.store, full);
  }

  async context(me: Requester, roomId: string, eventId: string, limit: number, filter: RoomEventFilter): Promise<Record<string, unknown>> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    const target = await this.store.eventById(eventId);
    if (!target || target.room_id !== roomId) throw notFound('Event not found.');
    if (!(await this.visibility.filter([target], me.userId, m)).length) throw notFound('Event not found.');
    const at: TopoPosition = { depth: Number(target.depth), stream: Number(target.stream_pos) };
    const before = Math.floor(limit / 2);
    const after = limit - before;
    // Topological order, as /messages.
    const ceiling = Number.MAX_SAFE_INTEGER;
    const [b, a] = await Promise.all([
      this.timeline.topological(room.room_nid, { depth: at.depth, stream: at.stream - 1 }, undefined, 'b', before, ceiling, filter),
      this.timeline.topological(room.room_nid, at, undefined, 'f', after, ceiling, filter),
    ]);
    const [vb, va] = await Promise.all([this.visibility.filter(b, me.userId, m), this.visibility.filter(a, me.userId, m)]);
    const fmt = (rows: EventRow[]) => this.format(rows, { userId: me.userId, deviceId: me.deviceId, aggregations: true });
    // The state at the event, unless the user never joined (then only their own member events).
    const stateRows = await this.visibility.filterState(await this.store.stateAtGroup(this.store.db, Number(target.state_after)), me.userId, room.room_nid, m);
    let state = stateRows;
    if (filter.lazy_load_members) {
      const senders = new Set([target, ...vb, ...va].map((e) => e.sender));
      state = stateRows.filter((r) => r.type !== 'm.room.member' || senders.has(r.state_key!));
    }
    const placeOf = (e: EventRow) => ({ depth: Number(e.depth), stream: Number(e.stream_pos) });
    const lastAfter = a.length ? placeOf(a[a.length - 1]!) : at;
    const oldest = b.length ? placeOf(b[b.length - 1]!) : at;
    const firstBefore = { depth: oldest.depth, stream: oldest.stream - 1 };
    return {
      event: (await fmt([target]))[0],
      events_before: await fmt(vb),
      events_after: await fmt(va),
      start: topoToken(firstBefore),
      end: topoToken(lastAfter),
      state: await formatEvents(this.store, state),
    };
  }

  /** The users joined to each of these rooms, in one statement (presence and typing reach only room-mates). */
  roomMembersOf(roomIds: string[]): Promise<Map<string, string[]>> {
    return new SharedRoomsStore(this.store.db).joinedMembers(roomIds);
  }

  // ---- issue 8 (e2ee): membership changes for device-list tracking ---------------------------

  /** The user's own membership changes in (since, to]. */
  ownMembershipChanges(userId: string, since: number, to: number): Promise<MembershipChange[]> {
    return new MembershipChangesStore(this.store.db).ownChanges(userId, since, to);
  }

  /** Member events of these rooms in (since, to], oldest first. */
  memberEventsBetween(roomIds: string[], since: number, to: number): Promise<MembershipChange[]> {
    return new MembershipChangesStore(this.store.db).memberEvents(roomIds, since, to);
  }

  /** Which of these users share a joined room with `userId` now. */
  sharingARoom(userId: string, candidates: string[]): Promise<Set<string>> {
    return new MembershipChangesStore(this.store.db).sharingARoom(userId, candidates);
  }
}

export function parseLimit(raw: unknown, dflt: number, max = 1000): number {
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be a non-negative integer');
  return Math.min(n, max);
}
