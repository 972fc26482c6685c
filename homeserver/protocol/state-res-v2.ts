// State resolution v2 (rooms/fragments/v2-state-res.md, room versions 2-11) and its v12 revision
// (rooms/v12.md "State resolution": the first iterative auth checks start from an empty map, and
// the full conflicted set also holds the conflicted state subgraph). Pure: events are read only
// through the caller's batched `getEvents`, and every event is fetched at most once per call.
import { authEventSelection, checkEventAuth, createEventIdFromRoomId, stateKey, type PDU, type StateMap } from './auth.ts';
import { userLevel, type PowerLevelsContent } from './power-levels.ts';
import { getProtocolRoomVersion, type RoomVersion } from './room-versions.ts';

export { stateKey };

export interface ResolverEvent {
  event_id: string;
  /** A v12 m.room.create event has no room_id: pass '' (or the room ID derived from it). */
  room_id: string;
  type: string;
  state_key?: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  auth_events: string[];
  prev_events: string[];
  depth: number;
  /** True when the event was rejected (failed auth against its auth events or on receipt). A
   *  rejected event never enters the resolved state and is not used as an auth event. */
  rejected?: boolean;
}

/** What one resolution did, for benchmarks and logs. */
export interface StateResStats {
  /** Keys whose value differs between the state sets (or is missing from some). */
  conflictedKeys: number;
  /** Conflicted events + auth difference (+ conflicted subgraph from v12). */
  fullConflictedSet: number;
  authDifference: number;
  /** Power events sorted by reverse topological power ordering (with their auth chain in the set). */
  powerEvents: number;
  /** Distinct events fetched through getEvents, and the number of getEvents calls. */
  eventsFetched: number;
  fetchCalls: number;
  /** Auth checks run during the two iterative passes. */
  authChecks: number;
  /** Wall time of the whole call, in milliseconds. */
  ms: number;
}

export interface ResolveStateV2Input {
  roomVersion: string;
  stateSets: ReadonlyArray<ReadonlyMap<string, string>>;
  getEvents: (eventIds: string[]) => Promise<Map<string, ResolverEvent>>;
  /** Called once with what the resolution did. */
  onStats?: (stats: StateResStats) => void;
}

const PL_KEY = stateKey('m.room.power_levels', '');

export class StateResolutionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateResolutionError';
  }
}

/**
 * Resolves the state sets of the forks of a room into one state map (stateKey → event ID).
 * Keys with the same event in every set are kept as they are; the others are resolved by the
 * power-ordered iterative auth checks of the spec. Events getEvents does not return are treated
 * as unknown: a conflicted one cannot win, an unknown auth event is skipped.
 */
export async function resolveStateV2(input: ResolveStateV2Input): Promise<Map<string, string>> {
  const started = performance.now();
  const version = getProtocolRoomVersion(input.roomVersion);
  if (!version) throw new StateResolutionError(`unknown room version ${JSON.stringify(input.roomVersion)}`);
  if (version.stateResolution === 'v1') {
    throw new StateResolutionError(`room version ${version.id} uses state resolution v1: use resolveStateV1 (or resolveState, which picks the algorithm)`);
  }
  const resolver = new Resolver(version, input.getEvents);
  const result = await resolver.resolve(input.stateSets);
  resolver.stats.ms = performance.now() - started;
  input.onStats?.(resolver.stats);
  return result;
}

class Resolver {
  /** id → event, or null once getEvents has been asked and did not know it. */
  private readonly events = new Map<string, ResolverEvent | null>();
  readonly stats: StateResStats = {
    conflictedKeys: 0, fullConflictedSet: 0, authDifference: 0, powerEvents: 0, eventsFetched: 0, fetchCalls: 0, authChecks: 0, ms: 0,
  };

  constructor(
    private readonly version: RoomVersion,
    private readonly getEvents: (eventIds: string[]) => Promise<Map<string, ResolverEvent>>,
  ) {}

