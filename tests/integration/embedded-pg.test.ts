// The embedded PostgreSQL launcher: fresh cluster, persistence, and adoption/recovery after the
// launcher's host process is SIGKILLed.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../homeserver/storage/embedded.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const dirs: string[] = [];
const servers: EmbeddedPostgres[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-embedded-pg-'));
  dirs.push(dir);
  return dir;
}

async function start(dataDir: string, logs: string[] = []): Promise<EmbeddedPostgres> {
  const server = await startEmbeddedPostgres({ dataDir, log: (m) => logs.push(m) });
  servers.push(server);
  return server;
}

async function query(server: EmbeddedPostgres, sql: string, params: unknown[] = []): Promise<any[]> {
  const client = new pg.Client(server.connection);
  await client.connect();
  try { return (await client.query(sql, params)).rows; } finally { await client.end(); }
}

function postmasterPid(dataDir: string): number {
  return Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function running(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

after(async () => {
  for (const s of servers) await s.stop().catch(() => {});
  for (const d of dirs) {
    // A test that failed half-way may leave the child's server running.
    try {
      const pid = postmasterPid(d);
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') process.kill(pid, 'SIGQUIT');
    } catch { /* none */ }
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('fresh start creates a working homeserver database on a unix socket', async (t) => {
  const dataDir = tempDir();
  const t0 = performance.now();
  const server = await start(dataDir);
  t.diagnostic(`fresh start (initdb) ${Math.round(performance.now() - t0)} ms`);
  assert.equal(server.connection.database, 'homeserver');
  assert.equal(server.connection.host, path.join(dataDir, 'run'));
  const [row] = await query(server, `SELECT 1 AS one, current_setting('fsync') AS fsync,
    current_setting('listen_addresses') AS listen, pg_encoding_to_char(encoding) AS enc
    FROM pg_database WHERE datname = current_database()`);
  assert.deepEqual(row, { one: 1, fsync: 'on', listen: '', enc: 'UTF8' });
  await server.stop();
  await server.stop(); // idempotent
});

test('data persists across stop and start; restart is fast', async (t) => {
  const dataDir = tempDir();
  const first = await start(dataDir);
  await query(first, 'CREATE TABLE kept (v text)');
  await query(first, "INSERT INTO kept VALUES ('hello')");
  await first.stop();
  const t0 = performance.now();
  const second = await start(dataDir);
  const ms = performance.now() - t0;
  t.diagnostic(`restart ${Math.round(ms)} ms`);
  assert.ok(ms < 5_000, `restart took ${ms} ms`);
  assert.deepEqual(await query(second, 'SELECT v FROM kept'), [{ v: 'hello' }]);
  await second.stop();
});

test('a deep data dir gets a short socket dir under tmp', async () => {
  const base = tempDir();
  fs.chmodSync(base, 0o711); // mkdtemp's 0700 would hide the nested dir from 'nobody' when we are root
  const dataDir = path.join(base, 'x'.repeat(60), 'y'.repeat(60));
  const server = await start(dataDir);
  try {
    assert.ok(server.connection.host.startsWith(os.tmpdir()), server.connection.host);
    assert.deepEqual(await query(server, 'SELECT 2 AS two'), [{ two: 2 }]);
  } finally {
    await server.stop();
    fs.rmSync(server.connection.host, { recursive: true, force: true });
  }
});

test('as root, a data dir out of reach keeps its cluster in /var/lib/super-server, linked from DATA_DIR', { skip: process.getuid?.() !== 0 }, async () => {
  const dataDir = path.join(tempDir(), 'inner'); // under a 0700 dir: 'nobody' cannot search it
  const first = await startEmbeddedPostgres({ dataDir });
  let target = '';
  try {
    await query(first, 'CREATE TABLE kept (v int)');
    await query(first, 'INSERT INTO kept VALUES (42)');
    target = fs.readlinkSync(path.join(dataDir, 'pg'));
    assert.match(target, /^\/var\/lib\/super-server\/pg-[0-9a-f]{16}$/);
  } finally {
    await first.stop();
  }
  const again = await startEmbeddedPostgres({ dataDir });
  try {
    assert.deepEqual(await query(again, 'SELECT v FROM kept'), [{ v: 42 }], 'the same cluster after a restart');
  } finally {
    await again.stop();
    fs.rmSync(target, { recursive: true, force: true });
  }
});

test('after the host process is SIGKILLed, the orphan is adopted; after a crash of PostgreSQL, the supervisor restarts it', async () => {
  const dataDir = tempDir();
  const child = spawn(process.execPath, ['--import', 'tsx', 'tests/helpers/embedded-child.ts', dataDir],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0]!); });
    child.on('exit', (code) => reject(new Error(`child exited ${code}: ${stderr}`)));
  });
  const { connection } = JSON.parse(line) as { connection: EmbeddedPostgres['connection'] };
  const orphanView = { connection, pid: () => 0, stop: async () => {} };
  await query(orphanView, 'CREATE TABLE survivors (v int)');
  await query(orphanView, 'INSERT INTO survivors VALUES (1)');

  const exited = new Promise((r) => child.on('exit', r));
  child.kill('SIGKILL');
  await exited;
  const orphan = postmasterPid(dataDir);
  assert.ok(running(orphan), 'postgres survives its launcher');

  const logs: string[] = [];
  const adopted = await start(dataDir, logs);
  assert.equal(postmasterPid(dataDir), orphan, 'the running server is reused');
  assert.ok(logs.some((m) => m.includes('adopting')), logs.join('\n'));
  await query(adopted, 'INSERT INTO survivors VALUES (2)');

  // A crash of PostgreSQL itself (stale postmaster.pid and all): the launcher's supervisor starts it again.
  process.kill(orphan, 'SIGKILL');
  for (const end = Date.now() + 60_000; !logs.some((m) => m.includes('restarted')) && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
  assert.ok(logs.some((m) => m.includes('restarted')), logs.join('\n'));
  assert.notEqual(postmasterPid(dataDir), orphan);
  assert.deepEqual(await query(adopted, 'SELECT v FROM survivors ORDER BY v'), [{ v: 1 }, { v: 2 }]);
  await adopted.stop();
  assert.ok(!fs.existsSync(path.join(dataDir, 'pg', 'postmaster.pid')), 'clean shutdown');
});
