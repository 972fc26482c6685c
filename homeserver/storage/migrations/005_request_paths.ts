import type { Knex } from 'knex';

/**
 * Issue 5, finding 17: what keeps request paths from growing with the data behind them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Logins and "is this name taken" match localparts case-insensitively: lower(localpart) = lower(?)
    -- must be an index probe, not a scan of every account.
    CREATE INDEX users_lower_localpart ON users (lower(localpart));

    -- Profile changes waiting to reach the member event of every room the user is in. The PUT
    -- writes the profile and this row in one transaction and answers; a worker loop sends the
    -- member events and deletes the row, and picks up what is left at start (after a crash too).
    CREATE TABLE profile_propagations (
      user_id        TEXT PRIMARY KEY,
      generation     BIGINT NOT NULL DEFAULT 1,   -- bumped by each change: a row is done only for the generation sent
      queued_ts      BIGINT NOT NULL,
      claimed_until  BIGINT NOT NULL DEFAULT 0    -- ms since epoch: a worker is sending it until then
    );

    -- Event JSON as jsonb, or NULL when jsonb cannot hold it (a NUL, a lone surrogate): one such
    -- event must not make a query over many rooms fail.
    CREATE FUNCTION jsonb_or_null(t TEXT) RETURNS JSONB LANGUAGE plpgsql IMMUTABLE AS $fn$
    BEGIN
      RETURN t::jsonb;
    EXCEPTION WHEN others THEN
      RETURN NULL;
    END
    $fn$;

    -- The published room directory reads only published rooms.
    CREATE INDEX rooms_published ON rooms (room_id COLLATE "C") WHERE published;
  `);
}
