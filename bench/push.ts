// Push evaluation cost on the send path: sends/s into a room of 1,000 members (every member's
// default push rules evaluated on every message, ~999 notifying actions written per send) against
// sends/s into a 2-member room, same senders' concurrency. Rounds alternate the two rooms (5 s
// each) and the median ratio is the figure (goal: >= 0.5).
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
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
    // Accounts straight in the database (registering 1,000 over HTTP spends a minute hashing passwords).
    const users: User[] = [await register(c, `push${run}u0`), ...(await seedUsers(db.url, `push${run}s`, MEMBERS - 1))];
    console.log(`setup: ${MEMBERS} users in ${fmt((performance.now() - t) / 1000)} s`);
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

/** Accounts with a device and an access token each, written in four statements; default push rules. */
async function seedUsers(url: string, prefix: string, n: number): Promise<User[]> {
  const users = Array.from({ length: n }, (_, i) => ({ userId: `@${prefix}${i}:localhost`, localpart: `${prefix}${i}`, token: `syt_${randomBytes(24).toString('base64url')}` }));
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const now = Date.now();
    const ids = users.map((u) => u.userId);
    await db.query('INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, created_ts) SELECT u, l, NULL, FALSE, FALSE, $3 FROM unnest($1::text[], $2::text[]) AS x(u, l)', [ids, users.map((u) => u.localpart), now]);
    await db.query('INSERT INTO profiles (user_id, displayname) SELECT u, l FROM unnest($1::text[], $2::text[]) AS x(u, l)', [ids, users.map((u) => u.localpart)]);
    await db.query("INSERT INTO devices (user_id, device_id, created_ts) SELECT u, 'SEEDED', $2 FROM unnest($1::text[]) AS x(u)", [ids, now]);
    await db.query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) SELECT h, u, 'SEEDED', $3 FROM unnest($1::bytea[], $2::text[]) AS x(h, u)",
      [users.map((u) => createHash('sha256').update(u.token, 'utf8').digest()), ids, now]);
  } finally {
    await db.end();
  }
  return users.map((u) => ({ userId: u.userId, token: u.token }));
}
