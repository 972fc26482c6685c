// Initial /sync: 200 members of a 200-member room with 1,000 recent messages from 100 senders each
// do an initial /sync, with Element's lazy-loading filter and without a filter: total time and p99.
import pg from 'pg';
import { seedUsers } from '../tests/helpers/database.ts';
import {
  Client, backendPids, cpuLine, cpuMeter, createDatabase, enc, fmt, latencyLine, now, pool, startHomeserver, stats, summary,
} from './lib.ts';

const MEMBERS = Number(process.env.BENCH_INITIAL_MEMBERS ?? 200);
const MESSAGES = Number(process.env.BENCH_INITIAL_MESSAGES ?? 1000);
const SENDERS = Number(process.env.BENCH_INITIAL_SENDERS ?? 100);
/** Initial syncs in flight at once. */
const CONCURRENCY = Number(process.env.BENCH_INITIAL_CONCURRENCY ?? 10);
/** Synapse 1.67 on this machine, same data (issue 6): 17 s for the 200 initial syncs. */
const SYNAPSE_TOTAL_S = 17;
const GOAL_TOTAL_S = SYNAPSE_TOTAL_S / 2;

const VARIANTS: Array<{ name: string; filter?: string }> = [
  // What Element sends: lazy-loaded members, a timeline of 20.
  { name: 'lazy_load_members (Element)', filter: JSON.stringify({ room: { state: { lazy_load_members: true }, timeline: { limit: 20 } } }) },
  { name: 'no filter', filter: undefined },
];

/** Transactions run in the database so far (pg_stat_database); this read counts one. */
async function transactions(url: string): Promise<number> {
  const q = new pg.Client({ connectionString: url });
  await q.connect();
  try {
    return Number((await q.query('SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()')).rows[0].n);
  } finally { await q.end(); }
}

export async function main(): Promise<void> {
  console.log(`initial-sync: ${MEMBERS} members of one room, ${MESSAGES} messages from ${SENDERS} senders; each member does an initial /sync `
    + `(${CONCURRENCY} at a time), once with Element's lazy-loading filter and once without; the server restarts before each pass (cold caches)`);
  const db = await createDatabase('initial-sync');
  const env = { AUTO_JOIN_ROOMS: '', PRESENCE: 'off' };
  let hs = await startHomeserver({ databaseUrl: db.url, env });
  let c = new Client(hs.baseUrl);
  try {
    const run = Math.random().toString(36).slice(2, 7);
    const q = new pg.Client({ connectionString: db.url });
    await q.connect();
    const users = await seedUsers(q, 'localhost', `is${run}u`, MEMBERS);
    await q.end();
    const token = (i: number) => users[i]!.accessToken;
    let t = now();
    const roomId: string = (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: token(0), body: { preset: 'public_chat', name: 'initial sync' } })).room_id;
    await pool(MEMBERS - 1, 16, (i) => c.ok('POST', `/_matrix/client/v3/join/${enc(roomId)}`, { token: token(i + 1), body: {} }));
    await pool(MESSAGES, 16, (j) => c.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/m${j}`, {
      token: token(j % SENDERS), body: { msgtype: 'm.text', body: `message ${j} ${'lorem ipsum '.repeat(5)}` },
    }));
    console.log(`  populated in ${fmt((now() - t) / 1000)} s: ${MEMBERS - 1} joins, ${MESSAGES} messages`);

    const figures: Record<string, unknown> = {};
    for (const [vi, v] of VARIANTS.entries()) {
      // Cold: a fresh server process on the same database.
      c.close();
      await hs.stop();
      hs = await startHomeserver({ databaseUrl: db.url, env });
      c = new Client(hs.baseUrl, CONCURRENCY);
      const before = await transactions(db.url);
      const meter = cpuMeter(hs.pid, await backendPids(db.url));
      const lat: number[] = [];
      let bytes = 0;
      let stateEvents = 0;
      let timelineEvents = 0;
      let errors = 0;
      t = now();
      await pool(MEMBERS, CONCURRENCY, async (i) => {
        const r = await c.request('GET', `/_matrix/client/v3/sync?timeout=0${v.filter ? `&filter=${enc(v.filter)}` : ''}`, { token: token(i) });
        lat.push(r.ms);
        if (r.status !== 200) { errors++; return; }
        bytes += JSON.stringify(r.body).length;
        const room = r.body.rooms?.join?.[roomId];
        if (!room) { errors++; return; }
        stateEvents += room.state.events.length;
        timelineEvents += room.timeline.events.length;
      });
      const total = (now() - t) / 1000;
      const cpu = meter();
      const s = stats(lat);
      await new Promise((r) => setTimeout(r, 1000)); // PostgreSQL publishes a backend's counters once it idles
      const perSync = ((await transactions(db.url)) - before - 1) / MEMBERS;
      console.log(`\n${v.name}: ${MEMBERS} initial syncs in ${fmt(total, 2)} s total (${errors} errors); per sync ${fmt(stateEvents / MEMBERS, 0)} state + ${fmt(timelineEvents / MEMBERS, 0)} timeline events, ${fmt(bytes / MEMBERS / 1024)} kB`);
      console.log(latencyLine('  latency per initial sync', s));
      console.log(`  database statements per initial sync (transactions in pg_stat_database, authentication included): ${fmt(perSync, 1)}`);
      console.log('  ' + cpuLine(cpu, MEMBERS / total, 'initial sync'));
      console.log(`  goal (twice as fast as Synapse's ${SYNAPSE_TOTAL_S} s: <= ${GOAL_TOTAL_S} s total): ${total <= GOAL_TOTAL_S && !errors ? 'MET' : 'NOT MET'}`);
      const key = vi === 0 ? 'lazy' : 'full';
      Object.assign(figures, { [`${key}TotalS`]: total, [`${key}P50Ms`]: s.p50, [`${key}P99Ms`]: s.p99, [`${key}Errors`]: errors, [`${key}StatementsPerSync`]: perSync, [`${key}ServerMsPerSync`]: (cpu.server * 1000 * total) / MEMBERS });
    }
    summary('initial-sync', { members: MEMBERS, messages: MESSAGES, senders: SENDERS, concurrency: CONCURRENCY, ...figures });
  } finally {
    c.close();
    await hs.stop();
    await db.drop();
  }
}
