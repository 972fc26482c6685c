import { redactEvent } from '../protocol/redaction.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import { LruCache } from '../cache/lru.ts';
import { MembershipHistoryStore } from './history-store.ts';
import type { RoomStore, EventRow } from './store.ts';

/** A user's latest membership of a room and the stream position of that member event. */
export type CurrentMembership = { membership: string; stream_pos: number } | undefined;

/** Where a user may read a room's state: now, as of the end of their last join, or not at all. */
export type StateAccess = { at: 'current' } | { at: 'group'; group: number; pos: number } | undefined;

type PendingLookups = Map<number, Map<string, Array<{ resolve: (v: AtEvent) => void; reject: (e: unknown) => void }>>>;

interface AtEvent {
  historyVisibility: string;
  membership: string | undefined;
}

const VISIBILITIES = new Set(['world_readable', 'shared', 'invited', 'joined']);
const CACHE_ENTRIES = 50_000;

/**
 * History visibility (client-server spec, "Room History Visibility", "Server behaviour"): the one
 * place that decides which events and which state of a room a user may see. Every read path
 * (/messages, /context, /event, /relations, /threads, /search, /sync, /timestamp_to_event,
 * /members, /state) asks it. Judged by the room's state at each event and the user's membership
 * history (MembershipHistoryStore), never by the latest membership alone.
 */
export class Visibility {
  /** State at a snapshot never changes (a redaction keeps `history_visibility` and `membership`), so entries live until evicted. */
  private cache = new LruCache<string, AtEvent>(CACHE_ENTRIES);
  readonly history: MembershipHistoryStore;

  constructor(private store: RoomStore) {
    this.history = new MembershipHistoryStore(store.db);
  }

  /**
   * Lookups waiting for the next batch read: by state group, the users asked about. Not a cache:
   * emptied by every flush (one turn of the event loop), so it holds only what is asked meanwhile.
   */
  private pending: PendingLookups = new Map();
  private flushing = false;

