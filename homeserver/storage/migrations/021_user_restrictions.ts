import type { Knex } from 'knex';

/**
 * Issue 12 (userbans12): the restrictions server admins put on an account — suspended, locked,
 * shadow-banned — with a reason, who and when, and an optional expiry. Owned by accounts/ (which
 * owns and enforces the account states): a row exists exactly while the matching flag of `users`
 * is set, and both change in one transaction (accounts/store.ts).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE user_restrictions (
      user_id     TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
      kind        TEXT NOT NULL CHECK (kind IN ('suspended', 'locked', 'shadow_banned')),
      reason      TEXT,                          -- NULL: none given (Synapse's endpoints give none)
      created_by  TEXT,                          -- the admin; NULL: set before restrictions were recorded
      created_ts  BIGINT,                        -- NULL: set before restrictions were recorded
      expires_ts  BIGINT,                        -- NULL: until lifted by hand
      logged_out  BOOLEAN NOT NULL DEFAULT FALSE, -- a ban: the lock also ended every session
      PRIMARY KEY (user_id, kind)
    );
    -- The expiry sweep reads the soonest first; the Bans page lists the newest first.
    CREATE INDEX user_restrictions_expiry ON user_restrictions (expires_ts) WHERE expires_ts IS NOT NULL;
    CREATE INDEX user_restrictions_recent ON user_restrictions (created_ts DESC NULLS LAST, user_id, kind);

    -- The states set before this table existed: recorded without reason, author or expiry.
    INSERT INTO user_restrictions (user_id, kind)
      SELECT user_id, 'suspended' FROM users WHERE suspended
      UNION ALL SELECT user_id, 'locked' FROM users WHERE locked
      UNION ALL SELECT user_id, 'shadow_banned' FROM users WHERE shadow_banned;
  `);
}
