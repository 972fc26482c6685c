// Start-up failures (finding 14, deliverable 4): every one is ONE readable line on stderr, a non-zero
// exit, and nothing left running — no listener on the port, no embedded PostgreSQL. A second server
// on one DATA_DIR refuses to start and harms nothing; the embedded PostgreSQL is supervised.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, startServer } from '../helpers/server.ts';
import { api, registerUser } from '../helpers/client.ts';

const dirs: string[] = [];
after(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-startup-'));
  dirs.push(d);
  return d;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Runs the server with this environment until it exits (or is killed after `timeoutMs`). */
function runUntilExit(env: Record<string, string>, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const inherited = { ...process.env };
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'NODE_TEST_CONTEXT', 'CONFIG_FILE']) delete inherited[k];
  const child = spawn(process.execPath, ['--import', 'tsx', 'homeserver/main.ts'], {
    cwd: repoRoot, env: { ...inherited, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); }));
}

function oneLine(stderr: string, expected: RegExp): void {
  const lines = stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${stderr}`);
  assert.match(lines[0]!, expected);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

async function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  });
}

/** The embedded PostgreSQL of DATA_DIR, if one runs. */
function postmaster(dataDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres' ? pid : undefined;
  } catch { return undefined; }
}

describe('start-up failures are one line, exit non-zero, leave nothing running', () => {
  test('bad configuration values', async () => {
    const port = await freePort();
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ MAX_REQUEST_BYTES: 'abc' }, /^super-server: MAX_REQUEST_BYTES="abc" is not valid: MAX_REQUEST_BYTES accepts a whole number/],
      [{ PORT: '99999' }, /^super-server: PORT="99999" .*0 to 65535/],
      // (every variable's rule: tests/unit/config.test.ts)
    ];
    const broken = path.join(tempDir(), 'config.json');
    fs.writeFileSync(broken, '{ nope');
    cases.push([{ CONFIG_FILE: broken }, new RegExp(`^super-server: CONFIG_FILE ${broken} is not valid JSON`)]);
    // In parallel: each is a fresh node process.
    const results = await Promise.all(cases.map(([env]) => runUntilExit({ PORT: String(port), DATA_DIR: tempDir(), ...env }, 90_000)));
    results.forEach((r, i) => {
      assert.equal(r.code, 1, `exit code for ${JSON.stringify(cases[i]![0])}`);
      oneLine(r.stderr, cases[i]![1]);
    });
    assert.ok(await portClosed(port));
  });

  test('DATA_DIR under /proc, under a file, and an unreachable DATABASE_URL: one line each, promptly', async () => {
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, '');
    const port = await freePort();
    const [proc, underFile, unreachable] = await Promise.all([
      runUntilExit({ PORT: String(port), DATA_DIR: '/proc/nope' }, 90_000), // spun at 100% CPU for ever
      runUntilExit({ PORT: String(port), DATA_DIR: path.join(file, 'data') }, 90_000),
      runUntilExit({ PORT: String(port), DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', DATABASE_TIMEOUT_MS: '500' }, 90_000),
    ]);
    assert.equal(proc.code, 1);
    oneLine(proc.stderr, /^super-server: DATA_DIR \/proc\/nope cannot be created/);
    assert.equal(underFile.code, 1);
    oneLine(underFile.stderr, /^super-server: DATA_DIR .*a-file\/data cannot be created \(ENOTDIR/);
    assert.equal(unreachable.code, 1);
    oneLine(unreachable.stderr, /^super-server: DATABASE_URL postgres:\/\/postgres@127\.0\.0\.1:1\/none is unreachable \(waited \d+ s\): ECONNREFUSED/);
    for (const r of [proc, underFile, unreachable]) {
      for (const line of r.stdout.split('\n').filter(Boolean)) assert.doesNotThrow(() => JSON.parse(line), `log lines stay JSON: ${line}`);
    }
    assert.ok(await portClosed(port));
  });

  test('a taken port stops the embedded PostgreSQL it started', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '0.0.0.0', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    const dataDir = tempDir();
    try {
      const r = await runUntilExit({ PORT: String(port), DATA_DIR: dataDir }, 120_000);
      assert.equal(r.code, 1);
      oneLine(r.stderr, new RegExp(`^super-server: PORT ${port} is already in use`));
      assert.ok(fs.existsSync(path.join(dataDir, 'pg', 'PG_VERSION')), 'the database was made before listening');
      assert.equal(postmaster(dataDir), undefined, 'no PostgreSQL left running');
      assert.ok(!fs.existsSync(path.join(dataDir, 'homeserver.pid')), 'DATA_DIR released');
    } finally { blocker.close(); }
  });
});

describe('one server per DATA_DIR; a supervised embedded PostgreSQL', () => {
  test('a second server on the same DATA_DIR refuses to start and the first keeps serving; a killed PostgreSQL is restarted', async () => {
    const first = await startServer({ embedded: true });
    try {
      const alice = await registerUser(first.baseUrl);
      const pgBefore = postmaster(first.dataDir);
      assert.ok(pgBefore);

      const second = await runUntilExit({ PORT: String(await freePort()), DATA_DIR: first.dataDir }, 90_000);
      assert.equal(second.code, 1);
      oneLine(second.stderr, /^super-server: DATA_DIR .* is in use by another homeserver \(pid \d+\)/);
      assert.equal(postmaster(first.dataDir), pgBefore, 'the first server keeps its PostgreSQL');
      assert.equal((await api(first.baseUrl, 'GET', '/_matrix/client/v3/account/whoami', { token: alice.accessToken })).status, 200);
      assert.equal((await api(first.baseUrl, 'GET', '/health/ready')).status, 200);

      // PostgreSQL dies: requests fail fast (503, never 500 or a hang) until the supervisor has it back.
      process.kill(pgBefore, 'SIGKILL');
      let pgAfter: number | undefined;
      for (const end = Date.now() + 60_000; Date.now() < end;) {
        const res = await api(first.baseUrl, 'GET', '/_matrix/client/v3/account/whoami', { token: alice.accessToken, headers: { 'cache-control': 'no-cache' } });
        assert.ok([200, 503].includes(res.status), `200 or 503 while PostgreSQL restarts, got ${res.status}`);
        if (res.status === 503) assert.equal(res.body.errcode, 'M_UNKNOWN');
        pgAfter = postmaster(first.dataDir);
        if (pgAfter && pgAfter !== pgBefore && (await api(first.baseUrl, 'GET', '/health/ready')).status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(pgAfter && pgAfter !== pgBefore, 'a new postmaster runs');
      const roomRes = await api(first.baseUrl, 'POST', '/_matrix/client/v3/createRoom', { token: alice.accessToken, body: {} });
      assert.equal(roomRes.status, 200, 'the server writes again after the restart');
    } finally { await first.stop(); }
    assert.equal(postmaster(first.dataDir), undefined);
  });
});