  /**
   * The history visibility and the user's membership in the state snapshot `group`. Lookups asked
   * in the same turn of the event loop are read together, in one statement (flush): a thousand
   * syncs woken by one event ask about the same snapshot for a thousand users at once.
   */
  private at(group: number, userId: string): Promise<AtEvent> | AtEvent {
    const key = `${group}|${userId}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    return new Promise<AtEvent>((resolve, reject) => {
      let users = this.pending.get(group);
      if (!users) this.pending.set(group, (users = new Map()));
      const waiters = users.get(userId);
      if (waiters) waiters.push({ resolve, reject });
      else users.set(userId, [{ resolve, reject }]);
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Reads every lookup asked since the last flush: all snapshots and users in one statement. */
  private flush(): void {
    const batch = this.pending;
    this.pending = new Map();
    this.flushing = false;
    const groups: number[] = [];
    const users: string[] = [];
    for (const [group, asked] of batch) for (const userId of asked.keys()) { groups.push(group); users.push(userId); }
    this.history.visibilityAt(groups, users).then((rows) => {
      const visibility = new Map<number, string>();
      const membership = new Map<string, string | undefined>();
      for (const r of rows) {
        const root = Number(r.state_root);
        if (r.type === 'm.room.history_visibility') visibility.set(root, visibilityOf(r));
        if (r.type === 'm.room.member') membership.set(`${root}|${r.state_key}`, r.membership ?? undefined);
      }
      for (const [group, asked] of batch) {
        for (const [userId, waiters] of asked) {
          const key = `${group}|${userId}`;
          const v = { historyVisibility: visibility.get(group) ?? 'shared', membership: membership.get(key) };
          this.cache.set(key, v);
          for (const w of waiters) w.resolve(v);
        }
      }
    }, (e) => {
      for (const asked of batch.values()) for (const waiters of asked.values()) for (const w of waiters) w.reject(e);
    });
  }

  /** Position of the user's latest join of the room (undefined: never joined). */
  async lastJoin(roomNid: number, userId: string, current?: CurrentMembership): Promise<number | undefined> {
    // A current `join` is the latest member event, so it is the latest join: no query needed.
    if (current?.membership === 'join') return Number(current.stream_pos);
    return this.history.lastJoin(roomNid, userId);
  }

  /**
   * Keeps the events `userId` may see, in order. `current` is the user's latest membership of the
   * rows' room (a hint that saves a query when it is `join`); the decision reads the history.
   */
  async filter(rows: EventRow[], userId: string, current?: CurrentMembership): Promise<EventRow[]> {
    const lastJoins = new Map<number, Promise<number | undefined>>();
    const lastJoinIn = (roomNid: number): Promise<number | undefined> => {
      let p = lastJoins.get(roomNid);
      if (!p) lastJoins.set(roomNid, (p = this.lastJoin(roomNid, userId, current)));
      return p;
    };
    const out: EventRow[] = [];
    for (const row of rows) {
      if (await this.visible(row, userId, () => lastJoinIn(Number(row.room_nid)))) out.push(row);
    }
    return out;
  }

  private async visible(row: EventRow, userId: string, lastJoin: () => Promise<number | undefined>): Promise<boolean> {
    // Users always see their own membership events, whatever the visibility.
    if (row.type === 'm.room.member' && row.state_key === userId) return true;
    const pos = Number(row.stream_pos);
    const after = await this.at(Number(row.state_after), userId);
    if (await allowed(after.historyVisibility, after.membership, pos, lastJoin)) return true;
    // A history visibility change is visible if the visibility before *or* after it allows it.
    if (row.type === 'm.room.history_visibility' && row.state_key === '') {
      const before = await this.at(Number(row.state_before), userId);
      return allowed(before.historyVisibility, after.membership, pos, lastJoin);
    }
    return false;
  }

  /** Whether the room's current history visibility is world_readable (anyone may read it now). */
  async worldReadable(roomNid: number): Promise<boolean> {
    const rows = await this.store.currentStateFor(this.store.db, roomNid, [['m.room.history_visibility', '']]);
    return rows.some((r) => visibilityOf(r) === 'world_readable');
  }

  /**
   * Which state of a room the user may read: the current state while joined or when the room is
   * world_readable; after leaving (kicked, banned) the state as it was when their last join ended;
   * nothing if they never joined (an invite, a knock, a rejected invite or a ban before joining).
   */
  async stateAccess(roomNid: number, userId: string, current: CurrentMembership): Promise<StateAccess> {
    if (current?.membership === 'join') return { at: 'current' };
    if (await this.worldReadable(roomNid)) return { at: 'current' };
    const joined = await this.lastJoin(roomNid, userId, current);
    if (joined === undefined) return undefined;
    const end = await this.history.memberEventAfter(roomNid, userId, joined);
    if (!end) return { at: 'current' };
    return { at: 'group', group: end.state_after, pos: end.stream_pos };
  }

  /**
   * State rows of a room shown to a user (a /sync state section): all of them once the user has
   * joined at some point (the caller bounds them at the end of that join) or when the room is
   * world_readable; otherwise only their own member events.
   */
  async filterState(rows: EventRow[], userId: string, roomNid: number, current: CurrentMembership): Promise<EventRow[]> {
    if (!rows.length || current?.membership === 'join') return rows;
    if ((await this.lastJoin(roomNid, userId, current)) !== undefined || (await this.worldReadable(roomNid))) return rows;
    return rows.filter((r) => r.type === 'm.room.member' && r.state_key === userId);
  }
}

/** Server behaviour, rules 1-5: the visibility and the user's membership at the event decide. */
async function allowed(visibility: string, membership: string | undefined, pos: number, lastJoin: () => Promise<number | undefined>): Promise<boolean> {
  if (visibility === 'world_readable') return true;
  if (membership === 'join') return true;
  if (visibility === 'shared') {
    // Joined at some point after the event (a join before it is covered by the membership at it).
    const joined = await lastJoin();
    return joined !== undefined && joined >= pos;
  }
  if (visibility === 'invited') return membership === 'invite';
  return false;
}

/**
 * The history visibility an m.room.history_visibility event sets. A redacted one keeps the key (the
 * redaction algorithm of every room version does), so redaction does not change the visibility;
 * an absent or unknown value means `shared`.
 */
function visibilityOf(row: { json: string; redacted_by?: string | null; room_version?: string }): string {
  let pdu = JSON.parse(row.json) as Record<string, unknown>;
  const version = row.room_version ? getRoomVersion(row.room_version) : undefined;
  if (row.redacted_by && version) pdu = redactEvent(pdu, version);
  const value = (pdu.content as Record<string, unknown> | undefined)?.history_visibility;
  return typeof value === 'string' && VISIBILITIES.has(value) ? value : 'shared';
}
