// Starts the real homeserver as a child process for integration tests: a free port, a fresh data dir
// and (unless embedded) a fresh database on the external PostgreSQL, dropped again on stop().
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export interface TestServer {
  baseUrl: string;
  serverName: string;
  port: number;
  dataDir: string;
  /** The variables this helper set for the server (on top of the inherited environment). */
  env: Record<string, string>;
  /** SIGTERM, wait for exit; then drop the database and remove the data dir (unless env.KEEP_DB). */
  stop(): Promise<void>;
  /** SIGKILL, wait for exit; database and data dir stay for restart(). */
  kill(): Promise<void>;
  /** Start again with the same env, port and database (stops a running server first). */
  restart(): Promise<void>;
  /** Everything the server wrote to stdout and stderr, across restarts. */
  logs(): string;
  /** The server process's id while it runs (its memory can be read from /proc/<pid>/status). */
  pid(): number | undefined;
}

export interface StartOptions {
  /**
   * Use the server's embedded PostgreSQL (in DATA_DIR) instead of a fresh external database.
   * Unset: TEST_BACKEND=embedded in the environment chooses embedded for the whole suite.
   */
  embedded?: boolean;
  /** Extra/overriding environment for the server. */
  env?: Record<string, string>;
  /**
   * Use Redis (TEST_REDIS_URL, default redis://127.0.0.1:6379) with a key prefix of its own, so test
   * servers never see each other's keys; a second worker passes the first one's env (REDIS_URL,
   * REDIS_PREFIX) instead.
   */
  redis?: boolean;
  /** Entry script relative to the repo root; only for testing this helper. */
  entry?: string;
}

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const SOCKET_FALLBACK = '/var/run/postgresql';

// ---- external PostgreSQL -------------------------------------------------------------------

type AdminTarget = { config: { connectionString: string }; url: (db: string) => string };
let admin: Promise<AdminTarget> | undefined;
let adminResolved: AdminTarget | undefined; // for the synchronous exit handler

function isPasswordError(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  // 28P01 wrong password, 28000 no pg_hba entry / peer failure; pg throws a plain Error when the
  // server asks for a password we don't have (SCRAM: "client password must be a string").
  return err.code === '28P01' || err.code === '28000' || /password/i.test(err.message ?? '');
}

async function tryConnect(config: AdminTarget['config']): Promise<void> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: 3_000 });
  await client.connect();
  await client.end();
}

/** Where to create test databases: TEST_DATABASE_URL over TCP, else the local unix socket. */
function adminTarget(): Promise<AdminTarget> {
  return (admin ??= (async () => {
    const base = new URL(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
    const withDb = (db: string) => { const u = new URL(base); u.pathname = `/${db}`; return u.toString(); };
    const tcp: AdminTarget = { config: { connectionString: base.toString() }, url: withDb };
    try {
      await tryConnect(tcp.config);
      return (adminResolved = tcp);
    } catch (e) {
      if (!isPasswordError(e)) throw e;
      const viaSocket = (db: string) => `${withDb(db)}${base.search ? '&' : '?'}host=${encodeURIComponent(SOCKET_FALLBACK)}`;
      const socket: AdminTarget = { config: { connectionString: viaSocket(base.pathname.slice(1) || 'postgres') }, url: viaSocket };
      await tryConnect(socket.config);
      return (adminResolved = socket);
    }
  })());
}

let available: Promise<boolean> | undefined;
/** True if the external PostgreSQL accepts us (tests that need it can skip otherwise). */
export function externalDbAvailable(): Promise<boolean> {
  return (available ??= adminTarget().then(() => true, () => false));
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client((await adminTarget()).config);
  await client.connect();
  try { await client.query(sql); } finally { await client.end(); }
}

// ---- processes -------------------------------------------------------------------------------

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const databases = new Set<string>();
let cleanupInstalled = false;

/** No server (or its embedded PostgreSQL) may outlive the test process, however it ends. */
function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
    for (const dir of tempDirs) { killOrphanPostgres(dir, 'SIGQUIT'); fs.rmSync(dir, { recursive: true, force: true }); }
    if (databases.size && adminResolved) dropSync([...databases], adminResolved.config.connectionString);
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => { process.exit(128 + os.constants.signals[sig]); });
  }
}

/** 'exit' handlers must be synchronous, so a short-lived node process drops what stop() did not. */
function dropSync(names: string[], connectionString: string): void {
  const script = `const pg = require('pg'); (async () => {
    const c = new pg.Client(process.env.ADMIN_URL); await c.connect();
    for (const d of JSON.parse(process.env.DBS)) await c.query('DROP DATABASE IF EXISTS "' + d + '" WITH (FORCE)');
    await c.end(); })().catch(() => process.exit(1));`;
  spawnSync(process.execPath, ['-e', script], {
    cwd: repoRoot, env: { ...process.env, ADMIN_URL: connectionString, DBS: JSON.stringify(names) }, stdio: 'ignore', timeout: 10_000,
  });
}

