// The backup file: one tar archive (GNU tar, present on every Debian) holding
//   database.backup.gz   the database (dump.ts: one consistent snapshot, JSON rows)
//   media/…              the media repository's files (DATA_DIR/media, without its tmp/ spool)
//   signing.key          the signing key file, when the server keeps one on disk (SIGNING_KEY_PATH,
//                        else DATA_DIR/signing.key); today the key lives in the database, and is in
//                        database.backup.gz
//   manifest.json        written LAST: an archive whose last entry is not the manifest is incomplete
// The database is dumped first, then the media copied: every file a row of the snapshot names is
// there (files are content-addressed and never rewritten; one deleted meanwhile is the only gap).
// A file made by older versions (a bare database.backup.gz) still restores.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ARCHIVE_FORMAT = 'super-server-backup-archive';
const DATABASE_ENTRY = 'database.backup.gz';
const KEY_ENTRY = 'signing.key';
const MANIFEST_ENTRY = 'manifest.json';

export interface Manifest {
  format: typeof ARCHIVE_FORMAT;
  version: 1;
  created: string;
  database: string;
  mediaFiles: number;
  /** The signing key file's path on the server that made the backup, or null if it kept none on disk. */
  signingKeyPath: string | null;
}

/** Where the server keeps its signing key file, if it keeps one (SIGNING_KEY_PATH: absolute, or under DATA_DIR). */
export function signingKeyFile(dataDir: string, env: Record<string, string | undefined> = process.env): string {
  const configured = env.SIGNING_KEY_PATH;
  if (configured) return path.isAbsolute(configured) ? configured : path.join(dataDir, configured);
  return path.join(dataDir, KEY_ENTRY);
}

/** `okCodes`: with --create, exit 1 only says a file changed while it was read (an upload landing meanwhile). */
function tar(args: string[], okCodes = [0]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.once('error', (e) => reject(new Error(`tar cannot run (${e.message}): install it (apt-get install tar)`)));
    child.once('close', (code) => {
      if (code !== null && okCodes.includes(code)) resolve(out);
      else reject(new Error(`tar ${args[0]} failed: ${err.trim().split('\n')[0] || `exit ${code}`}`));
    });
  });
}

function countFiles(dir: string, skip: string): number {
  let n = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (p === skip) continue;
    if (entry.isDirectory()) n += countFiles(p, skip);
    else if (entry.isFile()) n++;
  }
  return n;
}

/**
 * Writes the archive to `out` from a finished database dump (`databaseFile`, moved into a staging
 * folder beside `out`), DATA_DIR/media and the signing key file. Atomic: `out` appears complete or not at all.
 */
export async function writeArchive(out: string, databaseFile: string, dataDir: string, keyFile: string): Promise<Manifest> {
  const staging = fs.mkdtempSync(`${out}.staging-`);
  const partial = `${out}.partial`;
  try {
    fs.renameSync(databaseFile, path.join(staging, DATABASE_ENTRY));
    const media = path.join(dataDir, 'media');
    const hasMedia = fs.existsSync(media) && fs.statSync(media).isDirectory();
    const hasKey = fs.existsSync(keyFile) && fs.statSync(keyFile).isFile();
    if (hasKey) fs.copyFileSync(keyFile, path.join(staging, KEY_ENTRY));
    const manifest: Manifest = {
      format: ARCHIVE_FORMAT, version: 1, created: new Date().toISOString(), database: DATABASE_ENTRY,
      mediaFiles: hasMedia ? countFiles(media, path.join(media, 'tmp')) : 0, signingKeyPath: hasKey ? keyFile : null,
    };
    fs.writeFileSync(path.join(staging, MANIFEST_ENTRY), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    const args = ['-cf', partial, '-C', staging, DATABASE_ENTRY, ...(hasKey ? [KEY_ENTRY] : [])];
    // Upload temp files are not media; files appearing meanwhile are simply taken or not.
    if (hasMedia) args.push('-C', dataDir, '--exclude=media/tmp', '--warning=no-file-changed', '--warning=no-file-removed', 'media');
    args.push('-C', staging, MANIFEST_ENTRY);
    await tar(args, [0, 1]);
    fs.chmodSync(partial, 0o600);
    fs.renameSync(partial, out);
    return manifest;
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(partial, { force: true });
  }
}

/** True if `file` is a tar archive (ustar magic), false if it is a bare gzip'd database dump. */
export function isArchive(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(262);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    return n >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar';
  } finally { fs.closeSync(fd); }
}

/** Reads the whole archive once: a damaged or truncated one (no manifest at its end) is refused before anything is restored. */
export async function openArchive(file: string, workDir: string): Promise<{ manifest: Manifest; databaseFile: string; keyFile: string | undefined }> {
  let listing: string;
  try { listing = await tar(['-tf', file]); } catch (err) {
    throw new Error(`${file} is damaged or incomplete (${(err as Error).message}): nothing was restored`);
  }
  const entries = listing.split('\n').filter(Boolean);
  if (entries.at(-1) !== MANIFEST_ENTRY || !entries.includes(DATABASE_ENTRY)) {
    throw new Error(`${file} is incomplete (it does not end with its manifest): nothing was restored`);
  }
  const members = [MANIFEST_ENTRY, DATABASE_ENTRY, ...(entries.includes(KEY_ENTRY) ? [KEY_ENTRY] : [])];
  await tar(['-xf', file, '-C', workDir, ...members]);
  const manifest = JSON.parse(fs.readFileSync(path.join(workDir, MANIFEST_ENTRY), 'utf8')) as Manifest;
  if (manifest.format !== ARCHIVE_FORMAT || manifest.version !== 1) throw new Error(`${file} is not a super-server backup archive this version reads`);
  return { manifest, databaseFile: path.join(workDir, DATABASE_ENTRY), keyFile: entries.includes(KEY_ENTRY) ? path.join(workDir, KEY_ENTRY) : undefined };
}

/**
 * Puts the media files back into DATA_DIR/media (files already there with the same name are the
 * same content: media is content-addressed) and the signing key file where the server reads it;
 * a different key file already there is kept beside it as `<name>.replaced-<time>`, never lost.
 */
export async function restoreFiles(file: string, manifest: Manifest, keyFromArchive: string | undefined, dataDir: string, keyFile: string): Promise<string[]> {
  const done: string[] = [];
  if (manifest.mediaFiles > 0) {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    await tar(['-xf', file, '-C', dataDir, '--no-same-owner', 'media']);
    done.push(`${manifest.mediaFiles} media files`);
  }
  if (keyFromArchive) {
    const key = fs.readFileSync(keyFromArchive);
    if (fs.existsSync(keyFile) && !fs.readFileSync(keyFile).equals(key)) {
      fs.renameSync(keyFile, `${keyFile}.replaced-${new Date().toISOString().replace(/[-:.]/g, '')}`);
    }
    fs.mkdirSync(path.dirname(keyFile), { recursive: true, mode: 0o700 });
    fs.writeFileSync(`${keyFile}.partial`, key, { mode: 0o600 });
    fs.renameSync(`${keyFile}.partial`, keyFile);
    done.push(`the signing key file ${keyFile}`);
  }
  return done;
}
