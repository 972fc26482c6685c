// The machine's ceiling: a bare koa route doing one INSERT per request (bench/baseline-server.ts),
// driven by 50 keep-alive clients. runBaseline() lets other benchmarks run it side by side.
import { Client, backendPids, closedLoop, cpuLine, cpuMeter, createDatabase, fmt, latencyLine, spawnNode, summary, type CpuUsage, type LoadResult } from './lib.ts';

export interface BaselineOptions { concurrency?: number; durationMs?: number; warmupMs?: number }

export type BaselineResult = LoadResult & { cpu: CpuUsage };

export async function runBaseline(opts: BaselineOptions = {}): Promise<BaselineResult> {
  const { concurrency = 50, durationMs = 10_000, warmupMs = 1_000 } = opts;
  const db = await createDatabase('baseline');
  const server = await spawnNode('bench/baseline-server.ts', { DATABASE_URL: db.url }, '/health');
  const client = new Client(server.baseUrl);
  try {
    const send = async (w: number, seq: number) => {
      const r = await client.request('PUT', `/send/w${w}-${seq}`, { body: { msgtype: 'm.text', body: `hello ${seq}` } });
      return r.status === 200;
    };
    await closedLoop(concurrency, warmupMs, send);
    const meter = cpuMeter(server.pid, await backendPids(db.url));
    const r = await closedLoop(concurrency, durationMs, send);
    return { ...r, cpu: meter() };
  } finally {
    client.close();
    await server.stop();
    await db.drop();
  }
}

export function printBaseline(r: BaselineResult): void {
  console.log(`baseline (koa + @koa/router, 1 INSERT/request, pg pool 20): ${fmt(r.perSec, 0)} req/s over ${fmt(r.elapsedMs / 1000)} s, ${r.errors} errors`);
  console.log(`  ${latencyLine('latency', r.latency)}`);
  console.log(`  ${cpuLine(r.cpu, r.perSec)}`);
}

export async function main(): Promise<void> {
  console.log('baseline: 50 concurrent clients, 1 s warm-up, 10 s measured');
  const r = await runBaseline();
  printBaseline(r);
  summary('baseline', { reqPerSec: r.perSec, p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.errors });
}
