// Workers: what several worker processes cost, and how fast a write on one reaches a sync on another.
//
// 1. CPU per send: the same open-loop traffic (sends into rooms whose members long-poll /sync) on
//    one worker (no Redis: the default) and on WORKERS=2 behind one port (Redis). CPU time of every
//    server process (the cluster primary and its workers) from /proc/<pid>/stat utime+stime, per
//    send. Goal: 2 workers ≤ 1.15 × 1 worker. Redis and PostgreSQL CPU are printed beside it.
// 2. Cross-worker latency: two workers on separate ports; every send goes to worker A, every
//    receiver long-polls worker B; from the send's 200 to B's /sync returning the event, at 200
//    sends/s. Goal: p99 ≤ 25 ms.
import fs from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import {
  Client, backendPids, createDatabase, enc, fmt, latencyLine, now, onCleanup, pool, processTree, register, sleep, spawnNode,
  stats, summary, type Proc,
} from './lib.ts';

const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const CPU_RATE = Number(process.env.BENCH_WORKERS_CPU_RATE ?? 100);
const LATENCY_RATE = Number(process.env.BENCH_WORKERS_RATE ?? 200);
const DURATION_MS = 10_000;
const ROOMS = 5;
const SENDERS = 10;
const RECEIVERS = 10;
const GOAL_CPU_RATIO = 1.15;
const GOAL_P99_MS = 25;
const FILTER = enc(JSON.stringify({ room: { timeline: { limit: 100 } } }));
const CLK_TCK = 100;

function ticks(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch { return 0; }
}

/** The server's processes: the pid and, for a cluster primary, its workers. */
const serverPids = (pid: number) => processTree(pid).filter((p) => p === pid || fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim().startsWith('node'));

function redisPid(): number | undefined {
  try {
    const info = execFileSync('redis-cli', ['-u', REDIS_URL, 'info', 'server'], { encoding: 'utf8' });
    return Number(/process_id:(\d+)/.exec(info)?.[1]) || undefined;
  } catch { return undefined; }
}

interface Load {
  sent: number;
  deliveries: number;
  missing: number;
  latency: ReturnType<typeof stats>;
  /** CPU seconds over the send window. */
  serverSecs: number;
  postgresSecs: number;
  redisSecs: number;
}

/**
 * Open-loop sends through `sendBase` at `rate`/s for DURATION_MS; receivers long-poll through
 * `syncBase`; CPU of `pids()` (sampled at start and end) over the window.
 */
