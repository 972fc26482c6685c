import type { Knex } from 'knex';
import { LruCache } from '../cache/lru.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { AuthError, authEventSelection, checkAuthEventList, checkEventAuth, checkRedaction, createEventIdFromRoomId, redactsOf, roomIdFromCreateEventId, stateKey, type PDU, type StateMap } from '../protocol/auth.ts';
import { serverNameOf } from '../protocol/identifiers.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import type { ResolverEvent } from '../protocol/state-res-v2.ts';
import { resolveState } from '../protocol/state-res-v1.ts';
import { MatrixError } from '../http/errors.ts';
import type { RoomHead } from './persist-store.ts';
import type { DerivedWrites } from './engine.ts';
import type { RoomStore } from './store.ts';
import { searchableText } from './search-text.ts';
import { DagStore, type DagEventInsert, type DagEventRow, type DagWrite, type GroupEntry } from './dag-store.ts';

/**
 * How events given to `persistAuthorised` are taken:
 * - `backfill`: older history (never the room's current state nor a forward extremity; negative
 *   stream positions, so no /sync reads it as new; ordered by depth where it belongs).
 * - `outlier`: events known without their state (an auth chain, an invite): stored, never shown.
 * - `stateBefore`: the state before some events (event ids, by event id), when the caller learnt
 *   it another way (a join's state from send_join, /state_ids at a backfill point).
 */
export interface AuthorisedOptions {
  backfill?: boolean;
  outlier?: boolean;
  stateBefore?: ReadonlyMap<string, readonly string[]>;
  /**
   * Out-of-band memberships (an invite to, or a knock answered for, a room this server is not in):
   * stored as outliers without auth checks (their auth events are the other server's), the
   * membership recorded so that /sync shows it, at a live position. `roomVersion` makes the room
   * known when it is not yet.
   */
  outOfBand?: boolean;
  roomVersion?: string;
}

/**
 * - accepted: stored with its state, shown to clients (unless backfill, then shown in history)
 * - soft_failed: allowed by its auth events and the state before it, not by the current state
 * - rejected: denied by its auth events or the state before it (stored, never shown)
 * - outlier: stored without state (asked so, or a prev event is missing: a backfill point)
 * - duplicate: already stored (with state, or as an outlier when asked for an outlier)
 * - missing_auth_events: some auth events (or given state events) are unknown: nothing stored
 */
export type AuthorisedOutcome = 'accepted' | 'soft_failed' | 'rejected' | 'outlier' | 'duplicate' | 'missing_auth_events';

/** One per event given, then one per waiting outlier this call persisted with its state (a gap filled). */
export interface AuthorisedResult {
  eventId: string;
  outcome: AuthorisedOutcome;
  reason?: string;
  /** Ids of the events missing (auth events, or prev events for an outlier at a gap). */
  missing?: string[];
  /** The position it was stored at (negative: backfill or outlier). */
  streamPos?: number;
}

/** An accepted live event, as the engine announces it. */
export interface AuthorisedPersisted {
  eventId: string;
  streamPos: number;
  pdu: PDU;
  stateBefore: number;
  stateAfter: number;
}

/** A state map by (type, state key): the event id and the interned ids written with it. */
type StateIds = Map<string, StateRef>;
interface StateRef {
  eventId: string;
  nid: number;
  typeNid: number;
  keyNid: number;
}

/** An event this call knows: stored before it or persisted by it. */
interface Known {
  nid: number;
  eventId: string;
  pdu: PDU;
  typeNid: number;
  keyNid: number | null;
  depth: number;
  pos: number;
  outlier: boolean;
  rejected: boolean;
  softFailed: boolean;
  stateBefore: number;
  stateAfter: number;
  /** Stored by this call. */
  fresh?: boolean;
}

/** Spec: an event cites at most 20 prev events (and 10 auth events). */
export const MAX_PREV_EVENTS = 20;
const SNAPSHOT_EVERY = 100;
/** Whole states kept in memory by snapshot id (snapshots never change). */
const GROUPS_CACHED = 2_000;

/** Room versions 1 and 2 cite events as [event_id, hashes] pairs. */
export function eventIdsOf(refs: unknown): string[] {
  if (!Array.isArray(refs)) return [];
  return refs.map((r) => (Array.isArray(r) ? r[0] : r)).filter((r): r is string => typeof r === 'string');
}

export interface DagTimings {
  /** Forks met (an event or the room's head with prev states that differ) and time resolving them. */
  resolutions: number;
  resolveMs: number;
}

