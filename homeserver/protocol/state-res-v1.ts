// The original state resolution algorithm of room version 1 (rooms/v1.md "State resolution"),
// with Synapse's reading of the parts the spec leaves open: a key missing from some state sets
// is not a conflict (the union is taken), the auth state is the unconflicted state of the keys the
// conflicted events' auth rules look at, and a key whose conflicting events are all unknown drops.
// Kept for joining old rooms; it is known to reset state, which v2 fixed.
import { createHash } from 'node:crypto';
import { authEventSelection, checkEventAuth, stateKey, type PDU, type StateMap } from './auth.ts';
import { getProtocolRoomVersion } from './room-versions.ts';
import { StateResolutionError, resolveStateV2, type ResolveStateV2Input, type ResolverEvent } from './state-res-v2.ts';

const PL_KEY = stateKey('m.room.power_levels', '');

export async function resolveStateV1(input: ResolveStateV2Input): Promise<Map<string, string>> {
  const started = performance.now();
  const version = getProtocolRoomVersion(input.roomVersion);
  if (!version) throw new StateResolutionError(`unknown room version ${JSON.stringify(input.roomVersion)}`);
  if (version.stateResolution !== 'v1') throw new StateResolutionError(`room version ${version.id} does not use state resolution v1`);
  const sets = input.stateSets;
  if (sets.length === 0) return new Map();
  if (sets.length === 1) return new Map(sets[0]);

  // The union of the sets; a key with different events in two sets is conflicted.
  const unconflicted = new Map<string, string>();
  const conflicted = new Map<string, Set<string>>();
  for (const set of sets) {
    for (const [k, id] of set) {
      const seen = conflicted.get(k);
      if (seen) seen.add(id);
      else if (!unconflicted.has(k)) unconflicted.set(k, id);
      else if (unconflicted.get(k) !== id) {
        conflicted.set(k, new Set([unconflicted.get(k) as string, id]));
        unconflicted.delete(k);
      }
    }
  }
  let fetchCalls = 0;
  let eventsFetched = 0;
  const fetch = async (ids: string[]): Promise<Map<string, ResolverEvent>> => {
    const got = ids.length > 0 ? await input.getEvents(ids) : new Map<string, ResolverEvent>();
    if (ids.length > 0) fetchCalls++;
    const out = new Map<string, ResolverEvent>();
    for (const id of ids) {
      const ev = got.get(id);
      if (ev && ev.event_id === id && !ev.rejected) out.set(id, ev);
    }
    eventsFetched += out.size;
    return out;
  };
  const finish = (result: Map<string, string>, authChecks: number): Map<string, string> => {
    input.onStats?.({
      conflictedKeys: conflicted.size, fullConflictedSet: 0, authDifference: 0, powerEvents: 0,
      eventsFetched, fetchCalls, authChecks, ms: performance.now() - started,
    });
    return result;
  };
  if (conflicted.size === 0) return finish(unconflicted, 0);

  const known = await fetch([...new Set([...conflicted.values()].flatMap((s) => [...s]))]);
  const contested = new Map<string, ResolverEvent[]>();
  for (const [k, ids] of conflicted) {
    const events = [...ids].flatMap((id) => known.get(id) ?? []);
    if (events.length > 1) contested.set(k, events);
    else if (events.length === 1) unconflicted.set(k, events[0].event_id);
  }

  // The auth state: the unconflicted events of the keys the contested events' rules consult.
  const authIds = new Map<string, string>();
  for (const events of contested.values()) {
    for (const ev of events) {
      for (const [t, sk] of authEventSelection(ev, version)) {
        const key = stateKey(t, sk);
        const id = unconflicted.get(key);
        if (id !== undefined) authIds.set(key, id);
      }
    }
  }
  const authEvents = await fetch([...new Set(authIds.values())]);
  const authState: StateMap = new Map();
  for (const [key, id] of authIds) {
    const ev = authEvents.get(id);
    if (ev) authState.set(key, ev as PDU);
  }

  let authChecks = 0;
  const allowed = (ev: ResolverEvent, state: StateMap): boolean => {
    authChecks++;
    try {
      checkEventAuth(ev as PDU, state, version);
      return true;
    } catch {
      return false; // not allowed, or too malformed to check
    }
  };
  const resolved = new Map<string, ResolverEvent>();
  const pass = (select: (key: string) => boolean, resolve: (events: ResolverEvent[]) => ResolverEvent): void => {
    for (const [k, events] of contested) if (!resolved.has(k) && select(k)) resolved.set(k, resolve(events));
    for (const [k, ev] of resolved) authState.set(k, ev as PDU);
  };
  // Power levels, join rules and memberships: from the oldest, each allowed one replaces the last.
  const resolveAuthEvents = (events: ResolverEvent[]): ResolverEvent => {
    const order = orderedEvents(events).reverse(); // ascending depth, then descending sha1
    const keys = new Set(events.flatMap((ev) => authEventSelection(ev, version).map(([t, sk]) => stateKey(t, sk))));
    const state: StateMap = new Map([...authState].filter(([k]) => keys.has(k)));
    let prev = order[0];
    for (const ev of order.slice(1)) {
      state.set(stateKey(prev.type, prev.state_key as string), prev as PDU);
      if (!allowed(ev, state)) return prev;
      prev = ev;
    }
    return prev;
  };
  // Anything else: the deepest event (then lowest sha1) that is allowed, else the shallowest.
  const resolveNormalEvents = (events: ResolverEvent[]): ResolverEvent => {
    const order = orderedEvents(events);
    return order.find((ev) => allowed(ev, authState)) ?? (order.at(-1) as ResolverEvent);
  };
  const typeOf = (k: string) => k.slice(0, k.indexOf('\u0000'));
  pass((k) => k === PL_KEY, resolveAuthEvents);
  pass((k) => typeOf(k) === 'm.room.join_rules', resolveAuthEvents);
  pass((k) => typeOf(k) === 'm.room.member', resolveAuthEvents);
  pass(() => true, resolveNormalEvents);

  const result = new Map(unconflicted);
  for (const [k, ev] of resolved) result.set(k, ev.event_id);
  return finish(result, authChecks);
}

/** Descending depth, then ascending sha1(event_id) in hex. */
function orderedEvents(events: ResolverEvent[]): ResolverEvent[] {
  const sha1 = new Map(events.map((ev) => [ev.event_id, createHash('sha1').update(ev.event_id, 'utf8').digest('hex')]));
  return [...events].sort((a, b) => {
    if (a.depth !== b.depth) return b.depth - a.depth;
    const x = sha1.get(a.event_id) as string;
    const y = sha1.get(b.event_id) as string;
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

/** Resolves with the algorithm of the room's version: v1 for room version 1, v2 for the rest. */
export async function resolveState(input: ResolveStateV2Input): Promise<Map<string, string>> {
  const version = getProtocolRoomVersion(input.roomVersion);
  return version?.stateResolution === 'v1' ? resolveStateV1(input) : resolveStateV2(input);
}
