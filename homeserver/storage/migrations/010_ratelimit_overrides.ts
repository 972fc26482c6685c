import type { Knex } from 'knex';

/**
 * Issue 7 (limits7): per-user rate-limit overrides, as Synapse's admin API `override_ratelimit`.
 * Owned by homeserver/limits/: only its store.ts runs SQL on this table.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE ratelimit_overrides (
      user_id             TEXT PRIMARY KEY,
      -- Replace the per-user limiters' refill and burst for this user; 0 and 0: not limited.
      messages_per_second DOUBLE PRECISION NOT NULL,
      burst_count         INTEGER NOT NULL,
      updated_ts          BIGINT NOT NULL           -- ms since epoch
    );
  `);
}
