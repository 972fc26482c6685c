// Federation between two of our servers on loopback over TLS (a CA made here): events per second
// from A to B (a burst sent on A, until B's /sync has them all), the latency from a send's 200 on
// A to B's long-poll /sync returning it at a steady 50 sends/s, and the time for a remote join (B)
// to a room of A with 1,000 events and 100 members.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, createDatabase, enc, fmt, freePort, latencyLine, now, onCleanup, pool, register, sleep, startHomeserver, stats, summary } from './lib.ts';
import { makeCertificates } from '../tests/helpers/federation-servers.ts';

const BURST = Number(process.env.BENCH_FED_BURST ?? 1000);
const RATE = 50;
const DURATION_MS = 10_000;
const JOIN_EVENTS = 1000;
const JOIN_MEMBERS = 100;
const GOAL_P99_MS = 100;

export async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fed-bench-'));
  onCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const { cert, key } = makeCertificates(tmp);
  const [fa, fb] = [await freePort(), await freePort()];
  const common = { FEDERATION_CA_FILE: path.join(tmp, 'ca.crt'), TLS_CERT: cert, TLS_KEY: key, FEDERATION_IP_RANGE_ALLOW: '127.0.0.0/8,::1/128', REGISTRATION: 'open' };
  const [dba, dbb] = [await createDatabase('federation-a'), await createDatabase('federation-b')];
  const [A, B] = await Promise.all([
    startHomeserver({ databaseUrl: dba.url, env: { ...common, SERVER_NAME: `localhost:${fa}`, FEDERATION_PORT: String(fa) } }),
    startHomeserver({ databaseUrl: dbb.url, env: { ...common, SERVER_NAME: `localhost:${fb}`, FEDERATION_PORT: String(fb) } }),
  ]);
  const [ca, cb] = [new Client(A.baseUrl), new Client(B.baseUrl)];
  const run = Math.random().toString(36).slice(2, 7);
  const sender = await register(ca, `fs${run}`);
  const receiver = await register(cb, `fr${run}`);
  const room = (await ca.ok('POST', '/_matrix/client/v3/createRoom', { token: sender.token, body: { preset: 'public_chat' } })).room_id as string;
  await cb.ok('POST', `/_matrix/client/v3/join/${enc(room)}?via=${enc(`localhost:${fa}`)}`, { token: receiver.token, body: {} });

  // B's receiver: when each event id first comes back from its /sync.
  const seen = new Map<string, number>();
  const aborts = new AbortController();
  const filter = enc(JSON.stringify({ room: { timeline: { limit: 200 } } }));
  let since: string = (await cb.ok('GET', '/_matrix/client/v3/sync?timeout=0', { token: receiver.token })).next_batch;
  const loop = (async () => {
    while (!aborts.signal.aborted) {
      try {
        const r = await cb.request('GET', `/_matrix/client/v3/sync?filter=${filter}&timeout=30000&since=${enc(since)}`, { token: receiver.token, signal: aborts.signal });
        const t = now();
        if (r.status !== 200) { await sleep(100); continue; }
        since = r.body.next_batch;
        for (const e of r.body.rooms?.join?.[room]?.timeline?.events ?? []) if (!seen.has(e.event_id)) seen.set(e.event_id, t);
      } catch { if (!aborts.signal.aborted) await sleep(100); }
    }
  })();
  const send = (i: string) => ca.ok('PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/${i}`, { token: sender.token, body: { msgtype: 'm.text', body: `bench ${i}` } });
  const waitAll = async (ids: string[], ms: number) => {
    const end = Date.now() + ms;
    while (ids.some((id) => !seen.has(id)) && Date.now() < end) await sleep(20);
    return ids.filter((id) => seen.has(id)).length;
  };

  // 1. Throughput: a burst on A, until B has every event.
  const t0 = now();
  const burst = await pool(BURST, 16, async (i) => (await send(`b${i}`)).event_id as string);
  const got = await waitAll(burst, 120_000);
  const burstMs = now() - t0;
  const perSec = (got / burstMs) * 1000;
  console.log(`throughput: ${got}/${BURST} events from A on B in ${fmt(burstMs / 1000, 2)} s: ${fmt(perSec)} events/s`);

  // 2. Latency at a steady rate: send's 200 on A → B's /sync.
  const sentAt = new Map<string, number>();
  const sends: Array<Promise<void>> = [];
  const start = now();
  for (let i = 0; i < (RATE * DURATION_MS) / 1000; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    sends.push(send(`l${i}`).then((r) => { sentAt.set(r.event_id, now()); }));
  }
  await Promise.all(sends);
  await waitAll([...sentAt.keys()], 30_000);
  const lat = [...sentAt].filter(([id]) => seen.has(id)).map(([id, t]) => Math.max(0, seen.get(id)! - t));
  const l = stats(lat);
  console.log(latencyLine(`latency A send → B /sync at ${RATE}/s`, l) + ` (goal p99 ≤ ${GOAL_P99_MS} ms)`);
  aborts.abort();
  await loop;

  // 3. A remote join to a room of 1,000 events and 100 members.
  const big = (await ca.ok('POST', '/_matrix/client/v3/createRoom', { token: sender.token, body: { preset: 'public_chat' } })).room_id as string;
  const members = await pool(JOIN_MEMBERS - 1, 8, (i) => register(ca, `fm${run}${i}`));
  await pool(members.length, 8, (i) => ca.ok('POST', `/_matrix/client/v3/join/${enc(big)}`, { token: members[i]!.token, body: {} }));
  await pool(JOIN_EVENTS - members.length - 6, 16, (i) => ca.ok('PUT', `/_matrix/client/v3/rooms/${enc(big)}/send/m.room.message/j${i}`, { token: members[i % members.length]!.token, body: { msgtype: 'm.text', body: `history ${i}` } }));
  const joiner = await register(cb, `fj${run}`);
  const j0 = now();
  await cb.ok('POST', `/_matrix/client/v3/join/${enc(big)}?via=${enc(`localhost:${fa}`)}`, { token: joiner.token, body: {} });
  const joinMs = now() - j0;
  console.log(`remote join to a room of ${JOIN_EVENTS} events and ${JOIN_MEMBERS} members: ${fmt(joinMs)} ms`);

  ca.close(); cb.close();
  await Promise.all([A.stop(), B.stop()]);
  await Promise.all([dba.drop(), dbb.drop()]);
  summary('federation', { eventsPerSec: perSec, latencyP50Ms: l.p50, latencyP99Ms: l.p99, latencyMaxMs: l.max, received: `${lat.length}/${sentAt.size}`, remoteJoinMs: joinMs });
}