async function load(sendBase: string, syncBase: string, rate: number, pids: () => number[], dbUrl: string, tag: string): Promise<Load> {
  const s = new Client(sendBase);
  const r = new Client(syncBase);
  const aborts = new AbortController();
  try {
    const run = `${tag}${Math.random().toString(36).slice(2, 6)}`;
    const senders = await pool(SENDERS, 8, (i) => register(s, `w${run}s${i}`));
    const receivers = await pool(RECEIVERS, 8, (i) => register(s, `w${run}r${i}`));
    const rooms: string[] = await pool(ROOMS, ROOMS, async (i) => (await s.ok('POST', '/_matrix/client/v3/createRoom', { token: senders[i]!.token, body: { preset: 'public_chat' } })).room_id);
    const roomsOf = (i: number) => [i % ROOMS, (i + 1) % ROOMS];
    const joins: Array<[string, string]> = [
      ...senders.slice(ROOMS).map((u, i): [string, string] => [u.token, rooms[i % ROOMS]!]),
      ...receivers.flatMap((u, i) => roomsOf(i).map((k): [string, string] => [u.token, rooms[k]!])),
    ];
    await pool(joins.length, 8, (i) => s.ok('POST', `/_matrix/client/v3/join/${enc(joins[i]![1])}`, { token: joins[i]![0], body: {} }));

    const received = receivers.map(() => new Map<string, number>());
    const receive = async (i: number) => {
      const token = receivers[i]!.token;
      let since: string = (await r.ok('GET', `/_matrix/client/v3/sync?filter=${FILTER}&timeout=0`, { token })).next_batch;
      while (!aborts.signal.aborted) {
        let res: Awaited<ReturnType<typeof r.request>>;
        try {
          res = await r.request('GET', `/_matrix/client/v3/sync?filter=${FILTER}&timeout=30000&since=${enc(since)}`, { token, signal: aborts.signal });
        } catch { if (!aborts.signal.aborted) await sleep(50); continue; }
        const t = now();
        if (res.status !== 200) { await sleep(50); continue; }
        since = res.body.next_batch;
        for (const room of Object.values(res.body.rooms?.join ?? {}) as Array<{ timeline?: { events?: Array<{ event_id: string }> } }>) {
          for (const ev of room.timeline?.events ?? []) if (!received[i]!.has(ev.event_id)) received[i]!.set(ev.event_id, t);
        }
      }
    };
    const receiving = receivers.map((_, i) => receive(i));
    await sleep(1_000);

    const sent: Array<{ id: string; room: number; ok: number }> = [];
    const inFlight = new Set<Promise<void>>();
    const procs = pids();
    const pgPids = await backendPids(dbUrl);
    const rp = redisPid();
    const s0 = procs.reduce((a, p) => a + ticks(p), 0);
    const p0 = pgPids.reduce((a, p) => a + ticks(p), 0);
    const r0 = rp ? ticks(rp) : 0;
    const t0 = now();
    for (let k = 0; now() - t0 < DURATION_MS; k++) {
      const wait = t0 + (k * 1000) / rate - now();
      if (wait >= 1) await sleep(wait);
      const who = k % SENDERS;
      const p = s.request('PUT', `/_matrix/client/v3/rooms/${enc(rooms[who % ROOMS]!)}/send/m.room.message/b${k}`, {
        token: senders[who]!.token, body: { msgtype: 'm.text', body: `probe ${k}` },
      }).then((res) => { if (res.status === 200) sent.push({ id: res.body.event_id, room: who % ROOMS, ok: now() }); }, () => {});
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
    }
    await Promise.all(inFlight);
    const pairs = sent.flatMap((e) => received.filter((_, i) => roomsOf(i).includes(e.room)).map((m) => ({ e, m })));
    for (const end = now() + 5_000; now() < end && !pairs.every(({ e, m }) => m.has(e.id)); ) await sleep(20);
    // Deliveries are part of a send's cost: measured until they are done.
    const serverSecs = (pids().reduce((a, p) => a + ticks(p), 0) - s0) / CLK_TCK;
    const postgresSecs = (pgPids.reduce((a, p) => a + ticks(p), 0) - p0) / CLK_TCK;
    const redisSecs = rp ? (ticks(rp) - r0) / CLK_TCK : Number.NaN;
    aborts.abort();
    await Promise.all(receiving);
    const lat: number[] = [];
    let missing = 0;
    for (const { e, m } of pairs) {
      const t = m.get(e.id);
      if (t === undefined) missing++;
      else lat.push(Math.max(0, t - e.ok));
    }
    return { sent: sent.length, deliveries: lat.length, missing, latency: stats(lat), serverSecs, postgresSecs, redisSecs };
  } finally {
    aborts.abort();
    s.close();
    r.close();
  }
}

