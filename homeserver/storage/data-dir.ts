// DATA_DIR: created and checked before anything is started in it, and held by one server at a time.
import fs from 'node:fs';
import path from 'node:path';
import { StartupError } from '../startup-error.ts';

const LOCK_FILE = 'homeserver.pid';

/**
 * Creates DATA_DIR and checks that it is a writable directory. Parents are made one at a time:
 * Node's recursive mkdir loops forever under /proc (DATA_DIR=/proc/nope spun at 100% CPU).
 */
export function prepareDataDir(dir: string): void {
  const missing: string[] = [];
  let at = dir;
  while (!fs.existsSync(at)) {
    missing.unshift(at);
    const up = path.dirname(at);
    if (up === at) break;
    at = up;
  }
  for (const d of missing) {
    try { fs.mkdirSync(d, { mode: 0o700 }); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new StartupError(`DATA_DIR ${dir} cannot be created (${describe(e)} at ${d}): DATA_DIR accepts a directory this user (uid ${process.getuid?.()}) may create and write`);
    }
  }
  if (!fs.statSync(dir).isDirectory()) throw new StartupError(`DATA_DIR ${dir} is not a directory: DATA_DIR accepts a writable directory`);
  try { fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK); } catch (e) {
    throw new StartupError(`DATA_DIR ${dir} is not writable (${describe(e)}): DATA_DIR accepts a directory this user (uid ${process.getuid?.()}) may write`);
  }
}

function describe(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** True if `pid` is a live process other than this one (a pid recycled after a reboot may pass; it's checked by name). */
function otherServerAlive(pid: number): boolean {
  if (!(pid > 0) || pid === process.pid) return false;
  try { process.kill(pid, 0); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false; }
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('node'); } catch { return true; }
}

/**
 * Takes DATA_DIR for this process: a second server on it would adopt the first one's PostgreSQL
 * and stop it on exit. A lock left by a SIGKILLed server (its pid is gone) is taken over.
 * Returns the release function.
 */
export function lockDataDir(dir: string): () => void {
  const file = path.join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return () => {
        try { if (Number(fs.readFileSync(file, 'utf8')) === process.pid) fs.rmSync(file); } catch { /* gone */ }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new StartupError(`DATA_DIR ${dir}: cannot create ${file} (${describe(e)})`);
    }
    let holder = 0;
    try { holder = Number(fs.readFileSync(file, 'utf8').trim()); } catch { continue; }
    if (otherServerAlive(holder)) {
      throw new StartupError(`DATA_DIR ${dir} is in use by another homeserver (pid ${holder}): stop that one first, or give this one its own DATA_DIR`);
    }
    fs.rmSync(file, { force: true }); // stale: its server is gone
  }
  throw new StartupError(`DATA_DIR ${dir}: cannot take ${file}; another server keeps taking it`);
}

/** The pid of the server holding DATA_DIR, if one is running (backup and restore check it). */
export function dataDirHolder(dir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8').trim());
    return otherServerAlive(pid) ? pid : undefined;
  } catch { return undefined; }
}
