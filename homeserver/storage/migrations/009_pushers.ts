import type { Knex } from 'knex';

/**
 * Issue 6, deliverable 2: pushers (POST /pushers/set) and how far the HTTP pusher sender got.
 * Owned by homeserver/pushers/: only its store.ts runs SQL on this table.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE pushers (
      id                  BIGSERIAL PRIMARY KEY,
      user_id             TEXT NOT NULL,
      -- The device (session) that set it: logging that device out removes the pusher (as Synapse).
      device_id           TEXT,
      kind                TEXT NOT NULL,            -- 'http'
      app_id              TEXT NOT NULL,
      pushkey             TEXT NOT NULL,
      pushkey_ts          BIGINT NOT NULL,          -- ms since epoch: when the pushkey was last set
      app_display_name    TEXT NOT NULL,
      device_display_name TEXT NOT NULL,
      profile_tag         TEXT,
      lang                TEXT NOT NULL,
      data                TEXT NOT NULL,            -- the client's data object, JSON text (url included)
      -- The stream position of the last notification handed to the gateway (or skipped): the sender
      -- resumes after it, so a restart neither loses nor repeats a notify.
      sent_up_to          BIGINT NOT NULL,
      failing_since       BIGINT,                   -- ms since epoch of the first failure in a row; NULL when healthy
      UNIQUE (app_id, pushkey, user_id)
    );
    CREATE INDEX pushers_user ON pushers (user_id);
  `);
}