function startServer(dbUrl: string, env: Record<string, string>): Promise<Proc> {
  execFileSync(process.execPath, ['homeserver/start.mjs', '--build-only'], { stdio: 'inherit' });
  const dataDir = fs.mkdtempSync(`${os.tmpdir()}/hs-bench-workers-`);
  onCleanup(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  return spawnNode('homeserver/start.mjs', { SERVER_NAME: 'localhost', LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', DATA_DIR: dataDir, DATABASE_URL: dbUrl, RATE_LIMITS: 'off', ...env }); // a load generator is a script: limits off (said by bench/lib.ts)
}

/** Until every worker of a WORKERS=n primary runs and positions travel through Redis (after its grace period). */
async function settle(p: Proc, n: number): Promise<void> {
  for (const end = now() + 30_000; serverPids(p.pid).length < n + 1 && now() < end; ) await sleep(100);
  await sleep(6_000);
}

export async function main(): Promise<void> {
  const prefix = `bench-${Math.random().toString(36).slice(2, 8)}:`;
  console.log(`workers: (1) CPU per send, 1 worker vs WORKERS=2, ${CPU_RATE} sends/s for ${DURATION_MS / 1000} s from ${SENDERS} senders into ${ROOMS} rooms, `
    + `${RECEIVERS} receivers long-polling (each in 2 rooms); (2) cross-worker send → sync at ${LATENCY_RATE} sends/s (sends on A, syncs on B). Redis: ${REDIS_URL}`);
  const figures: Record<string, unknown> = {};

  // (1) CPU per send.
  const perSend: Record<string, Load> = {};
  for (const [name, env, n] of [
    ['1 worker', {}, 1],
    ['1 worker + Redis', { REDIS_URL, REDIS_PREFIX: `${prefix}a:` }, 1],
    ['WORKERS=2', { REDIS_URL, REDIS_PREFIX: `${prefix}b:`, WORKERS: '2' }, 2],
  ] as Array<[string, Record<string, string>, number]>) {
    const db = await createDatabase('workers');
    const hs = await startServer(db.url, env);
    try {
      if (env.REDIS_URL) await settle(hs, n);
      const l = await load(hs.baseUrl, hs.baseUrl, CPU_RATE, () => serverPids(hs.pid), db.url, name === '1 worker' ? 'a' : name === 'WORKERS=2' ? 'c' : 'b');
      perSend[name] = l;
      const ms = (secs: number) => fmt((secs * 1000) / Math.max(1, l.sent), 3);
      console.log(`${name.padEnd(17)} sends ${l.sent}, deliveries ${l.deliveries} (missing ${l.missing}); CPU per send: server processes ${ms(l.serverSecs)} ms, `
        + `postgres ${ms(l.postgresSecs)} ms, redis-server ${ms(l.redisSecs)} ms (shared Redis: others' load adds); ${latencyLine('send → sync', l.latency)}`);
    } finally {
      await hs.stop();
      await db.drop();
    }
  }
  const one = perSend['1 worker']!;
  const two = perSend['WORKERS=2']!;
  const ratio = (two.serverSecs / two.sent) / (one.serverSecs / one.sent);
  console.log(`CPU per send, WORKERS=2 / 1 worker: ${fmt(ratio, 2)}× (goal ≤ ${GOAL_CPU_RATIO}×: ${ratio <= GOAL_CPU_RATIO ? 'MET' : 'NOT MET'}); `
    + `with PostgreSQL: ${fmt(((two.serverSecs + two.postgresSecs) / two.sent) / ((one.serverSecs + one.postgresSecs) / one.sent), 2)}×`);
  figures.cpuRatio = ratio;
  figures.cpuPerSendMs = Object.fromEntries(Object.entries(perSend).map(([k, l]) => [k, (l.serverSecs * 1000) / Math.max(1, l.sent)]));

  // (2) Cross-worker latency: separate ports, sends on A, syncs on B.
  const db = await createDatabase('workers');
  const a = await startServer(db.url, { REDIS_URL, REDIS_PREFIX: `${prefix}x:` });
  const b = await startServer(db.url, { REDIS_URL, REDIS_PREFIX: `${prefix}x:` });
  try {
    await sleep(6_000); // Redis' fresh state is trusted after its grace period
    const l = await load(a.baseUrl, b.baseUrl, LATENCY_RATE, () => [a.pid, b.pid], db.url, 'x');
    console.log(`cross-worker: sends ${l.sent} on A (${fmt(l.sent / (DURATION_MS / 1000), 0)}/s), deliveries on B ${l.deliveries}, missing ${l.missing}; ${latencyLine('send 200 on A → sync on B', l.latency)}`);
    console.log(`goal p99 ≤ ${GOAL_P99_MS} ms: ${l.latency.p99 <= GOAL_P99_MS && l.missing === 0 ? 'MET' : 'NOT MET'}`);
    figures.crossWorkerP50Ms = l.latency.p50;
    figures.crossWorkerP99Ms = l.latency.p99;
    figures.crossWorkerMissing = l.missing;
  } finally {
    await b.stop();
    await a.stop();
    await db.drop();
  }
  summary('workers', figures);
}
