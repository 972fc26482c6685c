// Delivery latency: from a send's 200 to another client's long-poll /sync returning the event, at a
// steady (open-loop) send rate over several rooms, each receiver in two of them.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import {
  Client, backendPids, cpuLine, cpuMeter, createDatabase, enc, fmt, latencyLine, now, pool, register, sleep,
  startHomeserver, stats, summary,
} from './lib.ts';

const ROOMS = 5;
const SENDERS = 10; // sender s sends to room s % ROOMS
const RECEIVERS = 5;
/** Receiver r is in rooms r and r+1 (mod ROOMS): commits in the rooms it is not in race with those it is in. */
const roomsOf = (r: number) => [r % ROOMS, (r + 1) % ROOMS];
/** Sends per second, scheduled at fixed times whatever the responses do (BENCH_SYNC_RATE overrides). */
const RATE = Number(process.env.BENCH_SYNC_RATE ?? 200);
const DURATION_MS = 10_000;
const DRAIN_MS = 5_000;
const GOAL_P99_MS = 20;
const FILTER = enc(JSON.stringify({ room: { timeline: { limit: 100 } } }));

export async function main(): Promise<void> {
  console.log(`sync-latency: ${RATE} sends/s for ${DURATION_MS / 1000} s from ${SENDERS} senders over ${ROOMS} rooms; `
    + `${RECEIVERS} receivers, each in 2 of the rooms, long-polling /sync (timeout=30000, since=previous next_batch)`);
  const db = await createDatabase('sync-latency');
  const hs = await startHomeserver({ databaseUrl: db.url });
  const c = new Client(hs.baseUrl);
  const aborts = new AbortController();
  try {
    const run = Math.random().toString(36).slice(2, 7);
    const senders = await pool(SENDERS, 8, (i) => register(c, `sl${run}s${i}`));
    const receivers = await pool(RECEIVERS, 8, (i) => register(c, `sl${run}r${i}`));
    const rooms: string[] = await pool(ROOMS, ROOMS, async (r) =>
      (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: senders[r]!.token, body: { preset: 'public_chat', name: `latency ${r}` } })).room_id);
    const joins: Array<[string, string]> = [
      ...senders.slice(ROOMS).map((u, i): [string, string] => [u.token, rooms[(i + ROOMS) % ROOMS]!]),
      ...receivers.flatMap((u, r) => roomsOf(r).map((i): [string, string] => [u.token, rooms[i]!])),
    ];
    await pool(joins.length, 8, (i) => c.ok('POST', `/_matrix/client/v3/join/${enc(joins[i]![1])}`, { token: joins[i]![0], body: {} }));

    // Receivers: record when each event id first comes back from a /sync.
    const received = receivers.map(() => new Map<string, number>());
    let syncs = 0;
    let limited = 0;
    let syncErrors = 0;
    const receive = async (r: number) => {
      const token = receivers[r]!.token;
      let since: string = (await c.ok('GET', `/_matrix/client/v3/sync?filter=${FILTER}&timeout=0`, { token })).next_batch;
      while (!aborts.signal.aborted) {
        let res: Awaited<ReturnType<typeof c.request>>;
        try {
          res = await c.request('GET', `/_matrix/client/v3/sync?filter=${FILTER}&timeout=30000&since=${enc(since)}`, { token, signal: aborts.signal });
        } catch (e) {
          if (!aborts.signal.aborted) { syncErrors++; await sleep(100); }
          continue;
        }
        const t = now();
        if (res.status !== 200) { syncErrors++; await sleep(100); continue; }
        syncs++;
        since = res.body.next_batch;
        for (const room of Object.values(res.body.rooms?.join ?? {}) as Array<{ timeline?: { events?: Array<{ event_id: string }>; limited?: boolean } }>) {
          if (room.timeline?.limited) limited++;
          for (const ev of room.timeline?.events ?? []) if (!received[r]!.has(ev.event_id)) received[r]!.set(ev.event_id, t);
        }
      }
    };
    const receiving = receivers.map((_, r) => receive(r));
    await sleep(500); // let every receiver settle into its long-poll

    // Senders: open loop, the k-th send due at k / RATE s.
    const sent: Array<{ eventId: string; room: number; issued: number; ok: number }> = [];
    const sendLat: number[] = [];
    let sendErrors = 0;
    const inFlight = new Set<Promise<void>>();
    const lag = monitorEventLoopDelay({ resolution: 1 });
    lag.enable();
    const meter = cpuMeter(hs.pid, await backendPids(db.url));
    const t0 = now();
    for (let k = 0; now() - t0 < DURATION_MS; k++) {
      const wait = t0 + (k * 1000) / RATE - now();
      if (wait >= 1) await sleep(wait);
      const s = k % SENDERS;
      const issued = now();
      const p = c.request('PUT', `/_matrix/client/v3/rooms/${enc(rooms[s % ROOMS]!)}/send/m.room.message/l${k}`, {
        token: senders[s]!.token, body: { msgtype: 'm.text', body: `latency probe ${k}` },
      }).then((res) => {
        const ok = now();
        if (res.status !== 200) { sendErrors++; return; }
        sent.push({ eventId: res.body.event_id, room: s % ROOMS, issued, ok });
        sendLat.push(ok - issued);
      }, () => { sendErrors++; });
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
    }
    const sendSecs = (now() - t0) / 1000;
    await Promise.all(inFlight);
    const cpu = meter();
    lag.disable();
    // Give the receivers time to catch up, then stop them.
    const pairs = sent.flatMap((e) => received.filter((_, r) => roomsOf(r).includes(e.room)).map((m) => ({ e, m })));
    for (const end = now() + DRAIN_MS; now() < end && !pairs.every(({ e, m }) => m.has(e.eventId)); ) await sleep(20);
    aborts.abort();
    await Promise.all(receiving);

    const fromOk: number[] = [];
    const fromIssue: number[] = [];
    let negatives = 0;
    let missing = 0;
    for (const { e, m } of pairs) {
      const t = m.get(e.eventId);
      if (t === undefined) { missing++; continue; }
      if (t < e.ok) negatives++;
      fromOk.push(Math.max(0, t - e.ok));
      fromIssue.push(t - e.issued);
    }
    const d = stats(fromOk);
    const sendStats = stats(sendLat);
    console.log(`method: one process drives both sides on one monotonic clock (performance.now()). For every (event, receiver)
  pair: latency = t(receiver's /sync response carrying the event_id fully read) - t(sender's 200 for that event fully read).
  A /sync may return before the sender has read its own 200 (both race out of the server): such pairs count as 0 and
  are reported as "negative". The upper bound adds the send itself: t(sync) - t(send issued).`);
    console.log(`sends: ${sent.length} ok (${fmt(sent.length / sendSecs, 0)}/s achieved of ${RATE}/s scheduled), ${sendErrors} errors; ${latencyLine('send latency', sendStats)}`);
    console.log(`receivers: ${syncs} /sync responses, ${limited} limited timelines, ${syncErrors} errors; deliveries ${fromOk.length} of ${pairs.length}, missing ${missing} (no /sync returned them within ${DRAIN_MS / 1000} s of the last send)`);
    console.log(latencyLine('delivery latency (send 200 -> sync return)', d));
    console.log(`  negative (sync returned before the send's 200 was read; counted as 0): ${negatives} (${fmt((100 * negatives) / Math.max(1, fromOk.length))}%)`);
    console.log(latencyLine('upper bound (send issued -> sync return)', stats(fromIssue)));
    console.log(`bench client event-loop delay: p99 ${fmt(lag.percentile(99) / 1e6, 2)} ms, max ${fmt(lag.max / 1e6, 2)} ms (adds to the figures above)`);
    console.log(cpuLine(cpu, sent.length / sendSecs, 'send (with its deliveries)'));
    console.log(`goal p99 <= ${GOAL_P99_MS} ms: ${d.p99 <= GOAL_P99_MS && missing === 0 ? 'MET' : 'NOT MET'}`);
    summary('sync-latency', {
      rateScheduled: RATE, rateAchieved: sent.length / sendSecs, deliveries: fromOk.length, missing, negatives,
      p50Ms: d.p50, p99Ms: d.p99, maxMs: d.max, upperP99Ms: stats(fromIssue).p99, sendP99Ms: sendStats.p99,
      clientLagP99Ms: lag.percentile(99) / 1e6, goalMet: d.p99 <= GOAL_P99_MS && missing === 0,
    });
  } finally {
    aborts.abort();
    c.close();
    await hs.stop();
    await db.drop();
  }
}
