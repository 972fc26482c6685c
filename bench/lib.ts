// Shared plumbing for the benchmarks: databases, child processes, a keep-alive HTTP client,
// load loops and latency statistics. Everything stays on loopback.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const now = () => performance.now();

// ---- cleanup -----------------------------------------------------------------------------------

const cleanups: Array<() => Promise<void> | void> = [];
const children = new Set<ChildProcess>();
const embeddedDirs = new Set<string>();

/** Registers an async cleanup, run (last first) by runCleanups(). */
export function onCleanup(fn: () => Promise<void> | void): () => void {
  cleanups.push(fn);
  return () => { const i = cleanups.indexOf(fn); if (i >= 0) cleanups.splice(i, 1); };
}

export async function runCleanups(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    try { await fn(); } catch (e) { console.error('cleanup failed:', (e as Error).message); }
  }
}

// Last resort: no child (server, embedded postgres) outlives us.
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  for (const dir of embeddedDirs) killPostmaster(dir);
});

// ---- databases ---------------------------------------------------------------------------------

export const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function adminQuery(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try { await c.query(sql); } finally { await c.end(); }
}

export interface BenchDb { name: string; url: string; drop(): Promise<void> }

/** A fresh database `bench_<name>_<random>` on the external PostgreSQL, dropped by drop() or at cleanup. */
export async function createDatabase(bench: string): Promise<BenchDb> {
  const name = `bench_${bench.replace(/\W/g, '_')}_${randomBytes(4).toString('hex')}`;
  await adminQuery(`CREATE DATABASE "${name}"`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  const drop = () => (dropped ??= adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
  // BENCH_KEEP_DB=1 keeps the database after the run, to look at its queries with psql.
  if (!process.env.BENCH_KEEP_DB) onCleanup(drop);
  return { name, url: u.toString(), drop };
}

// ---- processes ---------------------------------------------------------------------------------

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface Proc {
  pid: number;
  baseUrl: string;
  /** ms from spawn to the first 200 of the ready probe. */
  readyMs: number;
  logs(): string;
  /** SIGTERM and wait for exit (SIGKILL after 15 s). */
  stop(): Promise<void>;
}

/**
 * Spawns `node --import tsx <entry>` with a free PORT and polls `probe` every 5 ms until it
 * answers 200. The child is node itself, so `pid` is the server's pid.
 */
let announcedLimitsOff = false;

export async function spawnNode(entry: string, env: Record<string, string>, probe = '/_matrix/client/versions'): Promise<Proc> {
  if (env.RATE_LIMITS === 'off' && !announcedLimitsOff) {
    announcedLimitsOff = true;
    console.log('(the server runs with RATE_LIMITS=off: this benchmark measures the server, not its rate limits)');
  }
  const port = Number(env.PORT ?? (await freePort()));
  const baseUrl = `http://127.0.0.1:${port}`;
  const inherited = { ...process.env };
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'DATA_DIR', 'PORT']) delete inherited[k];
  const t0 = now();
  // BENCH_NODE_ARGS: extra node flags for the server, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  // A .mjs entry is plain JavaScript (npm start's bundle launcher); TypeScript goes through tsx.
  const child = spawn(process.execPath, [...nodeArgs, ...(entry.endsWith('.mjs') ? [] : ['--import', 'tsx']), entry], {
    cwd: repoRoot, env: { ...inherited, BIND_ADDRESS: '127.0.0.1', ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  const append = (d: Buffer) => { out += d; if (out.length > 1_000_000) out = out.slice(-500_000); };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exited = new Promise<void>((r) => { if (child.exitCode !== null) r(); else child.once('exit', () => r()); });
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
  })());
  const removeCleanup = onCleanup(stop);
  for (const deadline = t0 + 60_000; ;) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get(`${baseUrl}${probe}`, { agent: false, timeout: 1000 }, (res) => { res.resume(); resolve(res.statusCode === 200); });
      req.on('error', () => resolve(false));
      req.on('timeout', () => { req.destroy(); resolve(false); });
    });
    if (ok) {
      return { pid: child.pid!, baseUrl, readyMs: now() - t0, logs: () => out, stop: async () => { await stop(); removeCleanup(); } };
    }
    if (now() > deadline) break;
    await sleep(5);
  }
  await stop();
  throw new Error(`${entry} did not become ready on ${baseUrl}; last output:\n${out.trimEnd().split('\n').slice(-30).join('\n')}`);
}

export interface HomeserverOpts {
  /** External database URL; unset: embedded PostgreSQL in dataDir. */
  databaseUrl?: string;
  dataDir?: string;
  env?: Record<string, string>;
}

