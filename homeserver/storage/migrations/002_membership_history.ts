import type { Knex } from 'knex';

/**
 * Membership history for history visibility. The events table already holds every m.room.member
 * event (membership, state key, stream position); this index answers "when did this user last
 * join this room" with one probe, which decides `shared` history (spec: the user joined at some
 * point after the event), and "what was their first membership change after that".
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE INDEX events_membership_history ON events (room_nid, state_key_nid, stream_pos)
      WHERE membership IS NOT NULL AND NOT outlier AND NOT rejected;
  `);
}
