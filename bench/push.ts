// Push evaluation cost on the send path: sends/s into a room of 1,000 members (every member's
// default push rules evaluated on every message, ~999 notifying actions written per send) against
// sends/s into a 2-member room, same senders' concurrency. Rounds alternate the two rooms (5 s
// each) and the median ratio is the figure (goal: >= 0.5).
import { Client, backendPids, closedLoop, cpuLine, cpuMeter, createDatabase, enc, fmt, latencyLine, pool, register, startHomeserver, summary, type User } from './lib.ts';

const MEMBERS = Number(process.env.PUSH_BENCH_MEMBERS ?? 1000);
const SENDERS = 20;
const DURATION_MS = 5_000;
const ROUNDS = 3;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function main(): Promise<void> {
  console.log(`push: a ${MEMBERS}-member room vs a 2-member room, default push rules, ${SENDERS} concurrent senders,`
    + ` ${ROUNDS} rounds of ${DURATION_MS / 1000} s each per room`);
  const db = await createDatabase('push');
  const hs = await startHomeserver({ databaseUrl: db.url });
  const c = new Client(hs.baseUrl);
  try {
    const run = Math.random().toString(36).slice(2, 7);
    let t = performance.now();
    const users: User[] = await pool(MEMBERS, 16, (i) => register(c, `push${run}u${i}`));
    console.log(`setup: registered ${MEMBERS} users in ${fmt((performance.now() - t) / 1000)} s`);
    t = performance.now();
    const big: string = (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: users[0]!.token, body: { preset: 'public_chat', name: 'big' } })).room_id;
    await pool(MEMBERS - 1, 16, (i) => c.ok('POST', `/_matrix/client/v3/join/${enc(big)}`, { token: users[i + 1]!.token, body: {} }));
    const small: string = (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: users[0]!.token, body: { preset: 'public_chat', name: 'small' } })).room_id;
    await c.ok('POST', `/_matrix/client/v3/join/${enc(small)}`, { token: users[1]!.token, body: {} });
    console.log(`setup: ${MEMBERS} members joined the big room in ${fmt((performance.now() - t) / 1000)} s`);

    const send = async (roomId: string, w: number, seq: number, tag: string) => {
      const path = `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${tag}w${w}s${seq}`;
      const r = await c.request('PUT', path, { token: users[w % 2]!.token, body: { msgtype: 'm.text', body: `hello ${seq} from ${w}` } });
      if (r.status !== 200) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      return true;
    };
    // Warm-up: rules of every member compiled, the room's members loaded.
    await closedLoop(SENDERS, 1_000, (w, s) => send(big, w, s, 'warmbig'));
    await closedLoop(SENDERS, 1_000, (w, s) => send(small, w, s, 'warmsmall'));
    const rounds: Array<{ small: number; big: number; ratio: number; bigMs: number; smallMs: number }> = [];
    const pg = await backendPids(db.url);
    for (let round = 1; round <= ROUNDS; round++) {
      const figures: Record<string, { perSec: number; cpuMs: number }> = {};
      for (const [name, roomId] of [['2 members', small], [`${MEMBERS} members`, big]] as const) {
        const meter = cpuMeter(hs.pid, pg);
        const r = await closedLoop(SENDERS, DURATION_MS, (w, s) => send(roomId, w, s, `r${round}${name.length}`));
        const cpu = meter();
        console.log(`round ${round}, ${name}: ${fmt(r.perSec, 0)} sends/s, ${r.errors} errors${r.firstError ? ` (first: ${r.firstError})` : ''}`);
        console.log(`  ${latencyLine('latency', r.latency)}`);
        console.log(`  ${cpuLine(cpu, r.perSec, 'send')}`);
        if (r.errors) throw new Error(`${r.errors} sends failed`);
        figures[name] = { perSec: r.perSec, cpuMs: ((cpu.server + cpu.postgres) * 1000) / r.perSec };
      }
      const s = figures['2 members']!;
      const b = figures[`${MEMBERS} members`]!;
      rounds.push({ small: s.perSec, big: b.perSec, ratio: b.perSec / s.perSec, bigMs: b.cpuMs, smallMs: s.cpuMs });
      console.log(`round ${round}: ratio ${fmt(b.perSec / s.perSec, 2)}`);
    }
    const ratio = median(rounds.map((x) => x.ratio));
    console.log(`ratios per round: ${rounds.map((x) => fmt(x.ratio, 2)).join(', ')}`);
    console.log(`${MEMBERS}-member room / 2-member room sends/s (median of ${ROUNDS}): ${fmt(ratio, 2)} (goal >= 0.5) ${ratio >= 0.5 ? 'MET' : 'NOT MET'}`);
    summary('push', {
      members: MEMBERS, smallPerSec: median(rounds.map((x) => x.small)), bigPerSec: median(rounds.map((x) => x.big)),
      smallCpuMsPerSend: median(rounds.map((x) => x.smallMs)), bigCpuMsPerSend: median(rounds.map((x) => x.bigMs)),
      ratios: rounds.map((x) => x.ratio), ratio, goalMet: ratio >= 0.5,
    });
  } finally {
    c.close();
    await hs.stop();
    await db.drop();
  }
}