  async resolve(stateSets: ReadonlyArray<ReadonlyMap<string, string>>): Promise<Map<string, string>> {
    if (stateSets.length === 0) return new Map();
    if (stateSets.length === 1) return new Map(stateSets[0]);

    // Unconflicted state map and conflicted state set. A key missing from some set is conflicted.
    const unconflicted = new Map<string, string>();
    const conflictedIds = new Set<string>();
    const allKeys = new Set<string>();
    for (const set of stateSets) for (const k of set.keys()) allKeys.add(k);
    for (const k of allKeys) {
      const first = stateSets[0].get(k);
      let same = first !== undefined;
      for (let i = 1; same && i < stateSets.length; i++) same = stateSets[i].get(k) === first;
      if (same) {
        unconflicted.set(k, first as string);
      } else {
        this.stats.conflictedKeys++;
        for (const set of stateSets) {
          const id = set.get(k);
          if (id !== undefined) conflictedIds.add(id);
        }
      }
    }
    if (conflictedIds.size === 0) return unconflicted;

    // Every event of every state set with its full auth chain, fetched a layer at a time.
    const allIds = new Set<string>();
    for (const set of stateSets) for (const id of set.values()) allIds.add(id);
    await this.loadAuthClosure(allIds);

    // Auth difference: ∪ C_i − ∩ C_i. Everything reachable from the unconflicted state is in every
    // C_i, so only the chains of each set's conflicted events need walking, stopping there.
    const common = this.closure(unconflicted.values(), undefined);
    const seenIn = new Map<string, number>();
    for (const set of stateSets) {
      const own: string[] = [];
      for (const [k, id] of set) if (!unconflicted.has(k)) own.push(id);
      for (const id of this.closure(own, common)) seenIn.set(id, (seenIn.get(id) ?? 0) + 1);
    }
    const full = new Set<string>();
    for (const [id, n] of seenIn) if (n < stateSets.length) full.add(id);
    this.stats.authDifference = full.size;
    for (const id of conflictedIds) full.add(id);
    if (this.version.stateResolution === 'v2.1') for (const id of this.conflictedSubgraph(conflictedIds)) full.add(id);
    // Only known events take part (a missing conflicted event cannot be checked, so cannot win).
    for (const id of full) if (!this.events.get(id)) full.delete(id);
    this.stats.fullConflictedSet = full.size;

    // 1. Power events of the full conflicted set, with their auth chain in it, in reverse
    //    topological power order.
    const sortedPower = this.reverseTopologicalPowerSort(full);
    this.stats.powerEvents = sortedPower.length;
    // 2. Iterative auth checks from the unconflicted state (v12: from an empty map).
    //    The resolved state is kept as changes over the base, which is not copied.
    const base: ReadonlyMap<string, string> = this.version.stateResolution === 'v2.1' ? new Map() : unconflicted;
    const changes = new Map<string, string>();
    this.iterativeAuthChecks(sortedPower, base, changes);
    // 3. The other events by mainline order of the resolved power levels; 4. auth checks again.
    const inPower = new Set(sortedPower);
    const leftover = [...full].filter((id) => !inPower.has(id));
    this.iterativeAuthChecks(this.mainlineSort(leftover, changes.get(PL_KEY) ?? base.get(PL_KEY)), base, changes);
    // 5. The unconflicted state wins over anything resolved.
    const resolved = new Map(unconflicted);
    for (const [k, id] of changes) if (!unconflicted.has(k)) resolved.set(k, id);
    return resolved;
  }