export interface Homeserver extends Proc { dataDir: string }

/**
 * Starts the real homeserver as `npm start` does (homeserver/start.mjs: the esbuild bundle, built
 * beforehand so no run times the build). LOG_LEVEL defaults to warn (BENCH_LOG_LEVEL overrides).
 */
export async function startHomeserver(opts: HomeserverOpts = {}): Promise<Homeserver> {
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hs-bench-'));
  // Benchmarks measure the server, not its rate limits (a load generator is one client that
  // sends like a script): off unless a benchmark turns them on (bench/flood.ts).
  const env: Record<string, string> = { SERVER_NAME: 'localhost', LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', DATA_DIR: dataDir, RATE_LIMITS: 'off', ...opts.env };
  if (opts.databaseUrl) env.DATABASE_URL = opts.databaseUrl;
  else embeddedDirs.add(dataDir);
  const rmDir = () => {
    killPostmaster(dataDir); // an embedded server left behind by a killed homeserver
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  if (!opts.dataDir) onCleanup(rmDir);
  ensureBundle();
  const proc = await spawnNode('homeserver/start.mjs', env);
  return { ...proc, dataDir };
}

let bundled = false;
function ensureBundle(): void {
  if (bundled) return;
  execFileSync(process.execPath, ['homeserver/start.mjs', '--build-only'], { cwd: repoRoot, stdio: 'inherit' });
  bundled = true;
}

/** The embedded postmaster's pid, from DATA_DIR/pg/postmaster.pid, if it runs. */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0 && fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') return pid;
  } catch { /* not running */ }
  return undefined;
}

function killPostmaster(dataDir: string): void {
  const pid = postmasterPid(dataDir);
  if (pid) try { process.kill(pid, 'SIGQUIT'); } catch { /* gone */ }
}

/** RSS and PSS (kB → MB) of a process, from /proc. */
export function memoryOf(pid: number): { rssMb: number; pssMb: number } {
  const kb = (text: string, key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  let pss = 0;
  try { pss = kb(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss'); } catch { /* old kernel */ }
  return { rssMb: kb(status, 'VmRSS') / 1024, pssMb: pss / 1024 };
}

/** The pid and its direct children (the postmaster's backends and auxiliary processes). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${d}/status`, 'utf8'))?.[1]);
      if (ppid === pid) out.push(Number(d));
    } catch { /* exited meanwhile */ }
  }
  return out;
}

// ---- HTTP --------------------------------------------------------------------------------------

export interface Res { status: number; body: any; ms: number }

/** A JSON client over one keep-alive agent. */
export class Client {
  readonly agent: http.Agent;
  readonly url: URL;

