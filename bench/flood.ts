// npm run bench -- flood
// 1. Each attack of bench/attacks.ts against a server with its default limits (RATE_LIMITS on),
//    with five normal users chatting meanwhile from addresses of their own: what the attacker got,
//    the normal users' send → sync round trip (p50/p99; the goal is p99 < 200 ms), the server's memory.
// 2. The rate limiter's cost on the send path: the send benchmark's closed loop (50 users, 10 rooms)
//    with RATE_LIMITS=off, with limits on in process, and with limits on in Redis — set high enough
//    never to refuse, so only their bookkeeping is measured. Rounds alternate the three.
// On a machine shared with other work every figure here is noise; compare within one run.
import { createClient } from 'redis';
import { randomBytes } from 'node:crypto';
import { ATTACKS, closeAttackAgents, normalUsers, percentile, runAttack, type Attack } from './attacks.ts';
import { Client, closedLoop, createDatabase, enc, fmt, latencyLine, pool, register, startHomeserver, summary } from './lib.ts';

const ATTACK_MS = Number(process.env.BENCH_FLOOD_ATTACK_MS ?? 5_000);
const USERS = 50;
const ROOMS = 10;
const SEND_MS = 5_000;
const ROUNDS = 2;
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

const idle: Attack = { name: 'no attack (the normal users alone)', run: async (_b, _v, o) => { await new Promise((r) => setTimeout(r, Math.max(0, o.until - Date.now()))); return {}; } };

async function attacks(): Promise<Record<string, unknown>> {
  console.log(`\n-- attacks: default limits (RATE_LIMITS=on), each attack at most ${ATTACK_MS / 1000} s; five normal users send in turn (about one message a second each) and time send → /sync`);
  const db = await createDatabase('flood');
  const hs = await startHomeserver({ databaseUrl: db.url, env: { RATE_LIMITS: 'on' } });
  const figures: Record<string, unknown> = {};
  try {
    const victims = await normalUsers(hs.baseUrl);
    for (const attack of [idle, ...ATTACKS]) {
      const concurrency = attack.name.includes('/sync') ? 32 : 8;
      const run = await runAttack(hs.baseUrl, victims, attack, { requests: 20_000, durationMs: ATTACK_MS, concurrency, pid: hs.pid });
      const p50 = percentile(run.roundTrips, 0.5);
      const p99 = percentile(run.roundTrips, 0.99);
      console.log(`${attack.name}:`);
      if (attack !== idle) console.log(`  attacker (${concurrency} at a time) got ${Object.entries(run.answers).map(([k, v]) => `${v} × ${k}`).join(', ')}`);
      console.log(`  normal users' send → sync: p50 ${fmt(p50, 1)} ms, p99 ${fmt(p99, 1)} ms (n=${run.roundTrips.length})${p99 < 200 ? '' : ' (goal p99 < 200 ms NOT MET)'}${run.failures.length ? `; ${run.failures.length} failures, first: ${run.failures[0]}` : ''}`);
      console.log(`  server RSS ${fmt(run.rssBeforeMb!, 0)} → ${fmt(run.rssAfterMb!, 0)} MB`);
      figures[attack.name] = { p50Ms: p50, p99Ms: p99, n: run.roundTrips.length, failures: run.failures.length, answers: run.answers };
    }
  } finally {
    closeAttackAgents();
    await hs.stop();
    await db.drop();
  }
  return figures;
}

async function redisAnswers(): Promise<boolean> {
  const c = createClient({ url: REDIS_URL, socket: { connectTimeout: 1_000, reconnectStrategy: false } });
  c.on('error', () => {});
  try { await c.connect(); await c.ping(); return true; } catch { return false; } finally { c.destroy(); }
}

