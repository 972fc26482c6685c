import type { Knex } from 'knex';

/**
 * Issue 13: friends. Owned by homeserver/friends/: only its store.ts runs SQL on these tables.
 * A relation between two users is two rows, one per side, written in one transaction, so each
 * user's list (and what /sync tells them) is one index range.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE friend_links (
      user_id     TEXT NOT NULL,             -- whose row (the list it belongs to)
      other_id    TEXT NOT NULL,             -- the other user
      -- 'friend' | 'outgoing' (user asked other) | 'incoming' (other asked user) | 'none' (was
      -- something: kept so an incremental /sync can say it is gone)
      state       TEXT NOT NULL CHECK (state IN ('friend', 'outgoing', 'incoming', 'none')),
      blocked     BOOLEAN NOT NULL DEFAULT FALSE, -- user blocks other (never shown to other)
      message     TEXT,                      -- the request's optional note
      updated_ts  BIGINT NOT NULL,           -- ms since epoch of the last change
      stream_pos  BIGINT NOT NULL,           -- position (account data stream) of the last change
      PRIMARY KEY (user_id, other_id)
    );
    CREATE INDEX friend_links_changes ON friend_links (user_id, stream_pos);

    CREATE TABLE friend_settings (
      user_id            TEXT PRIMARY KEY,
      only_friends_dm    BOOLEAN NOT NULL DEFAULT FALSE, -- refuse DM invites from non-friends
      stream_pos         BIGINT NOT NULL
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP TABLE IF EXISTS friend_settings; DROP TABLE IF EXISTS friend_links');
}
