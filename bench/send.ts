// Send throughput of the real homeserver on external PostgreSQL: 50 users, 10 rooms, 50
// concurrent closed-loop senders; compared with the baseline. Machine noise between runs is as
// large as the effect measured, so three rounds alternate baseline and homeserver (5 s each) and
// the median ratio is the figure.
import { printBaseline, runBaseline } from './baseline.ts';
import pg from 'pg';
import { Client, adminUrl, backendPids, closedLoop, cpuLine, cpuMeter, createDatabase, enc, fmt, latencyLine, pool, register, startHomeserver, summary } from './lib.ts';

const USERS = 50;
const ROOMS = 10;
const DURATION_MS = 5_000;
const ROUNDS = 3;
/**
 * Transactions committed in the bench database so far (pg_stat_database): per send, the number of
 * statements and commits the write path costs, far less noisy than throughput on a shared machine.
 * Statistics reach the view within about a second of a backend going idle: read after a pause.
 */
async function commits(dbName: string): Promise<number> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query('SELECT pg_stat_clear_snapshot()');
    const r = await c.query('SELECT xact_commit FROM pg_stat_database WHERE datname = $1', [dbName]);
    return Number(r.rows[0]?.xact_commit ?? 0);
  } finally {
    await c.end();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function main(): Promise<void> {
  console.log(`send: ${USERS} users, ${ROOMS} rooms (user i sends to room i % ${ROOMS}), ${USERS} concurrent senders, 1 s warm-up;`
    + ` ${ROUNDS} rounds of baseline then homeserver, ${DURATION_MS / 1000} s each`);
  const db = await createDatabase('send');
  const hs = await startHomeserver({ databaseUrl: db.url });
  const c = new Client(hs.baseUrl);
  try {
    const run = Math.random().toString(36).slice(2, 7);
    let t = performance.now();
    const users = await pool(USERS, 8, (i) => register(c, `send${run}u${i}`));
    console.log(`setup: registered ${USERS} users in ${fmt((performance.now() - t) / 1000)} s`);
    t = performance.now();
    const rooms: string[] = await pool(ROOMS, ROOMS, async (r) =>
      (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: users[r]!.token, body: { preset: 'public_chat', name: `bench ${r}` } })).room_id);
    await pool(USERS - ROOMS, 10, (i) => c.ok('POST', `/_matrix/client/v3/join/${enc(rooms[(i + ROOMS) % ROOMS]!)}`, { token: users[i + ROOMS]!.token, body: {} }));
    console.log(`setup: created ${ROOMS} rooms and joined ${USERS - ROOMS} users in ${fmt((performance.now() - t) / 1000)} s`);

    const send = async (w: number, seq: number, tag: string) => {
      const path = `/_matrix/client/v3/rooms/${enc(rooms[w % ROOMS]!)}/send/m.room.message/${tag}${seq}`;
      const r = await c.request('PUT', path, { token: users[w]!.token, body: { msgtype: 'm.text', body: `hello ${seq} from ${w}` } });
      if (r.status !== 200) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
      return true;
    };
    await closedLoop(USERS, 1_000, (w, s) => send(w, s, 'warm'));
    const rounds: Array<{ commitsPerSend: number; base: number; sends: number; ratio: number; p50: number; p99: number; serverMs: number; pgMs: number }> = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const base = await runBaseline({ concurrency: USERS, durationMs: DURATION_MS });
      printBaseline(base);
      const commits0 = await commits(db.name);
      const meter = cpuMeter(hs.pid, await backendPids(db.url));
      const r = await closedLoop(USERS, DURATION_MS, (w, s) => send(w, s, `r${round}t`));
      const cpu = meter();
      await new Promise((res) => setTimeout(res, 1_500));
      const commitsPerSend = (await commits(db.name) - commits0) / r.ok;
      const ratio = r.perSec / base.perSec;
      console.log(`round ${round}: homeserver ${fmt(r.perSec, 0)} sends/s over ${fmt(r.elapsedMs / 1000)} s, ${r.errors} errors${r.firstError ? ` (first: ${r.firstError})` : ''}; ratio ${fmt(ratio, 2)}`);
      console.log(`  ${latencyLine('latency', r.latency)}`);
      console.log(`  ${cpuLine(cpu, r.perSec)}`);
      console.log(`  database commits (statements outside a transaction count one each): ${fmt(commitsPerSend, 2)} per send`);
      rounds.push({ commitsPerSend, base: base.perSec, sends: r.perSec, ratio, p50: r.latency.p50, p99: r.latency.p99, serverMs: (cpu.server * 1000) / r.perSec, pgMs: (cpu.postgres * 1000) / r.perSec });
      if (r.errors) throw new Error(`${r.errors} sends failed`);
    }
    const ratio = median(rounds.map((x) => x.ratio));
    console.log(`ratios per round: ${rounds.map((x) => fmt(x.ratio, 2)).join(', ')}`);
    console.log(`ratio to baseline (median of ${ROUNDS}): ${fmt(ratio, 2)} (goal >= 0.5) ${ratio >= 0.5 ? 'MET' : 'NOT MET'}`);
    summary('send', {
      sendsPerSec: median(rounds.map((x) => x.sends)), p50Ms: median(rounds.map((x) => x.p50)), p99Ms: median(rounds.map((x) => x.p99)),
      serverCpuMsPerSend: median(rounds.map((x) => x.serverMs)), commitsPerSend: median(rounds.map((x) => x.commitsPerSend)), pgCpuMsPerSend: median(rounds.map((x) => x.pgMs)),
      baselinePerSec: median(rounds.map((x) => x.base)), ratios: rounds.map((x) => x.ratio), ratio, goalMet: ratio >= 0.5,
    });
  } finally {
    c.close();
    await hs.stop();
    await db.drop();
  }
}
