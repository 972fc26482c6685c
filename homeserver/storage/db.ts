import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { Logger } from 'pino';
import * as m001 from './migrations/001_initial.ts';
import * as m005 from './migrations/005_request_paths.ts';

export type Db = Knex;
/** Bindings of a raw query. */
export type Bindings = Knex.RawBinding[];

// BIGINT columns hold stream positions and timestamps, all far below 2^53: read them as numbers.
pg.types.setTypeParser(20, (v: string) => Number(v));

const MIGRATIONS: Array<{ name: string; up: (k: Knex) => Promise<void> }> = [
  { name: '001_initial', up: m001.up },
  { name: '005_request_paths', up: m005.up },
];

export function connect(connection: string | Knex.PgConnectionConfig, poolMax = 20): Db {
  return knexFactory({ client: 'pg', connection, pool: { min: 1, max: poolMax } });
}

/** Runs the migrations not yet applied, under an advisory lock so that concurrent workers wait. */
export async function migrate(db: Db, log: Logger): Promise<void> {
  await db.transaction(async (trx) => {
    await trx.raw('SELECT pg_advisory_xact_lock(7271001)');
    await trx.raw('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_ts BIGINT NOT NULL)');
    const done = new Set((await trx('schema_migrations').select('name')).map((r: { name: string }) => r.name));
    for (const m of MIGRATIONS) {
      if (done.has(m.name)) continue;
      log.info({ migration: m.name }, 'applying migration');
      await m.up(trx);
      await trx('schema_migrations').insert({ name: m.name, applied_ts: Date.now() });
    }
  });
}