  /** Fetches `ids` and, layer by layer, every auth event they reach (one getEvents per layer). */
  private async loadAuthClosure(ids: Iterable<string>): Promise<void> {
    let frontier = [...new Set(ids)].filter((id) => !this.events.has(id));
    while (frontier.length > 0) {
      this.stats.fetchCalls++;
      const got = await this.getEvents(frontier);
      const next = new Set<string>();
      for (const id of frontier) {
        const ev = got.get(id);
        // An event answered under another id is not that event; a malformed one is made safe to read.
        const known = ev && ev.event_id === id ? wellFormed(ev) : null;
        this.events.set(id, known);
        if (!known) continue;
        this.stats.eventsFetched++;
        for (const a of this.authIdsOf(known)) if (!this.events.has(a)) next.add(a);
      }
      frontier = [...next].filter((id) => !this.events.has(id));
    }
  }

  private event(id: string): ResolverEvent | undefined {
    return this.events.get(id) ?? undefined;
  }

  /** An event's auth events; from v12 the create event is implied by the room ID. */
  private authIdsOf(ev: ResolverEvent): string[] {
    const ids = ev.auth_events;
    if (!this.version.roomIdIsCreateEventHash || ev.type === 'm.room.create' || !ev.room_id.startsWith('!')) return ids;
    const create = createEventIdFromRoomId(ev.room_id);
    return ids.includes(create) ? ids : [...ids, create];
  }

  /** The events reachable from `start` over auth edges (start included), not entering `stop`. */
  private closure(start: Iterable<string>, stop: ReadonlySet<string> | undefined): Set<string> {
    const out = new Set<string>();
    const stack: string[] = [];
    for (const id of start) {
      if (stop?.has(id) || out.has(id)) continue;
      out.add(id);
      stack.push(id);
    }
    while (stack.length > 0) {
      const ev = this.event(stack.pop() as string);
      if (!ev) continue;
      for (const a of this.authIdsOf(ev)) {
        if (stop?.has(a) || out.has(a)) continue;
        out.add(a);
        stack.push(a);
      }
    }
    return out;
  }

  /** v12: the events on auth paths from one conflicted event to another (endpoints included). */
  private conflictedSubgraph(conflicted: ReadonlySet<string>): Set<string> {
    const below = this.closure(conflicted, undefined);
    const up = new Map<string, string[]>();
    for (const id of below) {
      const ev = this.event(id);
      if (!ev) continue;
      for (const a of this.authIdsOf(ev)) {
        if (!below.has(a)) continue;
        const list = up.get(a);
        if (list) list.push(id);
        else up.set(a, [id]);
      }
    }
    // Walking up from the conflicted events, within what they reach, finds what lies between.
    const out = new Set<string>(conflicted);
    const stack = [...conflicted];
    while (stack.length > 0) {
      for (const parent of up.get(stack.pop() as string) ?? []) {
        if (out.has(parent)) continue;
        out.add(parent);
        stack.push(parent);
      }
    }
    return out;
  }

  /** The sender's power level by the event's own auth events (creator rules if none). */
  private senderPower(ev: ResolverEvent): number {
    let pl: ResolverEvent | undefined;
    let create: ResolverEvent | undefined;
    for (const a of this.authIdsOf(ev)) {
      const aev = this.event(a);
      if (aev?.state_key !== '') continue;
      if (aev.type === 'm.room.power_levels') pl = aev;
      else if (aev.type === 'm.room.create') create = aev;
    }
    return userLevel(pl?.content as PowerLevelsContent | undefined, ev.sender, create, this.version);
  }

