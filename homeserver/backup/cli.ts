// npm run backup [-- <file>]   /   npm run restore -- <file>
// The same configuration as the server (environment, CONFIG_FILE): DATABASE_URL when set, else
// the embedded PostgreSQL in DATA_DIR — used where it runs (a running server keeps serving during
// a backup), started for the occasion and stopped again when the server is down.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig, type Config } from '../config.ts';
import { StartupError } from '../startup-error.ts';
import { connect, type Db } from '../storage/db.ts';
import { dataDirHolder, lockDataDir } from '../storage/data-dir.ts';
import { alive, readPidFile, startEmbeddedPostgres } from '../storage/embedded.ts';
import { backupDatabase, isEmptyDatabase, restoreDatabase } from './dump.ts';
// issue 12 (deploy12): the backup is one tar of the database dump, DATA_DIR/media and the signing key file.
import { isArchive, openArchive, restoreFiles, signingKeyFile, writeArchive } from './archive.ts';

const DATABASE = 'homeserver';
const log = pino({ level: process.env.LOG_LEVEL === 'debug' ? 'debug' : 'warn' });

/** A connection to the embedded cluster: the running server's socket, or a PostgreSQL started here. */
async function embeddedConnection(config: Config, forRestore: boolean): Promise<{ connection: object; release: () => Promise<void> }> {
  const holder = dataDirHolder(config.dataDir);
  if (holder) {
    if (forRestore) throw new StartupError(`the homeserver (pid ${holder}) is running on DATA_DIR ${config.dataDir}: stop it before restoring`);
    const running = readPidFile(path.join(config.dataDir, 'pg'));
    if (!running || !alive(running.pid)) throw new StartupError(`the homeserver (pid ${holder}) holds DATA_DIR ${config.dataDir} but its PostgreSQL is not running; try again in a moment`);
    return { connection: { host: running.socketDir, port: 5432, user: 'postgres', database: DATABASE }, release: async () => {} };
  }
  if (!fs.existsSync(path.join(config.dataDir, 'pg', 'PG_VERSION')) && !forRestore) {
    throw new StartupError(`DATA_DIR ${config.dataDir} holds no database (no ${config.dataDir}/pg): nothing to back up`);
  }
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const unlock = lockDataDir(config.dataDir); // no server may start on it meanwhile
  try {
    const pg = await startEmbeddedPostgres({ dataDir: config.dataDir });
    return { connection: pg.connection, release: async () => { await pg.stop(); unlock(); } };
  } catch (err) { unlock(); throw err; }
}

async function withDb<T>(db: Db, fn: (db: Db) => Promise<T>): Promise<T> {
  try { return await fn(db); } finally { await db.destroy(); }
}

async function backupDatabaseTo(config: Config, file: string): Promise<string> {
  if (config.databaseUrl) {
    const r = await withDb(connect(config.databaseUrl, { poolMax: 1, log }), (db) => backupDatabase(db, file));
    return `backed up ${r.rows} rows in ${r.tables} tables from DATABASE_URL`;
  }
  const target = await embeddedConnection(config, false);
  try {
    const r = await withDb(connect(target.connection, { poolMax: 1, log }), (db) => backupDatabase(db, file));
    return `backed up ${r.rows} rows in ${r.tables} tables from ${config.dataDir}/pg`;
  } finally { await target.release(); }
}

/** The database first (one snapshot), then the media files and the signing key file, into one archive. */
async function backup(config: Config, file: string): Promise<string> {
  const dump = `${file}.database-${process.pid}.gz`;
  try {
    const said = await backupDatabaseTo(config, dump);
    const manifest = await writeArchive(file, dump, config.dataDir, signingKeyFile(config.dataDir));
    const extra = [`${manifest.mediaFiles} media files`, ...(manifest.signingKeyPath ? [`the signing key file ${manifest.signingKeyPath}`] : [])];
    return `${said}, ${extra.join(', ')} to ${file}`;
  } finally { fs.rmSync(dump, { force: true }); }
}

/** An archive (database, media, signing key) or, from older versions, a bare database dump. */
async function restore(config: Config, file: string): Promise<string> {
  if (!fs.existsSync(file)) throw new StartupError(`${file} does not exist`);
  if (!isArchive(file)) return restoreDatabaseFrom(config, file, file);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'super-server-restore-'));
  try {
    // The whole archive is read (and must end with its manifest) before anything is restored.
    const archive = await openArchive(file, work);
    const said = await restoreDatabaseFrom(config, archive.databaseFile, file);
    const files = await restoreFiles(file, archive.manifest, archive.keyFile, config.dataDir, signingKeyFile(config.dataDir));
    return files.length ? `${said}; ${files.join(' and ')} into ${config.dataDir}` : said;
  } finally { fs.rmSync(work, { recursive: true, force: true }); }
}

async function restoreDatabaseFrom(config: Config, file: string, named: string): Promise<string> {
  if (config.databaseUrl) {
    return withDb(connect(config.databaseUrl, { poolMax: 1, log }), async (db) => {
      if (!(await isEmptyDatabase(db))) throw new StartupError('DATABASE_URL names a database that is not empty: restore into a new, empty database (createdb), then point DATABASE_URL at it');
      const r = await restoreDatabase(db, file, log);
      return `restored ${r.rows} rows in ${r.tables} tables from ${named} into DATABASE_URL`;
    });
  }
  const target = await embeddedConnection(config, true);
  try {
    // Into a database of its own first; only a complete restore replaces the current one.
    const admin = connect({ ...(target.connection as object), database: 'postgres' }, { poolMax: 1, log });
    const staging = `${DATABASE}_restore`;
    const r = await withDb(admin, async (adm) => {
      await adm.raw(`DROP DATABASE IF EXISTS ${staging} WITH (FORCE)`);
      await adm.raw(`CREATE DATABASE ${staging}`);
      try {
        const result = await withDb(connect({ ...(target.connection as object), database: staging }, { poolMax: 1, log }), (db) => restoreDatabase(db, file, log));
        await adm.raw(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`);
        await adm.raw(`ALTER DATABASE ${staging} RENAME TO ${DATABASE}`);
        return result;
      } catch (err) {
        await adm.raw(`DROP DATABASE IF EXISTS ${staging} WITH (FORCE)`).catch(() => {});
        throw err;
      }
    });
    return `restored ${r.rows} rows in ${r.tables} tables from ${named} into ${config.dataDir}/pg`;
  } finally { await target.release(); }
}

async function run(): Promise<void> {
  const [command, arg] = process.argv.slice(2);
  const config = loadConfig();
  let message: string;
  if (command === 'backup') {
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
    message = await backup(config, path.resolve(arg ?? `super-server-${stamp}.backup.tar`));
  } else if (command === 'restore') {
    if (!arg) throw new StartupError('usage: npm run restore -- <backup file>');
    message = await restore(config, path.resolve(arg));
  } else {
    throw new StartupError('usage: backup/cli.ts backup [file] | restore <file>');
  }
  process.stdout.write(`${message}\n`);
}

run().then(() => process.exit(0), (err) => {
  const msg = err instanceof StartupError ? err.message : `${process.argv[2]} failed: ${`${(err as Error).message ?? err}`.split('\n')[0]}`;
  process.stderr.write(`super-server: ${msg}\n`);
  process.exit(1);
});
