// Builds small room DAGs for the state resolution tests: events named by node ID, `edges` chains
// (child first) giving prev_events, the state before each event resolved from its prev events'
// states with resolveState (v1 for room version 1, v2 otherwise), auth_events picked from that
// state by the auth events selection algorithm, depth one more than the deepest prev event, and
// origin_server_ts increasing in processing order (oldest first, ties by node ID).
import { authEventSelection } from '../../homeserver/protocol/auth.ts';
import { getProtocolRoomVersion } from '../../homeserver/protocol/room-versions.ts';
import { resolveState } from '../../homeserver/protocol/state-res-v1.ts';
import { stateKey, type ResolverEvent, type StateResStats } from '../../homeserver/protocol/state-res-v2.ts';

export const ALICE = '@alice:example.com';
export const BOB = '@bob:example.com';
export const CHARLIE = '@charlie:example.com';
export const EVELYN = '@evelyn:example.com';
export const ZARA = '@zara:example.com';

export interface NodeSpec {
  id: string;
  sender: string;
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
  /** Mark the event rejected (as if it had failed auth against its auth events). */
  rejected?: boolean;
  /** Fixed origin_server_ts instead of the processing order's. */
  ts?: number;
  /** auth_events as node IDs, instead of the selection from the state before the event. */
  auth?: string[];
}

export const join = { membership: 'join' };
export const ban = { membership: 'ban' };

/** The room every scenario starts from, up to the message START (Synapse's test_v2 layout). */
export function initialEvents(version: string): NodeSpec[] {
  const v12 = version === '12';
  return [
    { id: 'CREATE', sender: ALICE, type: 'm.room.create', state_key: '', content: v12 ? { room_version: '12' } : { creator: ALICE } },
    { id: 'IMA', sender: ALICE, type: 'm.room.member', state_key: ALICE, content: join },
    // v12: the creator has infinite power and may not be listed.
    { id: 'IPOWER', sender: ALICE, type: 'm.room.power_levels', state_key: '', content: { users: v12 ? {} : { [ALICE]: 100 } } },
    { id: 'IJR', sender: ALICE, type: 'm.room.join_rules', state_key: '', content: { join_rule: 'public' } },
    { id: 'IMB', sender: BOB, type: 'm.room.member', state_key: BOB, content: join },
    { id: 'IMC', sender: CHARLIE, type: 'm.room.member', state_key: CHARLIE, content: join },
    { id: 'IMZ', sender: ZARA, type: 'm.room.member', state_key: ZARA, content: join },
    { id: 'START', sender: ZARA, type: 'm.room.message', content: {} },
    { id: 'END', sender: ZARA, type: 'm.room.message', content: {} },
  ];
}

export const INITIAL_EDGES = ['START', 'IMZ', 'IMC', 'IMB', 'IJR', 'IPOWER', 'IMA', 'CREATE'];

export const eventId = (node: string): string => `$${node}:example.com`;
/** v12 room IDs are the create event's ID with `!`; the older versions use the same string. */
export const ROOM_ID = '!CREATE:example.com';

export interface Dag {
  events: Map<string, ResolverEvent>;
  /** State after each node. */
  stateAfter: Map<string, Map<string, string>>;
  getEvents: (ids: string[]) => Promise<Map<string, ResolverEvent>>;
  /** getEvents calls made so far and the ids they asked for. */
  calls: string[][];
  stats: StateResStats[];
}

export function makeGetEvents(events: Map<string, ResolverEvent>, calls: string[][]): (ids: string[]) => Promise<Map<string, ResolverEvent>> {
  return async (ids) => {
    calls.push([...ids]);
    const out = new Map<string, ResolverEvent>();
    for (const id of ids) {
      const ev = events.get(id);
      if (ev) out.set(id, ev);
    }
    return out;
  };
}

