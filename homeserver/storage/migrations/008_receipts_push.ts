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

    -- Notifying push actions: one row per (user, event) whose push rules said "notify". Rows stay
    -- after a receipt (counts are the rows after the user's receipt), so /notifications can tell
    -- read from unread.
    CREATE TABLE event_push_actions (
      user_id     TEXT NOT NULL,
      stream_pos  BIGINT NOT NULL,               -- the event's stream position (unique per event)
      room_id     TEXT NOT NULL,
      event_id    TEXT NOT NULL,
      thread_id   TEXT NOT NULL,                 -- 'main' or the thread root's event id
      highlight   BOOLEAN NOT NULL,
      actions     TEXT,                          -- the rule's actions as JSON; NULL means ["notify"]
      ts          BIGINT NOT NULL,               -- the event's origin_server_ts
      unread      BOOLEAN NOT NULL DEFAULT TRUE, -- counts as unread in the room (false: the invitee's own invite)
      PRIMARY KEY (user_id, stream_pos)          -- /notifications and pushers page by it
    );
    -- Unread counts: the user's rows in one room after their receipt.
    CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_pos);

    -- Push evaluation runs after an event's commit; each worker process keeps here the position up
    -- to which every event it wrote is evaluated. A row whose heartbeat stopped (a crashed worker)
    -- is taken over by another worker, which evaluates again every event after its position
    -- (idempotent: the primary key above), so a crash loses no counts of committed events.
    CREATE TABLE push_progress (
      instance      TEXT PRIMARY KEY,
      upto          BIGINT NOT NULL,
      heartbeat_ts  BIGINT NOT NULL
    );
  `);
}
