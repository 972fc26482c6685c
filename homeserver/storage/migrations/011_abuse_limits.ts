import type { Knex } from 'knex';

/**
 * Issue 7, deliverable 2 (abuse limits): e-mail addresses bound to accounts (one account per
 * address), the e-mail validation sessions that prove them, and what bounds the user-interactive
 * auth sessions (expiry by age). Owned by homeserver/accounts/: only its store files run SQL here.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- A third-party identifier bound to an account. The primary key is what makes one address
    -- belong to one account at most (M_THREEPID_IN_USE).
    CREATE TABLE user_threepids (
      medium        TEXT NOT NULL,              -- 'email'
      address       TEXT NOT NULL,              -- canonical form: trimmed, lower-cased
      user_id       TEXT NOT NULL REFERENCES users(user_id),
      validated_at  BIGINT NOT NULL,            -- ms since epoch: when the address proved it is the user's
      added_at      BIGINT NOT NULL,            -- ms since epoch: when it was bound to the account
      PRIMARY KEY (medium, address)
    );
    CREATE INDEX user_threepids_user ON user_threepids (user_id);

    -- One validation in progress: a token sent to an address, proven when the link is followed.
    -- Unauthenticated clients create these, so they expire (expires_ts) and are capped in number.
    CREATE TABLE threepid_validation_sessions (
      session_id     TEXT PRIMARY KEY,          -- the sid the client polls with
      medium         TEXT NOT NULL,
      address        TEXT NOT NULL,
      client_secret  TEXT NOT NULL,
      purpose        TEXT NOT NULL,             -- 'register', 'add' (to an account) or 'password' (reset)
      token_hash     BYTEA NOT NULL,            -- SHA-256 of the token in the link (the token is never stored)
      send_attempt   INTEGER NOT NULL,          -- the client's send_attempt of the last mail sent
      validated_ts   BIGINT,                    -- ms since epoch the link was followed; NULL until then
      created_ts     BIGINT NOT NULL,
      expires_ts     BIGINT NOT NULL
    );
    -- A request with the same secret, address and purpose finds its session (send_attempt idempotency).
    CREATE UNIQUE INDEX threepid_validation_by_secret ON threepid_validation_sessions (client_secret, medium, address, purpose);
    CREATE INDEX threepid_validation_by_address ON threepid_validation_sessions (medium, address);
    CREATE INDEX threepid_validation_expiry ON threepid_validation_sessions (expires_ts);

    -- UIA sessions are trimmed by age (expiry, and the cap keeps the newest).
    CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
  `);
}
