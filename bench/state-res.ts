// State resolution v2 on synthetic forks (no server, no database): a room of N state events split
// into two branches that conflict on C keys - a power levels change on each side, kicks racing
// profile changes, bans, and plain state keys set on both sides. Prints the time per resolution
// and what the resolver did (the onStats hook). getEvents answers from memory, so this is the
// algorithm's own cost; a store adds its fetch time per auth chain layer (fetchCalls).
import { resolveStateV2, stateKey, type ResolverEvent, type StateResStats } from '../homeserver/protocol/state-res-v2.ts';
import { fmt } from './lib.ts';

export interface SyntheticFork {
  stateSets: Array<Map<string, string>>;
  events: Map<string, ResolverEvent>;
}

/** A room with about `stateEvents` state events, forked into two branches conflicting on `conflicts` keys. */
export function syntheticFork(stateEvents: number, conflicts: number, roomVersion = '10'): SyntheticFork {
  const room = '!bench:example.org';
  const events = new Map<string, ResolverEvent>();
  let n = 0;
  const admin = '@admin:example.org';
  const mod = '@mod:example.org';
  const user = (i: number) => `@u${i}:example.org`;
  const add = (sender: string, type: string, sk: string, content: Record<string, unknown>, auth: string[], prev: string[]): string => {
    const id = `$e${n}`;
    events.set(id, { event_id: id, room_id: room, type, state_key: sk, sender, content, auth_events: auth, prev_events: prev, origin_server_ts: 1_000_000 + n, depth: n + 1 });
    n++;
    return id;
  };
  const state = new Map<string, string>();
  const set = (id: string) => {
    const ev = events.get(id) as ResolverEvent;
    state.set(stateKey(ev.type, ev.state_key as string), id);
    return id;
  };
  const v11 = Number(roomVersion) >= 11;
  const create = set(add(admin, 'm.room.create', '', v11 ? { room_version: roomVersion } : { creator: admin, room_version: roomVersion }, [], []));
  const adminJoin = set(add(admin, 'm.room.member', admin, { membership: 'join' }, [create], [create]));
  const pl0 = set(add(admin, 'm.room.power_levels', '', { users: { [admin]: 100, [mod]: 50 }, state_default: 50, kick: 50, ban: 50 }, [create, adminJoin], [adminJoin]));
  const jr = set(add(admin, 'm.room.join_rules', '', { join_rule: 'public' }, [create, pl0, adminJoin], [pl0]));
  const modJoin = set(add(mod, 'm.room.member', mod, { membership: 'join' }, [create, pl0, jr], [jr]));
  let last = modJoin;
  const members = Math.max(0, stateEvents - 5);
  const joins: string[] = [];
  for (let i = 0; i < members; i++) {
    last = set(add(user(i), 'm.room.member', user(i), { membership: 'join' }, [create, pl0, jr], [last]));
    joins.push(last);
  }
  const base = new Map(state);
  const fork = last;

  // Each branch: a chain of events from the fork point, citing its own branch's state.
  const branch = (steps: Array<(s: Map<string, string>) => [string, string, string, Record<string, unknown>]>): Map<string, string> => {
    const s = new Map(base);
    let prev = fork;
    for (const step of steps) {
      const [sender, type, sk, content] = step(s);
      const auth = [create, s.get(stateKey('m.room.power_levels', '')) as string, s.get(stateKey('m.room.member', sender)) as string];
      if (type === 'm.room.member') {
        const target = s.get(stateKey('m.room.member', sk));
        if (target && sk !== sender) auth.push(target);
        auth.push(jr);
      }
      prev = add(sender, type, sk, content, [...new Set(auth)], [prev]);
      s.set(stateKey(type, sk), prev);
    }
    return s;
  };
  const plain = Math.max(0, Math.floor(conflicts * 0.6) - 1);
  const kicks = Math.min(Math.floor(conflicts * 0.2), members);
  const bans = Math.min(Math.max(0, conflicts - 1 - plain - kicks), members - kicks);
  type Step = (s: Map<string, string>) => [string, string, string, Record<string, unknown>];
  const a: Step[] = [() => [admin, 'm.room.power_levels', '', { users: { [admin]: 100, [mod]: 50, [user(0)]: 10 }, state_default: 50, kick: 50, ban: 50 }]];
  const b: Step[] = [() => [mod, 'm.room.power_levels', '', { users: { [admin]: 100, [mod]: 50, [user(1)]: 20 }, state_default: 50, kick: 50, ban: 50 }]];
  for (let i = 0; i < plain; i++) {
    a.push(() => [admin, 'org.example.bench', `k${i}`, { side: 'a' }]);
    b.push(() => [mod, 'org.example.bench', `k${i}`, { side: 'b' }]);
  }
  for (let i = 0; i < kicks; i++) {
    a.push(() => [user(i), 'm.room.member', user(i), { membership: 'join', displayname: `renamed ${i}` }]);
    b.push(() => [mod, 'm.room.member', user(i), { membership: 'leave' }]);
  }
  for (let i = kicks; i < kicks + bans; i++) a.push(() => [admin, 'm.room.member', user(i), { membership: 'ban' }]);
  const stateSets = [branch(a), branch(b)];
  void joins;
  return { stateSets, events };
}

async function measure(stateEvents: number, conflicts: number, runs: number): Promise<void> {
  const fork = syntheticFork(stateEvents, conflicts);
  let calls = 0;
  const getEvents = async (ids: string[]) => {
    calls++;
    const out = new Map<string, ResolverEvent>();
    for (const id of ids) {
      const ev = fork.events.get(id);
      if (ev) out.set(id, ev);
    }
    return out;
  };
  const times: number[] = [];
  const cpu: number[] = [];
  let stats: StateResStats | undefined;
  let size = 0;
  for (let i = 0; i < runs; i++) {
    calls = 0;
    const t = performance.now();
    const c = process.cpuUsage();
    const r = await resolveStateV2({ roomVersion: '10', stateSets: fork.stateSets, getEvents, onStats: (s) => { stats = s; } });
    const used = process.cpuUsage(c);
    times.push(performance.now() - t);
    cpu.push((used.user + used.system) / 1000);
    size = r.size;
  }
  times.sort((x, y) => x - y);
  cpu.sort((x, y) => x - y);
  const s = stats as StateResStats;
  console.log(
    `  ${stateEvents} state events, ${s.conflictedKeys} conflicted keys: median ${fmt(times[Math.floor(runs / 2)] as number, 2)} ms, `
    + `min ${fmt(times[0] as number, 2)} ms over ${runs} runs (first ${fmt(Math.max(...times), 1)} ms incl. JIT warm-up), `
    + `median CPU ${fmt(cpu[Math.floor(runs / 2)] as number, 2)} ms; `
    + `full conflicted set ${s.fullConflictedSet}, power events ${s.powerEvents}, auth checks ${s.authChecks}, `
    + `${s.eventsFetched} events in ${calls} getEvents calls; resolved ${size} keys`,
  );
}

export async function main(): Promise<void> {
  console.log('state-res: resolveStateV2 on a two-branch synthetic fork, events served from memory');
  await measure(1_000, 100, 30);
  await measure(10_000, 1_000, 5);
  await measure(1_000, 2, 30);
}