/**
 * Persisting authorised events (PDUs whose signatures and hashes the caller checked): the state
 * before each event from its prev events' states (state resolution where they differ: v2, v1 for room version 1), auth
 * against its auth events (else rejected) and that state (else rejected), and against the current
 * state (else soft-failed); forward extremities as a set; the current state resolved over them.
 * One transaction per call; the room's row is locked meanwhile (a local write waits, finds the
 * head moved and builds again on top).
 */
export class AuthorisedPersister {
  readonly store: DagStore;
  private groupCache = new LruCache<number, { chainLen: number; map: StateIds }>(GROUPS_CACHED);
  readonly timings: DagTimings = { resolutions: 0, resolveMs: 0 };

  constructor(private rooms: RoomStore) {
    this.store = new DagStore(rooms.db);
  }

  /**
   * Persists the events of one room. `reserve` takes positive stream positions (the engine's
   * tracker: readers stop below them until `done`); answers what happened to each event, the
   * accepted live events in order, and the room's nid.
   */
  async persist(
    roomId: string,
    pdus: PDU[],
    opts: AuthorisedOptions,
    reserve: (allocate: () => Promise<number[]>) => Promise<number[]>,
    derive?: (roomNid: number, live: AuthorisedPersisted[]) => Promise<DerivedWrites | undefined>,
  ): Promise<{ roomNid: number; results: AuthorisedResult[]; live: AuthorisedPersisted[]; outOfBand: AuthorisedPersisted[]; positions: number[]; headMoved: boolean; derived?: DerivedWrites }> {
    for (const p of pdus) {
      // v12+: a create event has no room_id; its event ID names the room.
      const v12Create = p.type === 'm.room.create' && p.room_id === undefined && typeof p.event_id === 'string' && p.event_id.startsWith('$') && roomIdFromCreateEventId(p.event_id) === roomId;
      if (p.room_id !== roomId && !v12Create) throw new MatrixError(400, 'M_INVALID_PARAM', `Event ${p.event_id} is not in room ${roomId}`);
      if (typeof p.event_id !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Every event needs its event_id');
    }
    // Interned before the transaction: a rollback must not leave a cached id with no row.
    for (const p of pdus) {
      await this.rooms.types.nid(this.rooms.db, p.type);
      if (typeof p.state_key === 'string') await this.rooms.stateKeys.nid(this.rooms.db, p.state_key);
    }
    const positions: number[] = [];
    const out = await this.store.transaction(async (trx) => {
      let room = await this.store.lockRoom(trx, roomId);
      if (!room) {
        const create = pdus.find((p) => p.type === 'm.room.create' && p.state_key === '');
        if (!create && !(opts.outOfBand && opts.roomVersion)) throw new MatrixError(404, 'M_NOT_FOUND', `Unknown room ${roomId} (and no create event given)`);
        const v = create ? (typeof create.content?.room_version === 'string' ? create.content.room_version : '1') : opts.roomVersion!;
        if (!getRoomVersion(v)) throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Unsupported room version ${v}`);
        const creator = create ? (typeof create.content?.creator === 'string' ? create.content.creator : create.sender) : pdus[0]!.sender;
        await this.store.insertRoom(trx, roomId, v, creator);
        room = (await this.store.lockRoom(trx, roomId))!;
      }
      const version = getRoomVersion(room.version)!;
      const run = new Run(this, trx, room.roomNid, version, room.head, opts);
      await run.process(pdus);
      const w = await run.finish(reserve, positions);
      // What other capabilities derive from the accepted live events (push actions) commits with them.
      let derived: DerivedWrites | undefined;
      if (run.live.length && derive) {
        // The evaluation reads the snapshots before the events on another connection.
        await this.store.insertGroups(this.store.db, room.roomNid, w.groups);
        w.groups = [];
        derived = await derive(room.roomNid, run.live);
      }
      await this.store.write(trx, w, derived?.writes);
      return { roomNid: room.roomNid, results: run.results, live: run.live, outOfBand: run.outOfBand, headMoved: w.head !== undefined, derived };
    });
    return { ...out, positions };
  }

  /** Whole states of some snapshots, from memory or one statement. */
  async groupMaps(trx: Knex, groups: number[]): Promise<Map<number, { chainLen: number; map: StateIds }>> {
    const out = new Map<number, { chainLen: number; map: StateIds }>();
    const missing: number[] = [];
    for (const g of new Set(groups)) {
      const hit = this.groupCache.get(g);
      if (hit) out.set(g, hit);
      else if (g <= 0) out.set(g, { chainLen: 0, map: new Map() });
      else missing.push(g);
    }
    if (missing.length) {
      const read = await this.store.groups(trx, missing);
      for (const g of missing) {
        const r = read.get(g) ?? { chainLen: 0, entries: [] as GroupEntry[] };
        const map: StateIds = new Map(r.entries.map((e) => [stateKey(e.type, e.state_key), { eventId: e.event_id, nid: e.event_nid, typeNid: e.type_nid, keyNid: e.state_key_nid }]));
        const v = { chainLen: r.chainLen, map };
        this.groupCache.set(g, v);
        out.set(g, v);
      }
    }
    return out;
  }

  /** A snapshot this call writes, known from now on (dropped again if the transaction fails: see forget). */
  remember(group: number, chainLen: number, map: StateIds): void {
    this.groupCache.set(group, { chainLen, map });
  }

  forget(groups: number[]): void {
    for (const g of groups) this.groupCache.delete(g);
  }

  interned(type: string, key: string | undefined): Promise<[number, number | null]> {
    return Promise.all([this.rooms.types.nid(this.rooms.db, type), key === undefined ? Promise.resolve(null) : this.rooms.stateKeys.nid(this.rooms.db, key)]);
  }
}

/** One call's work: what it knows, what it decided, what it will write. */
class Run {
  readonly results: AuthorisedResult[] = [];
  readonly live: AuthorisedPersisted[] = [];
  /** Out-of-band memberships stored by this call (announced, never extremities). */
  readonly outOfBand: AuthorisedPersisted[] = [];
  private known = new Map<string, Known>();
  private inserts: DagEventInsert[] = [];
  private replaced: number[] = [];
  private groups: DagWrite['groups'] = [];
  private gapsAdded: DagWrite['gapsAdded'] = [];
  private gapsFilled = new Set<string>();
  private search: DagWrite['search'] = [];
  /** target → redaction, for targets this call's redactions may redact. */
  private redactions = new Map<string, string>();
  private extremities: string[];
  private extremitiesChanged = false;
  /** The room's current state (by the head's snapshot), as this call moves it. */
  private currentGroup: number | null;
  private currentMap: StateIds | undefined;
  private nids: number[] = [];
  private groupIds: number[] = [];
  /** Events stored with state by this call, whose waiting outliers may now follow. */
  private arrived: string[] = [];
  /** Which result slot and insert belong to which position kind (assigned at the end). */
  private positive: DagEventInsert[] = [];
  private negative: DagEventInsert[] = [];

  constructor(
    private p: AuthorisedPersister,
    private trx: Knex,
    private roomNid: number,
    private version: RoomVersion,
    private head: RoomHead,
    private opts: AuthorisedOptions,
  ) {
    this.extremities = [...head.extremities];
    this.currentGroup = head.state_group;
  }

  async process(pdus: PDU[]): Promise<void> {
    let queue = topologicalOrder(pdus);
    await this.load(queue.flatMap((e) => [e.event_id!, ...eventIdsOf(e.prev_events), ...eventIdsOf(e.auth_events)]).concat(this.extremities));
    let deoutliering = false;
    for (;;) {
      for (const ev of queue) await this.one(ev, deoutliering);
      // Outliers waiting for events that now have their state: persisted with theirs, in order.
      const arrived = this.arrived.splice(0);
      if (!arrived.length || this.opts.outlier) break;
      const waiting = await this.p.store.waitingOn(this.trx, this.roomNid, arrived);
      for (const id of arrived) this.gapsFilled.add(id);
      for (const row of waiting) if (!this.known.get(row.event_id)?.fresh) this.known.set(row.event_id, knownOf(row));
      const ready = waiting.map((row) => pduOf(row)).filter((e) => !this.known.get(e.event_id!)?.fresh);
      if (!ready.length) break;
      await this.load(ready.flatMap((e) => [...eventIdsOf(e.prev_events), ...eventIdsOf(e.auth_events)]));
      queue = topologicalOrder(ready);
      deoutliering = true;
    }
  }

  /** Reads the stored events among these ids that this call does not know yet. */
  private async load(ids: string[]): Promise<void> {
    const want = [...new Set(ids)].filter((id) => !this.known.has(id));
    for (const row of await this.p.store.eventsById(this.trx, want)) this.known.set(row.event_id, knownOf(row));
  }

  private async one(ev: PDU, deoutliering: boolean): Promise<void> {
    const eventId = ev.event_id!;
    const existing = this.known.get(eventId);
    if (existing && (existing.fresh || !existing.outlier || this.opts.outlier || this.opts.outOfBand)) {
      if (!deoutliering) this.results.push({ eventId, outcome: 'duplicate', streamPos: existing.pos });
      return;
    }
    const result = (r: Omit<AuthorisedResult, 'eventId'>) => {
      if (!deoutliering || r.outcome !== 'outlier') this.results.push({ eventId, ...r });
    };
    const [typeNid, keyNid] = await this.p.interned(ev.type, ev.state_key);
    const nid = existing?.nid ?? (await this.nextNid());
    if (existing) this.replaced.push(existing.nid);
    const isState = typeof ev.state_key === 'string';

    // Auth against the event's own auth events.
    const authIds = eventIdsOf(ev.auth_events);
    if (this.opts.outOfBand) {
      const known = authIds.map((id) => this.known.get(id)).filter((k): k is Known => k !== undefined);
      const row = insertOf(ev, this.roomNid, nid, typeNid, keyNid, { before: 0, after: 0, outlier: true, rejected: false, softFailed: false }, known.map((a) => a.nid), this.version);
      this.inserts.push(row);
      this.positive.push(row);
      this.known.set(eventId, { nid, eventId, pdu: ev, typeNid, keyNid, depth: row.depth, pos: 0, outlier: true, rejected: false, softFailed: false, stateBefore: 0, stateAfter: 0, fresh: true });
      this.outOfBand.push({ eventId, streamPos: 0, pdu: ev, stateBefore: 0, stateAfter: 0 });
      result({ outcome: 'outlier' });
      return;
    }
    const missingAuth = authIds.filter((id) => !this.known.has(id));
    if (missingAuth.length) {
      if (existing) this.replaced.pop();
      result({ outcome: 'missing_auth_events', missing: missingAuth, reason: 'auth events unknown' });
      return;
    }
    const authEvents = authIds.map((id) => this.known.get(id)!);
    const store = (s: { before: number; after: number; outlier: boolean; rejected: boolean; softFailed: boolean; replacesNid?: number | null }, live: boolean): DagEventInsert => {
      const row = insertOf(ev, this.roomNid, nid, typeNid, keyNid, s, authEvents.map((a) => a.nid), this.version);
      this.inserts.push(row);
      (live ? this.positive : this.negative).push(row);
      this.known.set(eventId, {
        nid, eventId, pdu: ev, typeNid, keyNid, depth: row.depth, pos: 0, outlier: s.outlier, rejected: s.rejected,
        softFailed: s.softFailed, stateBefore: s.before, stateAfter: s.after, fresh: true,
      });
      return row;
    };
    const rejectedAuth = authEvents.find((a) => a.rejected);
    let denial = rejectedAuth ? `auth event ${rejectedAuth.eventId} was rejected` : undefined;
    // v12+: the room's create event is implied by the room ID (never an auth event), read all the same.
    const implied = await this.impliedCreate(ev);
    if (!denial) denial = authDenial(() => {
      checkAuthEventList(ev, authEvents.map((a) => a.pdu), this.version);
      checkEventAuth(ev, stateMapOf([...authEvents.map((a) => a.pdu), ...(implied ? [implied] : [])]), this.version);
    });
    if (denial) {
      // A rejected event changes no state: the state after it is the state before it, where that
      // is known (an event citing it builds on that).
      const prevs = eventIdsOf(ev.prev_events).map((id) => this.known.get(id));
      const placed = !this.opts.outlier && prevs.length > 0 && prevs.every((k) => k && !k.outlier && k.stateAfter > 0);
      const group = placed ? (await this.stateOf(prevs.map((k) => k!.stateAfter))).group : 0;
      store({ before: group, after: group, outlier: false, rejected: true, softFailed: false }, false);
      result({ outcome: 'rejected', reason: denial });
      return;
    }
    if (this.opts.outlier) {
      store({ before: 0, after: 0, outlier: true, rejected: false, softFailed: false }, false);
      result({ outcome: 'outlier' });
      return;
    }

    // The state before it: from its prev events' states, resolved where they differ.
    const prevIds = eventIdsOf(ev.prev_events);
    const given = this.opts.stateBefore?.get(eventId);
    let before: { group: number; map: StateIds };
    if (given) {
      await this.load([...given]);
      const unknown = given.filter((id) => !this.known.has(id));
      if (unknown.length) {
        if (existing) this.replaced.pop();
        result({ outcome: 'missing_auth_events', missing: unknown, reason: 'state events unknown' });
        return;
      }
      const map: StateIds = new Map();
      for (const id of given) {
        const k = this.known.get(id)!;
        if (k.keyNid !== null && typeof k.pdu.state_key === 'string') map.set(stateKey(k.pdu.type, k.pdu.state_key), { eventId: id, nid: k.nid, typeNid: k.typeNid, keyNid: k.keyNid });
      }
      before = { group: await this.newGroup(map, null), map };
      // Its prev events we do not have (or have only as outliers, without their place in the
      // history): where to backfill from (the event itself has its state).
      await this.load(prevIds);
      for (const m of prevIds.filter((id) => { const k = this.known.get(id); return !k || k.outlier; })) this.gapsAdded.push({ missing: m, waiting: nid });
    } else {
      const gaps = prevIds.filter((id) => { const k = this.known.get(id); return !k || k.outlier; });
      if (gaps.length) {
        // A gap: kept as an outlier until the missing events come (a backfill point meanwhile).
        store({ before: 0, after: 0, outlier: true, rejected: false, softFailed: false }, false);
        for (const m of gaps) this.gapsAdded.push({ missing: m, waiting: nid });
        result({ outcome: 'outlier', missing: gaps, reason: 'prev events unknown' });
        return;
      }
      before = await this.stateOf(prevIds.map((id) => this.known.get(id)!.stateAfter));
    }
    const beforeAuth = await this.authState(before.map, ev);

    // Auth against the state before it.
    const beforeDenial = authDenial(() => checkEventAuth(ev, beforeAuth, this.version));
    if (beforeDenial) {
      store({ before: before.group, after: before.group, outlier: false, rejected: true, softFailed: false }, false);
      result({ outcome: 'rejected', reason: beforeDenial });
      return;
    }

    // Against the current state (live events only): soft failure.
    let softFailed = false;
    let reason: string | undefined;
    if (!this.opts.backfill && this.currentGroup !== null && this.currentGroup !== before.group) {
      const currentAuth = await this.authState(await this.current(), ev);
      reason = authDenial(() => checkEventAuth(ev, currentAuth, this.version));
      softFailed = reason !== undefined;
    }

    let after = before;
    let replacesNid: number | null = null;
    if (isState) {
      const k = stateKey(ev.type, ev.state_key!);
      replacesNid = before.map.get(k)?.nid ?? null;
      const map = new Map(before.map);
      map.set(k, { eventId, nid, typeNid, keyNid: keyNid! });
      after = { group: await this.newGroup(map, before.group), map };
    }
    const live = !this.opts.backfill && !softFailed;
    store({ before: before.group, after: after.group, outlier: false, rejected: false, softFailed, replacesNid }, live);
    this.arrived.push(eventId);
    const text = softFailed ? undefined : searchableText({ type: ev.type, content: ev.content ?? {} });
    if (text) this.search.push({ nid, key: text.key, text: text.value });
    const target = softFailed ? undefined : redactsOf(ev, this.version);
    if (target !== undefined) {
      // Applied when its sender may redact the target: same server (spec, room versions 3+), or
      // the redact power in the state before it. A target not known yet: when it comes (finish).
      await this.load([target]);
      const t = this.known.get(target);
      if (t && t.pdu.room_id === ev.room_id && !t.rejected) {
        const allowed = serverNameOf(t.pdu.sender) === serverNameOf(ev.sender) || !authDenial(() => checkRedaction(ev, beforeAuth, this.version, t.pdu.sender));
        if (allowed) this.redactions.set(target, eventId);
      }
    }
    result({ outcome: softFailed ? 'soft_failed' : 'accepted', ...(reason ? { reason } : {}) });
    if (!live) return;
    this.live.push({ eventId, streamPos: 0, pdu: ev, stateBefore: before.group, stateAfter: after.group });

    // Forward extremities: this event replaces the ones it cites.
    const cited = new Set(prevIds);
    const coversAll = this.extremities.every((x) => cited.has(x));
    this.extremities = this.extremities.filter((x) => !cited.has(x));
    this.extremities.push(eventId);
    this.extremitiesChanged = true;
    if (coversAll) {
      // The common case: it cites every extremity, so its state is the room's.
      this.currentGroup = after.group;
      this.currentMap = after.map;
    } else {
      const resolved = await this.stateOf(this.extremities.map((id) => this.known.get(id)?.stateAfter ?? 0).filter((g) => g > 0));
      this.currentGroup = resolved.group;
      this.currentMap = resolved.map;
    }
  }

  /** v12+: the accepted create event a (non-create) event's room ID names, when known. */
  private async impliedCreate(ev: PDU): Promise<PDU | undefined> {
    if (!this.version.roomIdIsCreateEventHash || ev.type === 'm.room.create' || typeof ev.room_id !== 'string' || !ev.room_id.startsWith('!')) return undefined;
    const id = createEventIdFromRoomId(ev.room_id);
    await this.load([id]);
    const k = this.known.get(id);
    return k && !k.rejected && k.pdu.type === 'm.room.create' ? k.pdu : undefined;
  }

  /** The events of a state map the auth rules look at for `ev`, as PDUs. */
  private async authState(map: StateIds, ev: PDU): Promise<StateMap> {
    const wanted = authEventSelection({ type: ev.type, sender: ev.sender, state_key: ev.state_key, content: ev.content }, this.version);
    if (typeof ev.state_key === 'string') wanted.push([ev.type, ev.state_key]);
    if (this.version.roomIdIsCreateEventHash) wanted.push(['m.room.create', '']);
    const refs = wanted.map(([t, s]) => map.get(stateKey(t, s))).filter((r): r is StateRef => r !== undefined);
    await this.load(refs.map((r) => r.eventId));
    const out: StateMap = new Map();
    for (const r of refs) {
      const k = this.known.get(r.eventId);
      if (k && typeof k.pdu.state_key === 'string') out.set(stateKey(k.pdu.type, k.pdu.state_key), k.pdu);
    }
    return out;
  }

  private async current(): Promise<StateIds> {
    if (this.currentMap) return this.currentMap;
    const m = await this.p.groupMaps(this.trx, [this.currentGroup ?? 0]);
    this.currentMap = m.get(this.currentGroup ?? 0)!.map;
    return this.currentMap;
  }

  /** The state after some snapshots: the one, or their resolution (a new snapshot) when they differ. */
  private async stateOf(groups: number[]): Promise<{ group: number; map: StateIds }> {
    const distinct = [...new Set(groups)];
    if (distinct.length === 0) return { group: await this.newGroup(new Map(), null), map: new Map() };
    const maps = await this.p.groupMaps(this.trx, distinct);
    if (distinct.length === 1) return { group: distinct[0]!, map: maps.get(distinct[0]!)!.map };
    const sets = distinct.map((g) => maps.get(g)!.map);
    const began = performance.now();
    const resolved = await resolveState({
      roomVersion: this.version.id,
      stateSets: sets.map((m) => new Map([...m].map(([k, r]) => [k, r.eventId]))),
      getEvents: (ids) => this.resolverEvents(ids),
    });
    this.p.timings.resolutions += 1;
    this.p.timings.resolveMs += performance.now() - began;
    const refs = new Map<string, StateRef>();
    for (const m of sets) for (const r of m.values()) refs.set(r.eventId, r);
    const map: StateIds = new Map();
    for (const [k, id] of resolved) {
      let r = refs.get(id);
      if (!r) {
        await this.load([id]);
        const kn = this.known.get(id);
        if (!kn || kn.keyNid === null) continue;
        r = { eventId: id, nid: kn.nid, typeNid: kn.typeNid, keyNid: kn.keyNid };
      }
      map.set(k, r);
    }
    return { group: await this.newGroup(map, distinct[0]!), map };
  }

  private async resolverEvents(ids: string[]): Promise<Map<string, ResolverEvent>> {
    await this.load(ids);
    const out = new Map<string, ResolverEvent>();
    for (const id of ids) {
      const k = this.known.get(id);
      if (!k) continue;
      const e = k.pdu;
      out.set(id, {
        event_id: id, room_id: e.room_id, type: e.type, ...(typeof e.state_key === 'string' ? { state_key: e.state_key } : {}), sender: e.sender,
        origin_server_ts: Number(e.origin_server_ts), content: e.content ?? {}, auth_events: eventIdsOf(e.auth_events), prev_events: eventIdsOf(e.prev_events),
        depth: Number(e.depth ?? 0),
      });
    }
    return out;
  }

  /** A snapshot for `map`: a delta over `base` (a full one every SNAPSHOT_EVERY, or when keys went away). */
  private async newGroup(map: StateIds, base: number | null): Promise<number> {
    const id = await this.nextGroup();
    let prev: number | null = null;
    let chainLen = 0;
    let entries = [...map.values()];
    if (base !== null && base > 0) {
      const b = (await this.p.groupMaps(this.trx, [base])).get(base)!;
      const lost = [...b.map.keys()].some((k) => !map.has(k));
      if (!lost && b.chainLen + 1 < SNAPSHOT_EVERY) {
        prev = base;
        chainLen = b.chainLen + 1;
        entries = [...map].filter(([k, r]) => b.map.get(k)?.eventId !== r.eventId).map(([, r]) => r);
      }
    }
    this.groups.push({ id, prev, chainLen, entries: entries.map((r) => ({ typeNid: r.typeNid, keyNid: r.keyNid, nid: r.nid })) });
    this.p.remember(id, chainLen, map);
    return id;
  }

  private async nextNid(): Promise<number> {
    if (!this.nids.length) this.nids = await this.p.store.nextIds(this.trx, 'events_event_nid_seq', 32);
    return this.nids.shift()!;
  }

  private async nextGroup(): Promise<number> {
    if (!this.groupIds.length) this.groupIds = await this.p.store.nextIds(this.trx, 'state_groups_state_group_seq', 16);
    return this.groupIds.shift()!;
  }

  /** Positions, the new head and current state: what the transaction writes. */
  async finish(reserve: (allocate: () => Promise<number[]>) => Promise<number[]>, positions: number[]): Promise<DagWrite> {
    // Stored in processing order: live events at new stream positions, the rest below zero.
    if (this.positive.length) {
      const n = this.positive.length;
      const got = await reserve(() => this.p.store.nextIds(this.trx, 'stream_positions', n));
      positions.push(...got);
      this.positive.forEach((row, i) => (row.streamPos = got[i]!));
    }
    const neg = await this.p.store.nextIds(this.trx, 'backfill_positions', this.negative.length);
    this.negative.forEach((row, i) => (row.streamPos = neg[i]!));
    const byId = new Map(this.inserts.map((r) => [r.eventId, r]));
    for (const l of [...this.live, ...this.outOfBand]) l.streamPos = byId.get(l.eventId)!.streamPos;
    for (const r of this.results) if (byId.has(r.eventId) && r.outcome !== 'missing_auth_events') r.streamPos = byId.get(r.eventId)!.streamPos;
    // Redactions stored before their targets arrived (same server only: the state that allowed
    // them is not looked at again), and this call's own.
    const arriving = this.inserts.filter((r) => !r.outlier && !r.rejected);
    for (const r of await this.p.store.redactionsOf(this.trx, this.roomNid, arriving.map((x) => x.eventId))) {
      const t = this.known.get(r.redacts);
      if (t && serverNameOf(t.pdu.sender) === serverNameOf(r.sender) && !this.redactions.has(r.redacts)) this.redactions.set(r.redacts, r.event_id);
    }
    for (const r of this.inserts) {
      // A redaction that came before its target in this very call.
      const t = r.redacts !== null && !r.rejected && !r.outlier && !r.softFailed ? this.known.get(r.redacts) : undefined;
      if (t?.fresh && serverNameOf(t.pdu.sender) === serverNameOf(r.sender) && !this.redactions.has(r.redacts!)) this.redactions.set(r.redacts!, r.eventId);
    }
    const redactedNow = new Set<number>();
    const older: Array<[string, string]> = [];
    for (const [target, redaction] of this.redactions) {
      const row = this.inserts.find((x) => x.eventId === target);
      if (row) {
        row.redactedBy = redaction;
        redactedNow.add(row.nid);
      } else older.push([target, redaction]);
    }
    this.search = this.search.filter((x) => !redactedNow.has(x.nid));
    // An outlier persisted again with its state: its old backfill points go with the old row.
    const w: DagWrite = {
      roomNid: this.roomNid, replaced: this.replaced, events: this.inserts, groups: this.groups, currentSet: [], currentDeleted: [],
      memberships: [], gapsAdded: this.gapsAdded, gapsFilled: [...this.gapsFilled], search: this.search, redactions: older,
    };
    for (const o of this.outOfBand) {
      if (o.pdu.type !== 'm.room.member' || typeof o.pdu.state_key !== 'string') continue;
      w.memberships.push({ user: o.pdu.state_key, membership: String(o.pdu.content?.membership), nid: byId.get(o.eventId)!.nid, pos: o.streamPos, sender: o.pdu.sender });
    }
    if (!this.extremitiesChanged) return w;
    const oldMap = (await this.p.groupMaps(this.trx, [this.head.state_group ?? 0])).get(this.head.state_group ?? 0)!.map;
    const newMap = await this.current();
    for (const [k, r] of newMap) {
      if (oldMap.get(k)?.eventId === r.eventId) continue;
      w.currentSet.push({ typeNid: r.typeNid, keyNid: r.keyNid, nid: r.nid });
      if (k.startsWith('m.room.member\u0000')) {
        const ev = this.known.get(r.eventId)!;
        const pos = byId.get(r.eventId)?.streamPos ?? ev.pos;
        w.memberships.push({ user: k.slice('m.room.member\u0000'.length), membership: String(ev.pdu.content?.membership), nid: r.nid, pos, sender: ev.pdu.sender });
      }
    }
    for (const [k, r] of oldMap) if (!newMap.has(k)) w.currentDeleted.push({ typeNid: r.typeNid, keyNid: r.keyNid });
    const depth = Math.max(0, ...this.extremities.map((id) => this.known.get(id)?.depth ?? 0));
    const lastPos = Math.max(this.head.last_pos, ...this.positive.map((r) => r.streamPos));
    w.head = { state_group: this.currentGroup, last_pos: lastPos, extremities: this.extremities, depth };
    return w;
  }
}

function authDenial(check: () => void): string | undefined {
  try {
    check();
    return undefined;
  } catch (err) {
    if (err instanceof AuthError) return err.message;
    throw err;
  }
}

function stateMapOf(pdus: PDU[]): StateMap {
  const m: StateMap = new Map();
  for (const p of pdus) if (typeof p.state_key === 'string') m.set(stateKey(p.type, p.state_key), p);
  return m;
}

function pduOf(row: { json: string; event_id: string }): PDU {
  const pdu = JSON.parse(row.json) as PDU;
  pdu.event_id = row.event_id;
  return pdu;
}

function knownOf(row: DagEventRow): Known {
  return {
    nid: row.event_nid, eventId: row.event_id, pdu: pduOf(row), typeNid: row.type_nid, keyNid: row.state_key_nid, depth: row.depth,
    pos: row.stream_pos, outlier: row.outlier, rejected: row.rejected, softFailed: row.soft_failed, stateBefore: row.state_before, stateAfter: row.state_after,
  };
}

/** Parents before children (prev events within the batch), else by depth. */
function topologicalOrder(pdus: PDU[]): PDU[] {
  const byId = new Map(pdus.map((p) => [p.event_id!, p]));
  const sorted = [...byId.values()].sort((a, b) => Number(a.depth ?? 0) - Number(b.depth ?? 0));
  const out: PDU[] = [];
  const state = new Map<string, 1 | 2>();
  const visit = (p: PDU) => {
    // Iterative DFS: a long chain must not overflow the stack.
    const stack: Array<{ p: PDU; i: number }> = [{ p, i: 0 }];
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const id = top.p.event_id!;
      if (top.i === 0) {
        if (state.has(id)) { stack.pop(); continue; }
        state.set(id, 1);
      }
      const prevs = eventIdsOf(top.p.prev_events);
      let pushed = false;
      while (top.i < prevs.length) {
        const parent = byId.get(prevs[top.i++]!);
        if (parent && !state.has(parent.event_id!)) { stack.push({ p: parent, i: 0 }); pushed = true; break; }
      }
      if (pushed) continue;
      state.set(id, 2);
      out.push(top.p);
      stack.pop();
    }
  };
  for (const p of sorted) visit(p);
  return out;
}

/** The stored JSON: the event as signed (room versions 3+ carry no event_id in it). */
function storedJson(ev: PDU, roomVersionHasIds: boolean): string {
  const copy: Record<string, unknown> = { ...ev };
  if (!roomVersionHasIds) delete copy.event_id;
  return canonicalJson(copy);
}

function indexable(v: unknown): string | null {
  return typeof v === 'string' && Buffer.byteLength(v) <= 255 ? v : null;
}

function insertOf(
  ev: PDU, roomNid: number, nid: number, typeNid: number, keyNid: number | null,
  s: { before: number; after: number; outlier: boolean; rejected: boolean; softFailed: boolean; replacesNid?: number | null },
  authNids: number[],
  version: RoomVersion,
): DagEventInsert {
  const relates = ev.content?.['m.relates_to'] as { rel_type?: unknown; event_id?: unknown } | null | undefined;
  return {
    nid, eventId: ev.event_id!, roomNid, streamPos: 0, depth: Number(ev.depth ?? 0), typeNid, stateKeyNid: keyNid, sender: ev.sender,
    ts: Number(ev.origin_server_ts), stateBefore: s.before, stateAfter: s.after, replacesNid: s.replacesNid ?? null,
    membership: ev.type === 'm.room.member' && typeof ev.state_key === 'string' ? String(ev.content?.membership) : null,
    relType: indexable(relates?.rel_type), relatesTo: indexable(relates?.event_id),
    redacts: typeof ev.redacts === 'string' ? ev.redacts : typeof ev.content?.redacts === 'string' ? ev.content.redacts : null,
    prevEventIds: eventIdsOf(ev.prev_events), authEventNids: authNids, outlier: s.outlier, rejected: s.rejected, softFailed: s.softFailed,
    containsUrl: typeof ev.content?.url === 'string', json: storedJson(ev, version.eventIdFormat === 'v1'),
  };
}
