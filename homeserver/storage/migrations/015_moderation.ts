import type { Knex } from 'knex';

/**
 * Issue 9 (moderation): blocked rooms, room deletions and their status, event reports, IP / CIDR
 * bans, server notice rooms, user redaction jobs, invite counters; media quarantine columns.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Rooms nobody may join (Synapse's blocked_rooms). Survives the room's purge.
    CREATE TABLE moderation_room_blocks (
      room_id     TEXT PRIMARY KEY,
      blocked_by  TEXT NOT NULL,                 -- the admin who blocked it
      blocked_ts  BIGINT NOT NULL
    );

    -- Room deletions (DELETE /_synapse/admin/v2/rooms/{roomId}) and their progress, for polling.
    CREATE TABLE moderation_room_deletions (
      delete_id     TEXT PRIMARY KEY,
      room_id       TEXT NOT NULL,
      requester     TEXT NOT NULL,
      status        TEXT NOT NULL,               -- scheduled | active | complete | failed
      params        TEXT NOT NULL,               -- JSON: block, purge, new_room_user_id, room_name, message
      result        TEXT,                        -- JSON: kicked_users, failed_to_kick_users, local_aliases, new_room_id
      error         TEXT,
      created_ts    BIGINT NOT NULL,
      finished_ts   BIGINT
    );
    CREATE INDEX moderation_room_deletions_room ON moderation_room_deletions (room_id, created_ts);

    -- Reports by users about events, rooms and users; resolved ones leave the triage queue.
    CREATE TABLE moderation_reports (
      id            BIGSERIAL PRIMARY KEY,
      kind          TEXT NOT NULL,               -- event | room | user
      reporter      TEXT NOT NULL,
      room_id       TEXT,
      event_id      TEXT,
      target_user   TEXT,                        -- the reported user (kind user) or the event's sender
      reason        TEXT,
      score         INTEGER,
      received_ts   BIGINT NOT NULL,
      resolved_by   TEXT,
      resolved_ts   BIGINT
    );
    CREATE INDEX moderation_reports_open ON moderation_reports (received_ts) WHERE resolved_ts IS NULL;

    -- Addresses and CIDR blocks refused before any work is done.
    CREATE TABLE moderation_ip_bans (
      id          BIGSERIAL PRIMARY KEY,
      cidr        TEXT NOT NULL UNIQUE,           -- normalised: 10.0.0.0/8, 2001:db8::/32, 192.0.2.1/32
      reason      TEXT,
      created_by  TEXT NOT NULL,
      created_ts  BIGINT NOT NULL,
      expires_ts  BIGINT                          -- NULL: never
    );

    -- The server notices room of each user (one per user, as Synapse).
    CREATE TABLE moderation_notice_rooms (
      user_id   TEXT PRIMARY KEY,
      room_id   TEXT NOT NULL
    );

    -- "Redact all recent events of a user" jobs (POST /_synapse/admin/v1/user/{userId}/redact).
    CREATE TABLE moderation_redactions (
      redact_id     TEXT PRIMARY KEY,
      user_id       TEXT NOT NULL,
      requester     TEXT NOT NULL,
      status        TEXT NOT NULL,               -- scheduled | active | complete | failed
      failed        TEXT NOT NULL DEFAULT '{}',  -- JSON: event id → why it was not redacted
      created_ts    BIGINT NOT NULL
    );

    -- Invites a user sent, for the per-user invite limit (one row per invite, pruned by age).
    CREATE TABLE moderation_invites_sent (
      user_id  TEXT NOT NULL,
      sent_ts  BIGINT NOT NULL
    );
    CREATE INDEX moderation_invites_sent_user ON moderation_invites_sent (user_id, sent_ts);

    -- Quarantined media is never served again (Synapse's quarantined_by).
    ALTER TABLE media ADD COLUMN quarantined_by TEXT;
    ALTER TABLE media ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX media_created ON media (created_ts);
    -- The admin room list's columns of each room (the room engine's table, homeserver/rooms/
    -- admin-store.ts): refreshed when the room's current state snapshot moved since, so listing
    -- 10,000 rooms sorts one narrow table instead of reading every room's state.
    CREATE TABLE room_list_stats (
      room_nid              INTEGER PRIMARY KEY,
      room_id               TEXT NOT NULL,
      version               TEXT NOT NULL,     -- never change: copied so a page needs no join
      creator               TEXT NOT NULL,
      state_group           BIGINT,            -- the snapshot these values were read at
      name                  TEXT,
      canonical_alias       TEXT,
      joined_members        INTEGER NOT NULL,
      joined_local_members  INTEGER NOT NULL,
      encryption            TEXT,
      federatable           BOOLEAN NOT NULL,
      join_rules            TEXT,
      guest_access          TEXT,
      history_visibility    TEXT,
      state_events          INTEGER NOT NULL,
      room_type             TEXT
    );
    -- The orders synapse-admin lists by most: a page is read in index order, not sorted.
    CREATE INDEX room_list_stats_name ON room_list_stats (name, room_id COLLATE "C");
    CREATE INDEX room_list_stats_alias ON room_list_stats (canonical_alias, room_id COLLATE "C");
    CREATE INDEX room_list_stats_members ON room_list_stats (joined_members, room_id COLLATE "C");
    CREATE INDEX room_list_stats_room ON room_list_stats (room_id COLLATE "C");
    -- A purge finds the snapshots of its room (the room engine's table; issue 9 purges rooms).
    CREATE INDEX state_groups_room ON state_groups (room_nid);
  `);
}