/** The embedded PostgreSQL outlives a SIGKILLed server; find it by its postmaster.pid. */
function killOrphanPostgres(dataDir: string, signal: NodeJS.Signals): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    // A stale postmaster.pid may name a recycled pid: only signal an actual postgres.
    if (pid > 0 && fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') { process.kill(pid, signal); return pid; }
  } catch { /* none running */ }
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  child.ref(); // we wait on it: the event loop must too
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function waitGone(pid: number, ms: number): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
    try { process.kill(pid, 0); } catch { return; }
  }
}

/**
 * A fresh database on the external PostgreSQL for a homeserver started in this process
 * (homeserver/main.ts startHomeserver); undefined with TEST_BACKEND=embedded, where the server
 * starts its own in DATA_DIR. Dropped when the test process exits.
 */
export async function createTestDatabase(): Promise<string | undefined> {
  installCleanup();
  if (process.env.TEST_BACKEND === 'embedded') return undefined;
  const database = `hs_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE "${database}"`);
  databases.add(database);
  return (await adminTarget()).url(database);
}

export async function startServer(opts: StartOptions = {}): Promise<TestServer> {
  installCleanup();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-test-'));
  tempDirs.add(dataDir);
  // Rate limits are off unless a test turns them on (RATE_LIMITS=on): most tests register dozens
  // of users and send bursts from 127.0.0.1; tests/integration/rate-limits.test.ts tests the limits.
  const env: Record<string, string> = { PORT: String(opts.env?.PORT ?? await freePort()), SERVER_NAME: 'localhost', LOG_LEVEL: 'warn', DATA_DIR: dataDir, RATE_LIMITS: 'off' };
  let database: string | undefined;
  const embedded = opts.embedded ?? process.env.TEST_BACKEND === 'embedded';
  // A caller that names the database (a second worker on the first one's) gets no database of its own.
  if (!embedded && !opts.env?.DATABASE_URL) {
    database = `hs_test_${randomBytes(6).toString('hex')}`;
    await adminQuery(`CREATE DATABASE "${database}"`);
    if ([undefined, '', '0', 'false'].includes(opts.env?.KEEP_DB)) databases.add(database);
    env.DATABASE_URL = (await adminTarget()).url(database);
  }
  if (opts.redis && !opts.env?.REDIS_URL) {
    env.REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
    env.REDIS_PREFIX = `test-${randomBytes(6).toString('hex')}:`;
  }
  Object.assign(env, opts.env);
  const port = Number(env.PORT);
  const keep = ![undefined, '', '0', 'false'].includes(opts.env?.KEEP_DB);
  const baseUrl = `http://127.0.0.1:${port}`;
  const entry = opts.entry ?? 'homeserver/main.ts';

  let output = '';
  let child: ChildProcess | undefined;
  const append = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 4_000_000) output = output.slice(-2_000_000); // bound memory on chatty servers
    if (process.env.TEST_SERVER_LOGS) process.stderr.write(chunk);
  };

  const launch = async () => {
    // Inherit PATH etc., but not what would point the server elsewhere or confuse node:test.
    const inherited = { ...process.env };
    for (const k of ['DATABASE_URL', 'REDIS_URL', 'NODE_TEST_CONTEXT']) delete inherited[k];
    const proc = spawn(process.execPath, ['--import', 'tsx', entry], {
      cwd: repoRoot, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    proc.stdout!.on('data', append);
    proc.stderr!.on('data', append);
    // A test that forgets stop() must not hang its file: unref'd, the server dies with the exit handler.
    proc.unref();
    (proc.stdout as net.Socket).unref();
    (proc.stderr as net.Socket).unref();
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError = '';
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) { lastError = `exited (${proc.exitCode ?? proc.signalCode})`; break; }
      try {
        const res = await fetch(`${baseUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(2_000) });
        if (res.ok) return;
        lastError = `HTTP ${res.status}`;
      } catch (e) { lastError = (e as Error).message; }
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGKILL');
    await exited(proc);
    const tail = output.trimEnd().split('\n').slice(-40).join('\n');
    throw new Error(`homeserver did not become ready on ${baseUrl} (${lastError}); last log lines:\n${tail}`);
  };

  const terminate = async () => {
    const proc = child;
    if (!proc) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited(proc);
    clearTimeout(timer);
  };

  let stopped: Promise<void> | undefined;
  const server: TestServer = {
    baseUrl, serverName: env.SERVER_NAME!, port, dataDir, env,
    logs: () => output,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid : undefined),
    kill: async () => { if (child) { child.kill('SIGKILL'); await exited(child); } },
    restart: async () => { await terminate(); await launch(); },
    stop: () => (stopped ??= (async () => {
      await terminate();
      const orphan = killOrphanPostgres(dataDir, 'SIGINT'); // left behind if the server was SIGKILLed
      if (orphan) await waitGone(orphan, STOP_TIMEOUT_MS);
      if (keep) return;
      if (database) { await adminQuery(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`); databases.delete(database); }
      fs.rmSync(dataDir, { recursive: true, force: true });
      tempDirs.delete(dataDir);
    })()),
  };

  try {
    await launch();
  } catch (e) {
    if (database && !keep) {
      await adminQuery(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`).catch(() => {});
      databases.delete(database);
    }
    killOrphanPostgres(dataDir, 'SIGQUIT');
    if (!keep) { fs.rmSync(dataDir, { recursive: true, force: true }); tempDirs.delete(dataDir); }
    throw e;
  }
  return server;
}
