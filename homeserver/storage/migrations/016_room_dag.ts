import type { Knex } from 'knex';

/**
 * Issue 10: the room engine as a DAG. Owned by homeserver/rooms/ (dag-store.ts, outbox-store.ts).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Passed the auth checks against its auth events and the state before it, but not against the
    -- room's current state: stored (later events may cite it), never shown to clients, never a
    -- forward extremity (spec: soft failure).
    ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;

    -- Topological order for /messages, /context and backfill: depth, then stream position.
    CREATE INDEX events_room_topo ON events (room_nid, depth, stream_pos);

    -- Positions of history inserted below what the room already shows (backfill) and of outliers:
    -- negative and decreasing (as Synapse's backfill stream orderings), so no /sync ever reads
    -- them as new and the live stream keeps its order.
    CREATE SEQUENCE backfill_positions INCREMENT BY -1 START WITH -1 MAXVALUE -1;

    -- Gaps in a room's DAG: an event stored without its state (an outlier) because one of its
    -- prev events is not known. A backfill point for the federation layer; when the missing event
    -- arrives, the waiting event is persisted with its state.
    CREATE TABLE room_backfill_points (
      room_nid           INTEGER NOT NULL,
      missing_event_id   TEXT NOT NULL,   -- a prev event we do not have
      waiting_event_nid  BIGINT NOT NULL, -- the outlier that cites it
      PRIMARY KEY (missing_event_id, waiting_event_nid)
    );
    CREATE INDEX room_backfill_points_room ON room_backfill_points (room_nid);

    -- The outbox: EDUs other capabilities hand to the federation sender, at positions of the event
    -- stream (so a reader takes them, with the events, only up to the persisted-up-to position).
    CREATE TABLE outbox_edus (
      stream_pos   BIGINT PRIMARY KEY,
      destination  TEXT,                 -- NULL: every server sharing a room with the origin's users
      edu_type     TEXT NOT NULL,
      content      TEXT NOT NULL,        -- JSON
      created_ts   BIGINT NOT NULL
    );
    -- Each outbox consumer's saved position: everything up to it was handed off.
    CREATE TABLE outbox_positions (
      consumer    TEXT PRIMARY KEY,
      stream_pos  BIGINT NOT NULL
    );
  `);
}