/** Builds the DAG of the initial events plus `nodes`, resolving every fork with `version`'s rules. */
export async function buildDag(version: string, nodes: NodeSpec[], edges: string[][], initial = initialEvents(version)): Promise<Dag> {
  const rv = getProtocolRoomVersion(version);
  if (!rv) throw new Error(`unknown version ${version}`);
  const specs = new Map<string, NodeSpec>();
  const prevs = new Map<string, Set<string>>();
  for (const n of [...initial, ...nodes]) {
    specs.set(n.id, n);
    prevs.set(n.id, new Set());
  }
  const addChain = (chain: string[]) => {
    for (let i = 0; i + 1 < chain.length; i++) {
      const set = prevs.get(chain[i]);
      if (!set || !specs.has(chain[i + 1])) throw new Error(`unknown node in edge ${chain[i]} -> ${chain[i + 1]}`);
      set.add(chain[i + 1]);
    }
  };
  if (initial.length > 0) addChain(INITIAL_EDGES.filter((id) => specs.has(id)));
  for (const chain of edges) addChain(chain);

  // Oldest first; among the ready nodes the smallest node ID.
  const order: string[] = [];
  const done = new Set<string>();
  while (order.length < specs.size) {
    const ready = [...specs.keys()].filter((id) => !done.has(id) && [...(prevs.get(id) as Set<string>)].every((p) => done.has(p))).sort();
    if (ready.length === 0) throw new Error('cycle in test DAG');
    order.push(ready[0]);
    done.add(ready[0]);
  }

  const events = new Map<string, ResolverEvent>();
  const calls: string[][] = [];
  const stats: StateResStats[] = [];
  const getEvents = makeGetEvents(events, calls);
  const stateAfter = new Map<string, Map<string, string>>();
  let ts = 0;
  for (const node of order) {
    const spec = specs.get(node) as NodeSpec;
    const prevNodes = [...(prevs.get(node) as Set<string>)];
    let before: Map<string, string>;
    if (prevNodes.length === 0) before = new Map();
    else if (prevNodes.length === 1) before = new Map(stateAfter.get(prevNodes[0]));
    else {
      before = await resolveState({
        roomVersion: version,
        stateSets: prevNodes.map((p) => stateAfter.get(p) as Map<string, string>),
        getEvents,
        onStats: (s) => stats.push(s),
      });
    }
    const authEvents: string[] = spec.auth ? spec.auth.map(eventId) : [];
    for (const [t, k] of spec.auth ? [] : authEventSelection(spec, rv)) {
      const id = before.get(stateKey(t, k));
      if (id !== undefined) authEvents.push(id);
    }
    const ev: ResolverEvent = {
      event_id: eventId(node),
      room_id: ROOM_ID,
      type: spec.type,
      sender: spec.sender,
      origin_server_ts: spec.ts ?? ts,
      content: spec.content,
      auth_events: authEvents,
      prev_events: prevNodes.map(eventId),
      depth: 1 + Math.max(0, ...prevNodes.map((p) => (events.get(eventId(p)) as ResolverEvent).depth)),
    };
    ts++;
    if (spec.state_key !== undefined) ev.state_key = spec.state_key;
    if (spec.rejected) ev.rejected = true;
    events.set(ev.event_id, ev);
    const after = new Map(before);
    if (spec.state_key !== undefined && !spec.rejected) after.set(stateKey(spec.type, spec.state_key), ev.event_id);
    stateAfter.set(node, after);
  }
  return { events, stateAfter, getEvents, calls, stats };
}

/** The state at END, limited to the keys that changed since START plus those expected. */
export function changedSinceStart(dag: Dag, expectedNodes: string[]): { actual: Record<string, string>; expected: Record<string, string> } {
  const expected: Record<string, string> = {};
  for (const n of expectedNodes) {
    const ev = dag.events.get(eventId(n));
    if (!ev || ev.state_key === undefined) throw new Error(`no state event ${n}`);
    expected[stateKey(ev.type, ev.state_key)] = n;
  }
  const start = dag.stateAfter.get('START') as Map<string, string>;
  const actual: Record<string, string> = {};
  for (const [k, id] of dag.stateAfter.get('END') as Map<string, string>) {
    if (k in expected || start.get(k) !== id) actual[k] = id.slice(1, id.indexOf(':'));
  }
  return { actual, expected };
}
