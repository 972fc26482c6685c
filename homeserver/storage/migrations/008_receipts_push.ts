import type { Knex } from 'knex';

/**
 * Issue 6: read receipts (homeserver/receipts) and the push actions of notifications
 * (homeserver/push): what unread counts, /notifications and pushers read.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- The latest receipt of each (room, user, type, thread). A receipt only moves forward: one for an
    -- older event than the stored one is accepted and changes nothing (as Synapse).
    CREATE TABLE receipts (
      room_id       TEXT NOT NULL,
      user_id       TEXT NOT NULL,
      receipt_type  TEXT NOT NULL,              -- m.read | m.read.private
      thread_id     TEXT NOT NULL DEFAULT '',   -- '' unthreaded; 'main' or a thread root's event id
      event_id      TEXT NOT NULL,
      event_pos     BIGINT NOT NULL,            -- the event's stream position: what "forward" compares
      ts            BIGINT NOT NULL,            -- ms since epoch, when the receipt was sent
      stream_pos    BIGINT NOT NULL,            -- position (stream_positions) of its last change: /sync's receipts stream
      PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
    );
    -- /sync: the receipts of the user's rooms changed in (since, to].
    CREATE INDEX receipts_room_stream ON receipts (room_id, stream_pos);

    -- Push actions, stored compactly (a room of 1,000 members must not cost 1,000 rows per message).
    -- push_events: per event, the actions most of the room's members got (when they notify): every
    -- member joined at the event (push_members) except its sender gets them, unless
    -- event_push_actions holds a row of their own for the event.
    CREATE TABLE push_events (
      room_id     TEXT NOT NULL,
      stream_pos  BIGINT NOT NULL,               -- the event's stream position
      event_id    TEXT NOT NULL,
      thread_id   TEXT NOT NULL,                 -- 'main' or the thread root's event id
      sender      TEXT NOT NULL,                 -- never notified of their own event
      highlight   BOOLEAN NOT NULL,
      actions     TEXT,                          -- JSON; NULL means ["notify"]
      ts          BIGINT NOT NULL,               -- the event's origin_server_ts
      PRIMARY KEY (room_id, stream_pos)
    );

    -- The members whose actions differ from their room's shared ones (mentions, keywords, muted
    -- rooms, the invitee of an invite): one row per (user, event), notifying or not.
    CREATE TABLE event_push_actions (
      user_id     TEXT NOT NULL,
      stream_pos  BIGINT NOT NULL,
      room_id     TEXT NOT NULL,
      event_id    TEXT NOT NULL,
      thread_id   TEXT NOT NULL,
      notify      BOOLEAN NOT NULL,              -- false: this member is not notified (the shared actions do not apply)
      highlight   BOOLEAN NOT NULL,
      actions     TEXT,                          -- JSON; NULL means ["notify"] (when notify)
      ts          BIGINT NOT NULL,
      unread      BOOLEAN NOT NULL DEFAULT TRUE, -- counts as unread in the room (false: the invitee's own invite)
      PRIMARY KEY (user_id, stream_pos)          -- /notifications and pushers page by it
    );
    CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_pos);

    -- Since when a user is joined to a room (and until when, after leaving), as push evaluation saw
    -- the member events: whose the shared actions of push_events are.
    CREATE TABLE push_members (
      room_id      TEXT NOT NULL,
      user_id      TEXT NOT NULL,
      joined_pos   BIGINT NOT NULL,              -- events after it are theirs
      left_pos     BIGINT,                       -- and before it, once they left
      changed_pos  BIGINT NOT NULL,              -- the member event that set this row (0: seen joined, position unknown)
      PRIMARY KEY (room_id, user_id)
    );
    CREATE INDEX push_members_user ON push_members (user_id);

    -- Push evaluation runs after an event's commit; each worker process keeps here the position up
    -- to which every event it wrote is evaluated. A row whose heartbeat stopped (a crashed worker)
    -- is taken over by another worker, which evaluates again every event after its position
    -- (idempotent: every insert above keeps what is there), so a crash loses no counts of committed events.
    CREATE TABLE push_progress (
      instance      TEXT PRIMARY KEY,
      upto          BIGINT NOT NULL,
      heartbeat_ts  BIGINT NOT NULL
    );
  `);
}
