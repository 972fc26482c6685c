// What the attack tests share (issue 7): a normal user whose requests leave from another loopback
// address (127.0.0.2, so it shares none of the attacker's per-address caps), its send → sync round
// trip measured while an attack runs, and the server's resident memory.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { TestServer } from './server.ts';
import { registerUser, type Credentials } from './client.ts';
import { request, type AddressedResponse } from './addressed.ts';

/** The server process's resident set size in MiB (VmRSS of /proc/<pid>/status). */
export function rssMb(server: TestServer): number {
  const pid = server.pid();
  assert.ok(pid, 'the server is running');
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) / 1024;
}

/** Samples the server's RSS every 100 ms until stopped; the highest value seen. */
export function watchRss(server: TestServer): { stop(): number } {
  let peak = rssMb(server);
  const timer = setInterval(() => { try { peak = Math.max(peak, rssMb(server)); } catch { /* exited */ } }, 100);
  return { stop: () => { clearInterval(timer); return peak; } };
}

/** Plain HTTP from a given local address, with keep-alive (node's fetch cannot choose the local address). */
export class LoopbackClient {
  private agent: http.Agent;
  private url: URL;

  constructor(baseUrl: string, localAddress = '127.0.0.2', maxSockets = 8) {
    this.url = new URL(baseUrl);
    this.agent = new http.Agent({ keepAlive: true, localAddress, maxSockets });
  }

  request(method: string, path: string, opts: { token?: string; body?: unknown; timeoutMs?: number } = {}): Promise<AddressedResponse> {
    return request(this.url.origin, method, path, { ...opts, agent: this.agent, timeoutMs: opts.timeoutMs ?? 60_000 });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** A user going about its business during an attack: a room, a sync position, send → sync round trips. */
export class NormalUser {
  private since = '';
  private roomId = '';
  private n = 0;

  private constructor(readonly client: LoopbackClient, readonly me: Credentials) {}

  static async create(server: TestServer): Promise<NormalUser> {
    const me = await registerUser(server.baseUrl);
    const user = new NormalUser(new LoopbackClient(server.baseUrl), me);
    const room = await user.client.request('POST', '/_matrix/client/v3/createRoom', { token: me.accessToken, body: { name: 'normal life' } });
    assert.equal(room.status, 200, JSON.stringify(room.body));
    user.roomId = room.body.room_id;
    const first = await user.client.request('GET', '/_matrix/client/v3/sync?timeout=0', { token: me.accessToken });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    user.since = first.body.next_batch;
    return user;
  }

  /** One message sent while a /sync long-poll waits: milliseconds from the send until the sync returns it. */
  async roundTrip(): Promise<number> {
    const token = this.me.accessToken;
    const txn = `t${Date.now()}-${this.n++}`;
    const seen = (async () => {
      for (;;) {
        const res = await this.client.request('GET', `/_matrix/client/v3/sync?timeout=20000&since=${encodeURIComponent(this.since)}`, { token });
        assert.equal(res.status, 200, `normal user's sync: ${JSON.stringify(res.body)}`);
        this.since = res.body.next_batch;
        const events: Array<{ event_id: string; content?: { body?: string } }> = res.body.rooms?.join?.[this.roomId]?.timeline?.events ?? [];
        if (events.some((e) => e.content?.body === txn)) return Date.now();
      }
    })();
    await new Promise((r) => setTimeout(r, 15)); // the long-poll is waiting
    const sentAt = Date.now();
    const sent = await this.client.request('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(this.roomId)}/send/m.room.message/${txn}`, {
      token, body: { msgtype: 'm.text', body: txn },
    });
    assert.equal(sent.status, 200, `normal user's send: ${JSON.stringify(sent.body)}`);
    assert.ok(sent.body.event_id);
    return (await seen) - sentAt;
  }

  /** Round trips one after another until `until` resolves (at least `min`); their latencies. */
  async roundTripsUntil(until: Promise<unknown>, min = 10): Promise<number[]> {
    let done = false;
    until.then(() => { done = true; }, () => { done = true; });
    const out: number[] = [];
    while (!done || out.length < min) out.push(await this.roundTrip());
    return out;
  }

  close(): void {
    this.client.close();
  }
}

export function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

/**
 * Prints the normal user's latency during an attack and asserts a loose bound: the goal is a p99
 * under 200 ms, but on a loaded 2-core test machine only a second is asserted, so the test does not
 * flake while still failing when the attack starves the server.
 */
export function reportLatency(attack: string, latencies: number[], extra: Record<string, unknown> = {}): void {
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  const more = Object.entries(extra).map(([k, v]) => `, ${k} ${v}`).join('');
  console.log(`# [${attack}] normal user send→sync during the attack: p50 ${p50} ms, p99 ${p99} ms (n=${latencies.length}; goal p99 < 200 ms)${more}`);
  assert.ok(p99 < 1_000, `${attack}: the normal user's p99 ${p99} ms stays under 1 s`);
}