  constructor(baseUrl: string, maxSockets = 512) {
    this.url = new URL(baseUrl);
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  request(method: string, path: string, opts: { token?: string; body?: unknown; signal?: AbortSignal } = {}): Promise<Res> {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    const headers: Record<string, string | number> = {};
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (payload) { headers['content-type'] = 'application/json'; headers['content-length'] = payload.length; }
    const t0 = now();
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: this.url.hostname, port: this.url.port, method, path, headers, agent: this.agent, signal: opts.signal,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try { body = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
          resolve({ status: res.statusCode ?? 0, body, ms: now() - t0 });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Like request(), but throws unless the status is 200. */
  async ok(method: string, path: string, opts: { token?: string; body?: unknown } = {}): Promise<any> {
    const r = await this.request(method, path, opts);
    if (r.status !== 200) throw new Error(`${method} ${path}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
    return r.body;
  }

  close(): void { this.agent.destroy(); }
}

export interface User { userId: string; token: string }

export async function register(c: Client, username: string, password = 'bench-password-1'): Promise<User> {
  const b = await c.ok('POST', '/_matrix/client/v3/register', { body: { username, password, auth: { type: 'm.login.dummy' } } });
  return { userId: b.user_id, token: b.access_token };
}

/** Runs fn(i) for i in [0, n) with at most `concurrency` in flight; results in order. */
export async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, async () => {
    while (next < n) { const i = next++; out[i] = await fn(i); }
  }));
  return out;
}

export const enc = encodeURIComponent;

// ---- load and statistics -----------------------------------------------------------------------

export interface Stats { count: number; mean: number; p50: number; p90: number; p99: number; max: number }

export function stats(samples: number[]): Stats {
  const s = Float64Array.from(samples).sort();
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]! : NaN);
  const sum = s.reduce((a, b) => a + b, 0);
  return { count: s.length, mean: sum / (s.length || 1), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: s.length ? s[s.length - 1]! : NaN };
}

export interface LoadResult { ok: number; errors: number; elapsedMs: number; perSec: number; latency: Stats; firstError?: string }

/**
 * Closed loop: `concurrency` workers each issue fn(worker, seq) back to back for durationMs.
 * fn resolves true on success. Latency is per call, measured here.
 */
export async function closedLoop(concurrency: number, durationMs: number, fn: (worker: number, seq: number) => Promise<boolean>): Promise<LoadResult> {
  const lat: number[] = [];
  let ok = 0;
  let errors = 0;
  let firstError: string | undefined;
  const t0 = now();
  const end = t0 + durationMs;
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    for (let seq = 0; now() < end; seq++) {
      const s = now();
      try {
        if (await fn(w, seq)) { ok++; lat.push(now() - s); } else errors++;
      } catch (e) { errors++; firstError ??= (e as Error).message; }
    }
  }));
  const elapsedMs = now() - t0;
  return { ok, errors, elapsedMs, perSec: ok / (elapsedMs / 1000), latency: stats(lat), firstError };
}

// ---- output ------------------------------------------------------------------------------------

export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

export function printTable(rows: Array<Record<string, string | number>>): void {
  if (!rows.length) return;
  const cols = Object.keys(rows[0]!);
  const cell = (v: string | number | undefined) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : fmt(v)) : v ?? '');
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padStart(width[i]!)).join('  ');
  console.log(line(cols));
  for (const r of rows) console.log(line(cols.map((c) => cell(r[c]))));
}

export function latencyLine(label: string, s: Stats): string {
  return `${label}: p50 ${fmt(s.p50, 2)} ms, p90 ${fmt(s.p90, 2)} ms, p99 ${fmt(s.p99, 2)} ms, max ${fmt(s.max, 2)} ms (n=${s.count})`;
}

/** The final one-line JSON summary every benchmark ends with. */
export function summary(bench: string, figures: Record<string, unknown>): void {
  const round = (v: unknown): unknown => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 100) / 100 : v);
  console.log(JSON.stringify({ bench, ...Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, round(v)])) }));
}

export const mb = (bytes: number) => bytes / (1024 * 1024);

// ---- CPU accounting ----------------------------------------------------------------------------

const CLK_TCK = 100;
function procTicks(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime
  } catch { return 0; }
}
function machineTicks(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1, 9).map(Number);
  return { busy: f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!, total: f.reduce((a, b) => a + b, 0) };
}

/** The PostgreSQL backends serving a database (for CPU accounting). */
export async function backendPids(dbUrl: string): Promise<number[]> {
  const c = new pg.Client({ connectionString: dbUrl });
  await c.connect();
  try {
    const r = await c.query('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
    return r.rows.map((x: { pid: number }) => x.pid);
  } finally { await c.end(); }
}

export interface CpuUsage { machine: number; server: number; postgres: number; bench: number; other: number }

/** Cores used over an interval: the whole machine, the server, its PostgreSQL backends, this process, and the rest. */
export function cpuMeter(serverPid: number, pgPids: number[]): () => CpuUsage {
  const cores = os.cpus().length;
  const t0 = now(), m0 = machineTicks(), s0 = procTicks(serverPid), b0 = process.cpuUsage();
  const p0 = pgPids.reduce((a, p) => a + procTicks(p), 0);
  return () => {
    const secs = (now() - t0) / 1000;
    const m1 = machineTicks();
    const machine = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * cores;
    const server = (procTicks(serverPid) - s0) / CLK_TCK / secs;
    const postgres = (pgPids.reduce((a, p) => a + procTicks(p), 0) - p0) / CLK_TCK / secs;
    const b = process.cpuUsage(b0);
    const bench = (b.user + b.system) / 1e6 / secs;
    return { machine, server, postgres, bench, other: Math.max(0, machine - server - postgres - bench) };
  };
}

export function cpuLine(u: CpuUsage, perSec: number, unit = 'request'): string {
  const per = (cores: number) => fmt((cores * 1000) / perSec, 2);
  return `CPU (cores of ${os.cpus().length}): machine ${fmt(u.machine, 2)} = server ${fmt(u.server, 2)} + its postgres backends ${fmt(u.postgres, 2)}`
    + ` + bench client ${fmt(u.bench, 2)} + other processes ${fmt(u.other, 2)}; per ${unit}: server ${per(u.server)} ms, postgres ${per(u.postgres)} ms`;
}
