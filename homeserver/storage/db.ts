import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { Logger } from 'pino';
import * as m001 from './migrations/001_initial.ts';
import * as m002 from './migrations/002_membership_history.ts';
import * as m003 from './migrations/003_input_limits.ts';
import * as m005 from './migrations/005_request_paths.ts';
// issue 6, receipts-push helper
import * as m008 from './migrations/008_receipts_push.ts';
import * as m009 from './migrations/009_pushers.ts'; // issue 6: pushers
import * as m010 from './migrations/010_ratelimit_overrides.ts'; // issue 7: rate limits (limits7)
import * as m011 from './migrations/011_abuse_limits.ts'; // issue 7: abuse limits
import * as m012 from './migrations/012_e2ee.ts'; // issue 8: end-to-end encryption
import * as m013 from './migrations/013_media.ts'; // issue 8: media repository
import * as m014 from './migrations/014_admin_roles.ts'; // issue 9: roles, audit log, account states (roles9)
import * as m015 from './migrations/015_moderation.ts'; // issue 9: moderation (mod9)
import * as m016 from './migrations/016_room_dag.ts'; // issue 10: the room engine as a DAG
import * as m017 from './migrations/017_federation.ts'; // issue 11: federation (fed11)
import * as m018 from './migrations/018_friends.ts'; // issue 13: friends
import * as m021 from './migrations/021_user_restrictions.ts'; // issue 12: user restrictions with reason and expiry (userbans12)

export type Db = Knex;
/** Bindings of a raw query. */
export type Bindings = Knex.RawBinding[];

// BIGINT columns hold stream positions and timestamps, all far below 2^53: read them as numbers.
pg.types.setTypeParser(20, (v: string) => Number(v));

const MIGRATIONS: Array<{ name: string; up: (k: Knex) => Promise<void> }> = [
  { name: '001_initial', up: m001.up },
  { name: '002_membership_history', up: m002.up },
  { name: '003_input_limits', up: m003.up },
  { name: '005_request_paths', up: m005.up },
  { name: '008_receipts_push', up: m008.up }, // issue 6, receipts-push helper
  { name: '009_pushers', up: m009.up }, // issue 6: pushers
  { name: '010_ratelimit_overrides', up: m010.up }, // issue 7: rate limits (limits7)
  { name: '011_abuse_limits', up: m011.up }, // issue 7: abuse limits
  { name: '012_e2ee', up: m012.up }, // issue 8: end-to-end encryption
  { name: '013_media', up: m013.up }, // issue 8: media repository
  { name: '014_admin_roles', up: m014.up }, // issue 9: roles, audit log, account states (roles9)
  { name: '015_moderation', up: m015.up }, // issue 9: moderation (mod9)
  { name: '016_room_dag', up: m016.up }, // issue 10: the room engine as a DAG
  { name: '017_federation', up: m017.up }, // issue 11: federation (fed11)
  { name: '018_friends', up: m018.up }, // issue 13: friends
  { name: '021_user_restrictions', up: m021.up }, // issue 12: user restrictions with reason and expiry (userbans12)
];

export interface ConnectOptions {
  poolMax?: number;
  /**
   * How long a query waits for a connection (and a new connection for the server) before failing;
   * a failure of that kind answers 503 (isDatabaseUnavailable), not a 60-70 s hang.
   */
  timeoutMs?: number;
  /** Client-side bound on one query, so a database that stopped answering fails requests too. 0: none. */
  queryTimeoutMs?: number;
  /** knex's warnings and errors go to the JSON log, not to the console as plain text. */
  log?: Logger;
}

export function connect(connection: string | Knex.PgConnectionConfig, opts: ConnectOptions = {}): Db {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const base: Knex.PgConnectionConfig = typeof connection === 'string' ? { connectionString: connection } : { ...connection };
  const log = opts.log;
  return knexFactory({
    client: 'pg',
    connection: {
      ...base,
      connectionTimeoutMillis: timeoutMs,
      ...(opts.queryTimeoutMs ? { query_timeout: opts.queryTimeoutMs } : {}),
    } as Knex.PgConnectionConfig,
    pool: { min: 1, max: opts.poolMax ?? 20, createTimeoutMillis: timeoutMs, propagateCreateError: true },
    acquireConnectionTimeout: timeoutMs,
    ...(log ? {
      log: {
        warn: (m: unknown) => log.warn({ component: 'knex', detail: String(m).split('\n')[0] }, 'database warning'),
        error: (m: unknown) => log.error({ component: 'knex', detail: String(m).split('\n')[0] }, 'database error'),
        deprecate: (m: unknown) => log.debug({ component: 'knex', detail: String(m) }, 'knex deprecation'),
        debug: (m: unknown) => log.debug({ component: 'knex', detail: m }, 'knex debug'),
      },
    } : {}),
  });
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
  '57P01', '57P02', '57P03', // admin_shutdown, crash_shutdown, cannot_connect_now
  '08000', '08001', '08003', '08004', '08006', // connection exceptions
  '53300', // too_many_connections
]);
const UNAVAILABLE_MESSAGES = /Connection terminated|Timeout acquiring a connection|timeout exceeded when trying to connect|Query read timeout|not queryable|connection error|Client was closed/i;

/** True when an error says the database cannot be reached right now (answer 503, not 500). */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err as { code?: string; name?: string; message?: string; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e !== 'object') return false;
    if (e.code && UNAVAILABLE_CODES.has(e.code)) return true;
    if (e.name === 'KnexTimeoutError') return true;
    if (e.message && UNAVAILABLE_MESSAGES.test(e.message)) return true;
  }
  return false;
}

/** One round trip to the database within `timeoutMs`: the readiness check. */
export async function databaseReady(db: Db, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      db.raw('SELECT 1').then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
  } catch { return false; } finally { clearTimeout(timer); }
}

/** The names of every migration this code knows, in order (a backup records which ones it holds). */
export const MIGRATION_NAMES: readonly string[] = MIGRATIONS.map((m) => m.name);

/**
 * Runs the migrations not yet applied, under an advisory lock so that concurrent workers wait.
 * `only`: apply just these (restoring a backup made before later migrations existed).
 */
export async function migrate(db: Db, log: Logger, only?: ReadonlySet<string>): Promise<void> {
  await db.transaction(async (trx) => {
    await trx.raw('SELECT pg_advisory_xact_lock(7271001)');
    await trx.raw('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_ts BIGINT NOT NULL)');
    const done = new Set((await trx('schema_migrations').select('name')).map((r: { name: string }) => r.name));
    for (const m of MIGRATIONS) {
      if (done.has(m.name) || (only && !only.has(m.name))) continue;
      log.info({ migration: m.name }, 'applying migration');
      await m.up(trx);
      await trx('schema_migrations').insert({ name: m.name, applied_ts: Date.now() });
    }
  });
}