  private reverseTopologicalPowerSort(full: ReadonlySet<string>): string[] {
    // The graph: power events and their auth chain within the full conflicted set.
    const edges = new Map<string, string[]>();
    const stack: string[] = [];
    for (const id of full) {
      if (isPowerEvent(this.event(id) as ResolverEvent)) {
        edges.set(id, []);
        stack.push(id);
      }
    }
    while (stack.length > 0) {
      const id = stack.pop() as string;
      const out = edges.get(id) as string[];
      for (const a of this.authIdsOf(this.event(id) as ResolverEvent)) {
        if (!full.has(a) || out.includes(a)) continue;
        out.push(a);
        if (!edges.has(a)) {
          edges.set(a, []);
          stack.push(a);
        }
      }
    }
    // Kahn's algorithm from the events with no auth events left, smallest first by
    // (higher sender power, earlier origin_server_ts, smaller event ID).
    const power = new Map<string, number>();
    const parents = new Map<string, string[]>();
    const remaining = new Map<string, number>();
    for (const [id, out] of edges) {
      power.set(id, this.senderPower(this.event(id) as ResolverEvent));
      remaining.set(id, out.length);
      for (const a of out) {
        const list = parents.get(a);
        if (list) list.push(id);
        else parents.set(a, [id]);
      }
    }
    const before = (x: string, y: string): boolean => {
      const px = power.get(x) as number;
      const py = power.get(y) as number;
      if (px !== py) return px > py;
      return tsThenId(this.event(x) as ResolverEvent, this.event(y) as ResolverEvent);
    };
    const heap = new MinHeap<string>(before);
    for (const [id, n] of remaining) if (n === 0) heap.push(id);
    const sorted: string[] = [];
    while (heap.size > 0) {
      const id = heap.pop() as string;
      sorted.push(id);
      for (const p of parents.get(id) ?? []) {
        const n = (remaining.get(p) as number) - 1;
        remaining.set(p, n);
        if (n === 0) heap.push(p);
      }
    }
    // An auth cycle (impossible for hash-addressed events) leaves the rest unsorted: they lose.
    return sorted;
  }

  /** Applies each allowed event to the state `base` overlaid by `changes` (updated in place). */
  private iterativeAuthChecks(ids: readonly string[], base: ReadonlyMap<string, string>, changes: Map<string, string>): void {
    for (const id of ids) {
      const ev = this.event(id);
      if (!ev || ev.rejected || ev.state_key === undefined) continue;
      const authState: StateMap = new Map();
      for (const a of this.authIdsOf(ev)) {
        const aev = this.event(a);
        if (aev && !aev.rejected && aev.state_key !== undefined) authState.set(stateKey(aev.type, aev.state_key), aev as PDU);
      }
      for (const [type, sk] of authEventSelection(ev, this.version)) {
        const key = stateKey(type, sk);
        const current = changes.get(key) ?? base.get(key);
        const cev = current === undefined ? undefined : this.event(current);
        if (cev && !cev.rejected) authState.set(key, cev as PDU);
      }
      this.stats.authChecks++;
      try {
        checkEventAuth(asPdu(ev), authState, this.version);
      } catch {
        // Not allowed (AuthError): ignored. Anything else thrown means a malformed event, which
        // fails its check rather than the whole resolution.
        continue;
      }
      changes.set(stateKey(ev.type, ev.state_key), id);
    }
  }

  /** Orders events by mainline position against the power levels event `pl`, then ts, then ID. */
  private mainlineSort(ids: string[], pl: string | undefined): string[] {
    if (ids.length === 0) return ids;
    const plOf = (ev: ResolverEvent): ResolverEvent | undefined => {
      for (const a of this.authIdsOf(ev)) {
        const aev = this.event(a);
        if (aev && aev.type === 'm.room.power_levels' && aev.state_key === '') return aev;
      }
      return undefined;
    };
    // Mainline: pl, its power levels auth event, and so on; the oldest gets position 1.
    const chain: string[] = [];
    const seen = new Set<string>();
    for (let cur = pl === undefined ? undefined : this.event(pl); cur && !seen.has(cur.event_id); cur = plOf(cur)) {
      seen.add(cur.event_id);
      chain.push(cur.event_id);
    }
    const position = new Map<string, number>();
    chain.forEach((id, i) => position.set(id, chain.length - i));
    // Position of an event: that of the first mainline event on its power levels chain, 0 if none
    // (sorts first). Memoised along the way: many events share their power levels events.
    const depthOf = (ev: ResolverEvent): number => {
      const path: string[] = [];
      let depth = 0;
      const visited = new Set<string>();
      for (let cur: ResolverEvent | undefined = ev; cur && !visited.has(cur.event_id); cur = plOf(cur)) {
        visited.add(cur.event_id);
        const known = position.get(cur.event_id);
        if (known !== undefined) {
          depth = known;
          break;
        }
        path.push(cur.event_id);
      }
      for (const id of path) if (id !== ev.event_id) position.set(id, depth);
      return depth;
    };
    const keyed = ids.map((id) => {
      const ev = this.event(id) as ResolverEvent;
      return { id, ev, depth: depthOf(ev) };
    });
    keyed.sort((x, y) => (x.depth !== y.depth ? x.depth - y.depth : tsThenId(x.ev, y.ev) ? -1 : 1));
    return keyed.map((k) => k.id);
  }
}

