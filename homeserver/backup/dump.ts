// A logical backup that needs no pg_dump: the embedded PostgreSQL 18 ships none, and a system
// pg_dump older than the server refuses to run (the old deploy/backup.sh wrote 0 bytes). Every
// table of the schema is read in ONE repeatable-read snapshot (consistent while the server runs)
// as JSON rows, plus every sequence's position. The schema itself is not copied: the backup names
// the migrations it was made under, and restore applies exactly those, then loads the rows, in
// one transaction; the server applies any newer migrations on its next start.
//
// File: gzip'd lines, each a JSON array — ["header", {...}], ["table", name, columns],
// ["row", {...}] …, ["sequence", name, last_value|null], ["end", {tables, rows}].
import fs from 'node:fs';
import readline from 'node:readline';
import { once } from 'node:events';
import { createGunzip, createGzip } from 'node:zlib';
import type { Logger } from 'pino';
import { MIGRATION_NAMES, migrate, type Db } from '../storage/db.ts';

const FORMAT = 'super-server-backup';
const VERSION = 1;
const BATCH = 1000;

export interface BackupSummary { tables: number; rows: number }

type Q = Pick<Db, 'raw'>;

/** Tables of the current schema, parents before children (foreign keys), then by name. */
async function tablesInLoadOrder(q: Q): Promise<string[]> {
  const tables = (await q.raw(`SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename`)).rows
    .map((r: { tablename: string }) => r.tablename) as string[];
  const fks = (await q.raw(`
    SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE c.contype = 'f' AND n.nspname = current_schema()`)).rows as Array<{ child: string; parent: string }>;
  const parents = new Map<string, Set<string>>(tables.map((t) => [t, new Set()]));
  for (const { child, parent } of fks) if (child !== parent) parents.get(child)?.add(parent);
  const ordered: string[] = [];
  const placed = new Set<string>();
  while (ordered.length < tables.length) {
    const next = tables.find((t) => !placed.has(t) && [...parents.get(t)!].every((p) => placed.has(p) || !parents.has(p)))
      ?? tables.find((t) => !placed.has(t))!; // a cycle: load order cannot satisfy it; try anyway
    ordered.push(next);
    placed.add(next);
  }
  return ordered;
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Columns whose values are stored (generated columns are recomputed on load). */
async function storedColumns(q: Q, table: string): Promise<string[]> {
  return (await q.raw(`
    SELECT column_name FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = ? AND is_generated = 'NEVER'
    ORDER BY ordinal_position`, [table])).rows.map((r: { column_name: string }) => r.column_name);
}

/** The primary key's columns, so rows come out (and go back) in key order: self-references load. */
async function keyColumns(q: Q, table: string): Promise<string[]> {
  return (await q.raw(`
    SELECT a.attname FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = ?::regclass AND i.indisprimary
    ORDER BY array_position(i.indkey, a.attnum)`, [ident(table)])).rows.map((r: { attname: string }) => r.attname);
}

/** Writes a backup of the database to `file`. */
export async function backupDatabase(db: Db, file: string): Promise<BackupSummary> {
  const tmp = `${file}.partial`;
  const gzip = createGzip();
  const out = fs.createWriteStream(tmp, { mode: 0o600 });
  gzip.pipe(out);
  const write = async (value: unknown[] | string) => {
    if (!gzip.write(`${typeof value === 'string' ? value : JSON.stringify(value)}\n`)) await once(gzip, 'drain');
  };
  let rows = 0;
  let tables: string[] = [];
  try {
    await db.transaction(async (trx) => {
      await trx.raw('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const migrations = (await trx.raw('SELECT name FROM schema_migrations ORDER BY name')).rows.map((r: { name: string }) => r.name);
      tables = await tablesInLoadOrder(trx);
      await write(['header', { format: FORMAT, version: VERSION, created: new Date().toISOString(), migrations, tables }]);
      for (const table of tables) {
        const columns = await storedColumns(trx, table);
        const keys = await keyColumns(trx, table);
        await write(['table', table, columns]);
        const list = columns.map(ident).join(', ');
        await trx.raw(`DECLARE dump NO SCROLL CURSOR FOR
          SELECT json_build_array('row', (SELECT row_to_json(r) FROM (SELECT ${list}) r))::text AS line
          FROM ${ident(table)} t ${keys.length ? `ORDER BY ${keys.map(ident).join(', ')}` : ''}`);
        for (;;) {
          const batch = (await trx.raw(`FETCH ${BATCH} FROM dump`)).rows as Array<{ line: string }>;
          for (const r of batch) await write(r.line);
          rows += batch.length;
          if (batch.length < BATCH) break;
        }
        await trx.raw('CLOSE dump');
      }
      const sequences = (await trx.raw(`SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = current_schema() ORDER BY sequencename`)).rows;
      for (const s of sequences as Array<{ sequencename: string; last_value: number | null }>) await write(['sequence', s.sequencename, s.last_value]);
      await write(['end', { tables: tables.length, rows }]);
    });
    gzip.end();
    await once(out, 'close');
    fs.renameSync(tmp, file); // a crash mid-backup never leaves a file that looks complete
  } catch (err) {
    gzip.destroy();
    out.destroy();
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  return { tables: tables.length, rows };
}

/** True if the schema holds no tables (restore only goes into an empty database). */
export async function isEmptyDatabase(db: Db): Promise<boolean> {
  return (await db.raw(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = current_schema()`)).rows[0].n === 0;
}

/**
 * Restores a backup into an empty database, in one transaction: the backup's migrations, then its
 * rows, then its sequence positions. A damaged or incomplete file restores nothing.
 */
export async function restoreDatabase(db: Db, file: string, log: Logger): Promise<BackupSummary> {
  let rows = 0;
  let tables = 0;
  await db.transaction(async (trx) => {
    let table: { name: string; columns: string[] } | undefined;
    let batch: unknown[] = [];
    let ended = false;
    const flush = async () => {
      if (!table || !batch.length) return;
      const list = table.columns.map(ident).join(', ');
      await trx.raw(`INSERT INTO ${ident(table.name)} (${list}) OVERRIDING SYSTEM VALUE
        SELECT ${list} FROM json_populate_recordset(NULL::${ident(table.name)}, ?::json)`, [JSON.stringify(batch)]);
      rows += batch.length;
      batch = [];
    };
    let first = true;
    // Made here, just before it is iterated: lines read while the transaction was starting would be lost.
    const source = fs.createReadStream(file);
    const gunzip = createGunzip();
    const lines = readline.createInterface({ input: source.pipe(gunzip), crlfDelay: Infinity });
    // readline does not see its input's errors: a truncated or corrupt file would hang the loop.
    let streamError: Error | undefined;
    for (const s of [source, gunzip]) s.once('error', (e) => { streamError ??= e; lines.close(); });
    for await (const text of lines) {
      if (!text) continue;
      const line = JSON.parse(text) as [string, ...unknown[]];
      if (first) {
        first = false;
        const header = line[1] as { format?: string; version?: number; migrations?: string[] };
        if (line[0] !== 'header' || header.format !== FORMAT) throw new Error(`${file} is not a super-server backup`);
        if (header.version !== VERSION) throw new Error(`${file} has backup format version ${header.version}; this code reads ${VERSION}`);
        const unknown = (header.migrations ?? []).filter((m) => !MIGRATION_NAMES.includes(m));
        if (unknown.length) throw new Error(`${file} was made by a newer version (migrations ${unknown.join(', ')}): restore it with that version`);
        await migrate(trx, log, new Set(header.migrations));
        // Migrations may seed rows (defaults); the backup's rows replace them.
        const existing = await tablesInLoadOrder(trx);
        if (existing.length) await trx.raw(`TRUNCATE ${existing.map(ident).join(', ')} RESTART IDENTITY CASCADE`);
        continue;
      }
      switch (line[0]) {
        case 'table':
          await flush();
          table = { name: line[1] as string, columns: line[2] as string[] };
          tables++;
          break;
        case 'row':
          batch.push(line[1]);
          if (batch.length >= BATCH) await flush();
          break;
        case 'sequence':
          await flush();
          // Never used: back to its own start (1 for most, negative for a descending one such as backfill_positions).
          if (line[2] === null) {
            await trx.raw(
              'SELECT setval(?::regclass, s.start_value, false) FROM pg_sequences s WHERE s.schemaname = current_schema() AND s.sequencename = ?',
              [ident(line[1] as string), line[1] as string],
            );
          }
          else await trx.raw('SELECT setval(?::regclass, ?, true)', [ident(line[1] as string), line[2] as number]);
          break;
        case 'end': {
          await flush();
          const summary = line[1] as BackupSummary;
          if (summary.rows !== rows || summary.tables !== tables) throw new Error(`${file} is inconsistent: it announces ${summary.rows} rows in ${summary.tables} tables, holds ${rows} in ${tables}`);
          ended = true;
          break;
        }
        default: throw new Error(`${file}: unexpected line ${text.slice(0, 80)}`);
      }
    }
    if (streamError) throw new Error(`${file} cannot be read (${streamError.message}): nothing was restored`);
    if (first) throw new Error(`${file} is empty`);
    if (!ended) throw new Error(`${file} is incomplete (no end marker): nothing was restored`);
  });
  return { tables, rows };
}