/** Limits that never refuse this benchmark (every RC_* and ROOMS_PER_HOUR at their maximum). */
const HIGH_LIMITS: Record<string, string> = Object.fromEntries([
  'RC_MESSAGE', 'RC_REGISTRATION', 'RC_LOGIN_ADDRESS', 'RC_LOGIN_ACCOUNT', 'RC_LOGIN_FAILED_ATTEMPTS', 'RC_JOINS_LOCAL', 'RC_JOINS_REMOTE',
  'RC_INVITES_PER_ROOM', 'RC_INVITES_PER_USER', 'RC_INVITES_PER_ISSUER', 'RC_SYNC',
].flatMap((p) => [[`${p}_PER_SECOND`, '1000000'], [`${p}_BURST`, '1000000']]).concat([['ROOMS_PER_HOUR', '1000000'], ['RATE_LIMITS', 'on']]));

async function limiterCost(): Promise<Record<string, unknown>> {
  const withRedis = await redisAnswers();
  const variants: Array<{ name: string; env: Record<string, string> }> = [
    { name: 'RATE_LIMITS=off', env: { RATE_LIMITS: 'off' } },
    { name: 'limits on, in process', env: HIGH_LIMITS },
    ...(withRedis ? [{ name: 'limits on, in Redis', env: { ...HIGH_LIMITS, REDIS_URL, REDIS_PREFIX: `bench-flood-${randomBytes(4).toString('hex')}:` } }] : []),
  ];
  console.log(`\n-- the limiter's cost on the send path: ${USERS} users, ${ROOMS} rooms, ${USERS} concurrent senders, ${SEND_MS / 1000} s per variant, ${ROUNDS} rounds of: ${variants.map((v) => v.name).join(' / ')}`
    + `${withRedis ? '' : ` (no Redis at ${REDIS_URL}: the Redis variant is skipped)`}; limits high enough never to refuse`);
  const db = await createDatabase('flood_send');
  let users: Array<{ userId: string; token: string }> = [];
  let rooms: string[] = [];
  const perSec: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const v of variants) {
      // One server at a time on one database (without Redis, two processes must not share it).
      const hs = await startHomeserver({ databaseUrl: db.url, env: { AUTO_JOIN_ROOMS: '', ...v.env } });
      const c = new Client(hs.baseUrl);
      try {
        if (!users.length) {
          const run = randomBytes(3).toString('hex');
          users = await pool(USERS, 8, (i) => register(c, `flood${run}u${i}`));
          rooms = await pool(ROOMS, ROOMS, async (r) => (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: users[r]!.token, body: { preset: 'public_chat' } })).room_id);
          await pool(USERS - ROOMS, 10, (i) => c.ok('POST', `/_matrix/client/v3/join/${enc(rooms[(i + ROOMS) % ROOMS]!)}`, { token: users[i + ROOMS]!.token, body: {} }));
        }
        const send = async (w: number, seq: number, tag: string) => {
          const r = await c.request('PUT', `/_matrix/client/v3/rooms/${enc(rooms[w % ROOMS]!)}/send/m.room.message/${tag}${seq}`, { token: users[w]!.token, body: { msgtype: 'm.text', body: `hello ${seq}` } });
          if (r.status !== 200) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
          return true;
        };
        const tag = `r${round}${v.name.replace(/\W/g, '')}`;
        await closedLoop(USERS, 1_000, (w, s) => send(w, s, `${tag}warm`));
        const r = await closedLoop(USERS, SEND_MS, (w, s) => send(w, s, tag));
        if (r.errors) throw new Error(`${v.name}: ${r.errors} sends failed (first: ${r.firstError})`);
        perSec[v.name]!.push(r.perSec);
        console.log(`round ${round}, ${v.name}: ${fmt(r.perSec, 0)} sends/s; ${latencyLine('latency', r.latency)}`);
      } finally {
        c.close();
        await hs.stop();
      }
    }
  }
  await db.drop();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const off = median(perSec['RATE_LIMITS=off']!);
  const out: Record<string, unknown> = { offPerSec: off };
  for (const v of variants.slice(1)) {
    const on = median(perSec[v.name]!);
    console.log(`${v.name}: ${fmt(on, 0)} sends/s, ${fmt(on / off, 2)} of RATE_LIMITS=off`);
    out[v.name] = { perSec: on, ofOff: on / off };
  }
  return out;
}

export async function main(): Promise<void> {
  const attackFigures = await attacks();
  const cost = await limiterCost();
  summary('flood', { attacks: attackFigures, limiterCost: cost });
}