/** True when x sorts before y by origin_server_ts, then event ID. */
function tsThenId(x: ResolverEvent, y: ResolverEvent): boolean {
  if (x.origin_server_ts !== y.origin_server_ts) return x.origin_server_ts < y.origin_server_ts;
  return x.event_id < y.event_id;
}

/** Power levels, join rules, the create event, and kicks and bans (leave/ban by someone else). */
export function isPowerEvent(ev: Pick<ResolverEvent, 'type' | 'state_key' | 'sender' | 'content'>): boolean {
  if (ev.state_key === undefined) return false;
  if (ev.state_key === '' && (ev.type === 'm.room.power_levels' || ev.type === 'm.room.join_rules' || ev.type === 'm.room.create')) return true;
  if (ev.type !== 'm.room.member') return false;
  const membership = ev.content?.membership;
  return (membership === 'leave' || membership === 'ban') && ev.sender !== ev.state_key;
}

/** The event, or a copy with `content` an object, `auth_events` an array of strings, string
 *  ids, type and state key, and a numeric `origin_server_ts`, so that hostile shapes fail auth
 *  checks rather than the resolution. */
function wellFormed(ev: ResolverEvent): ResolverEvent {
  const okContent = ev.content !== null && typeof ev.content === 'object' && !Array.isArray(ev.content);
  const okAuth = Array.isArray(ev.auth_events) && ev.auth_events.every((a) => typeof a === 'string');
  const okTs = typeof ev.origin_server_ts === 'number' && Number.isFinite(ev.origin_server_ts);
  const okKey = ev.state_key === undefined || typeof ev.state_key === 'string';
  if (okContent && okAuth && okTs && okKey && typeof ev.sender === 'string' && typeof ev.type === 'string' && typeof ev.room_id === 'string') return ev;
  return {
    ...ev,
    room_id: typeof ev.room_id === 'string' ? ev.room_id : '',
    type: String(ev.type),
    ...(okKey ? {} : { state_key: String(ev.state_key) }),
    sender: String(ev.sender),
    content: okContent ? ev.content : {},
    auth_events: Array.isArray(ev.auth_events) ? ev.auth_events.filter((a): a is string => typeof a === 'string') : [],
    origin_server_ts: okTs ? ev.origin_server_ts : 0,
  };
}

function asPdu(ev: ResolverEvent): PDU {
  const pdu: PDU = {
    event_id: ev.event_id,
    room_id: ev.room_id,
    sender: ev.sender,
    type: ev.type,
    content: ev.content,
    origin_server_ts: ev.origin_server_ts,
    prev_events: ev.prev_events,
    auth_events: ev.auth_events,
    depth: ev.depth,
  };
  if (ev.state_key !== undefined) pdu.state_key = ev.state_key;
  // v12: the create event carries no room_id.
  if (ev.room_id === '' && ev.type === 'm.room.create') delete (pdu as { room_id?: string }).room_id;
  return pdu;
}

/** A binary heap; `before(a, b)` is true when a comes out first. */
class MinHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop() as T;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l], a[m])) m = l;
        if (r < a.length && this.before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}
