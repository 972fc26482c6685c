import type { Knex } from 'knex';

/**
 * The first schema. Strings that repeat in every row (event types, state keys) are interned to
 * numeric ids, as Dendrite does, so the timeline and the state tables stay small.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- The server's own signing keys; the newest not expired one signs.
    CREATE TABLE server_signing_keys (
      key_id      TEXT PRIMARY KEY,            -- 'ed25519:abc123'
      seed        TEXT NOT NULL,               -- unpadded base64 of the 32-byte ed25519 seed
      created_ts  BIGINT NOT NULL
    );

    -- One row per stream position handed out to any stream, so that a position is never reused.
    CREATE SEQUENCE stream_positions START 1;

    CREATE TABLE users (
      user_id        TEXT PRIMARY KEY,          -- '@alice:example.org'
      localpart      TEXT NOT NULL UNIQUE,
      password_hash  TEXT,                      -- argon2id; NULL: cannot log in with a password
      is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
      is_guest       BOOLEAN NOT NULL DEFAULT FALSE,
      deactivated    BOOLEAN NOT NULL DEFAULT FALSE,
      created_ts     BIGINT NOT NULL
    );

    CREATE TABLE profiles (
      user_id      TEXT PRIMARY KEY REFERENCES users(user_id),
      displayname  TEXT,
      avatar_url   TEXT
    );

    CREATE TABLE devices (
      user_id       TEXT NOT NULL REFERENCES users(user_id),
      device_id     TEXT NOT NULL,
      display_name  TEXT,
      last_seen_ts  BIGINT,
      last_seen_ip  TEXT,
      created_ts    BIGINT NOT NULL,
      PRIMARY KEY (user_id, device_id)
    );

    -- Tokens are stored as sha256 of the 256-bit random token: a database leak reveals no token.
    CREATE TABLE refresh_tokens (
      id          BIGSERIAL PRIMARY KEY,
      token_hash  BYTEA NOT NULL UNIQUE,
      user_id     TEXT NOT NULL,
      device_id   TEXT NOT NULL,
      created_ts  BIGINT NOT NULL
    );

    CREATE TABLE access_tokens (
      id                BIGSERIAL PRIMARY KEY,
      token_hash        BYTEA NOT NULL UNIQUE,
      user_id           TEXT NOT NULL,
      device_id         TEXT NOT NULL,
      expires_ts        BIGINT,                 -- NULL: never expires (client did not ask for refresh)
      refresh_token_id  BIGINT REFERENCES refresh_tokens(id) ON DELETE CASCADE,
      created_ts        BIGINT NOT NULL
    );
    CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

    CREATE TABLE registration_tokens (
      token          TEXT PRIMARY KEY,
      uses_allowed   INTEGER,                  -- NULL: unlimited
      pending        INTEGER NOT NULL DEFAULT 0,
      completed      INTEGER NOT NULL DEFAULT 0,
      expiry_time    BIGINT                    -- ms since epoch; NULL: never
    );

    -- User-interactive auth sessions: which stages are done, and the request they guard.
    CREATE TABLE uia_sessions (
      session_id   TEXT PRIMARY KEY,
      user_id      TEXT,
      completed    JSONB NOT NULL DEFAULT '[]',
      params       JSONB NOT NULL DEFAULT '{}',
      created_ts   BIGINT NOT NULL
    );

    -- Account data, global (room_id = '') and per room, including m.direct, tags and push rules.
    CREATE TABLE account_data (
      user_id      TEXT NOT NULL,
      room_id      TEXT NOT NULL DEFAULT '',
      type         TEXT NOT NULL,
      content      TEXT NOT NULL,              -- JSON
      stream_pos   BIGINT NOT NULL,
      PRIMARY KEY (user_id, room_id, type)
    );
    CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

    CREATE TABLE filters (
      user_id    TEXT NOT NULL,
      filter_id  BIGSERIAL,
      filter     TEXT NOT NULL,                -- JSON
      PRIMARY KEY (user_id, filter_id)
    );

    -- Interning tables.
    CREATE TABLE event_types (type_nid SERIAL PRIMARY KEY, type TEXT NOT NULL UNIQUE);
    CREATE TABLE state_keys (state_key_nid SERIAL PRIMARY KEY, state_key TEXT NOT NULL UNIQUE);

    CREATE TABLE rooms (
      room_nid      SERIAL PRIMARY KEY,
      room_id       TEXT NOT NULL UNIQUE,
      room_version  TEXT NOT NULL,
      creator       TEXT NOT NULL,
      published     BOOLEAN NOT NULL DEFAULT FALSE, -- listed in the public room directory
      state_group   BIGINT,                         -- the room's current state snapshot
      last_pos      BIGINT NOT NULL DEFAULT 0,      -- stream position of the room's newest event
      -- Forward extremities: the events no other event points at yet, the next one's prev_events.
      -- In the room's row, so the write that moves the head moves them in the same guarded UPDATE.
      extremities   TEXT[] NOT NULL DEFAULT '{}',
      depth         BIGINT NOT NULL DEFAULT 0,      -- the greatest depth among them
      created_ts    BIGINT NOT NULL
    );

    -- A snapshot of a room's state. A snapshot stores only its delta from prev_group, except every
    -- ~100th, which is full, so rebuilding a state walks at most 100 links.
    CREATE TABLE state_groups (
      state_group  BIGSERIAL PRIMARY KEY,
      room_nid     INTEGER NOT NULL,
      prev_group   BIGINT REFERENCES state_groups(state_group),  -- NULL: this group is full
      chain_len    INTEGER NOT NULL                 -- links since the last full group
    );
    CREATE TABLE state_group_entries (
      state_group    BIGINT NOT NULL,
      type_nid       INTEGER NOT NULL,
      state_key_nid  INTEGER NOT NULL,
      event_nid      BIGINT NOT NULL,
      PRIMARY KEY (state_group, type_nid, state_key_nid)
    );

    -- Every event, exactly as signed, with the fields we query in columns.
    CREATE TABLE events (
      event_nid        BIGSERIAL PRIMARY KEY,
      event_id         TEXT NOT NULL UNIQUE,
      room_nid         INTEGER NOT NULL,
      stream_pos       BIGINT NOT NULL,              -- global order of persistence (unique: one sequence)
      depth            BIGINT NOT NULL,
      type_nid         INTEGER NOT NULL,
      state_key_nid    INTEGER,                      -- NULL: not a state event
      sender           TEXT NOT NULL,
      origin_server_ts BIGINT NOT NULL,
      state_before     BIGINT NOT NULL,              -- state group before this event
      state_after      BIGINT NOT NULL,              -- = state_before unless a state event
      replaces_nid     BIGINT,                       -- state event this one replaced (prev_content)
      membership       TEXT,                         -- for m.room.member
      rel_type         TEXT,                         -- m.relates_to.rel_type
      relates_to       TEXT,                         -- m.relates_to.event_id
      redacts          TEXT,                         -- for m.room.redaction
      redacted_by      TEXT,                         -- event id of the redaction that applies
      outlier          BOOLEAN NOT NULL DEFAULT FALSE,
      rejected         BOOLEAN NOT NULL DEFAULT FALSE,
      txn_device       TEXT,                         -- device that sent it, for transaction_id
      txn_id           TEXT,
      prev_event_ids   TEXT[] NOT NULL,              -- the DAG edges, as in the JSON
      auth_event_nids  BIGINT[] NOT NULL,            -- the auth events, interned
      json             TEXT NOT NULL                 -- canonical JSON as signed
    );
    CREATE INDEX events_room_stream ON events (room_nid, stream_pos);
    CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
    CREATE INDEX events_redacts ON events (redacts) WHERE redacts IS NOT NULL;

    CREATE TABLE event_txns (
      user_id    TEXT NOT NULL,
      device_id  TEXT NOT NULL,
      txn_id     TEXT NOT NULL,
      event_id   TEXT NOT NULL,
      PRIMARY KEY (user_id, device_id, txn_id)
    );

    -- Aborts a write whose room head moved since it was read (another worker wrote first):
    -- serialization_failure, so the writer reads again and retries.
    CREATE FUNCTION room_head_moved() RETURNS INTEGER LANGUAGE plpgsql AS $fn$
    BEGIN
      RAISE EXCEPTION 'room head moved' USING ERRCODE = '40001';
    END
    $fn$;

    CREATE TABLE current_state (
      room_nid       INTEGER NOT NULL,
      type_nid       INTEGER NOT NULL,
      state_key_nid  INTEGER NOT NULL,
      event_nid      BIGINT NOT NULL,
      PRIMARY KEY (room_nid, type_nid, state_key_nid)
    );

    -- Each user's latest membership of each room: what /sync reads first.
    CREATE TABLE room_memberships (
      user_id     TEXT NOT NULL,
      room_nid    INTEGER NOT NULL,
      membership  TEXT NOT NULL,
      event_nid   BIGINT NOT NULL,
      stream_pos  BIGINT NOT NULL,
      sender      TEXT NOT NULL,
      forgotten   BOOLEAN NOT NULL DEFAULT FALSE,
      PRIMARY KEY (user_id, room_nid)
    );
    CREATE INDEX room_memberships_room ON room_memberships (room_nid, membership);
    CREATE INDEX room_memberships_stream ON room_memberships (user_id, stream_pos);

    CREATE TABLE room_aliases (
      alias    TEXT PRIMARY KEY,
      room_id  TEXT NOT NULL,
      creator  TEXT NOT NULL
    );
    CREATE INDEX room_aliases_room ON room_aliases (room_id);

    -- Full-text index of message bodies, names and topics for server-side /search.
    CREATE TABLE event_search (
      event_nid  BIGINT PRIMARY KEY,
      room_nid   INTEGER NOT NULL,
      key        TEXT NOT NULL,                      -- content.body, content.name or content.topic
      vector     TSVECTOR NOT NULL
    );
    CREATE INDEX event_search_vector ON event_search USING GIN (vector);
  `);
}

export async function down(): Promise<void> {
  throw new Error('the initial schema cannot be rolled back');
}
