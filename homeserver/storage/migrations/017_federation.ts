import type { Knex } from 'knex';

/**
 * Issue 11 (fed11): federation without the DAG. Owned by federation/ (its store files), except
 * the column added to server_signing_keys (homeserver/server/store.ts owns that table).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Our own keys that were replaced stay published as old_verify_keys, with when they stopped.
    ALTER TABLE server_signing_keys ADD COLUMN expired_ts BIGINT;

    -- Other servers' signing keys, as fetched (directly or through a notary), with their validity.
    CREATE TABLE federation_server_keys (
      server_name     TEXT NOT NULL,
      key_id          TEXT NOT NULL,           -- e.g. ed25519:a_1
      public_key      TEXT NOT NULL,           -- unpadded base64
      valid_until_ts  BIGINT NOT NULL,         -- of the response that carried it (ms)
      expired_ts      BIGINT,                  -- set for an old_verify_keys entry: unusable for anything signed after it
      response_json   TEXT NOT NULL,           -- the whole signed key response, served again by our notary
      fetched_ts      BIGINT NOT NULL,
      PRIMARY KEY (server_name, key_id)
    );

    -- /send transactions received: a retried transaction is answered as the first time, not applied again.
    CREATE TABLE federation_inbound_txns (
      origin          TEXT NOT NULL,
      txn_id          TEXT NOT NULL,
      response_json   TEXT NOT NULL,
      received_ts     BIGINT NOT NULL,
      PRIMARY KEY (origin, txn_id)
    );
    CREATE INDEX federation_inbound_txns_age ON federation_inbound_txns (received_ts);

    -- What waits to be sent to each destination (PDUs and EDUs), oldest first.
    CREATE TABLE federation_outbound_queue (
      id              BIGSERIAL PRIMARY KEY,
      destination     TEXT NOT NULL,
      kind            TEXT NOT NULL CHECK (kind IN ('pdu', 'edu')),
      body_json       TEXT NOT NULL,
      created_ts      BIGINT NOT NULL
    );
    CREATE INDEX federation_outbound_queue_dest ON federation_outbound_queue (destination, id);

    -- The durable retry schedule: a destination that failed is tried again at retry_at, with back-off.
    CREATE TABLE federation_destinations (
      destination     TEXT PRIMARY KEY,
      failures        INTEGER NOT NULL DEFAULT 0,
      retry_at        BIGINT NOT NULL DEFAULT 0, -- ms; 0: no back-off
      last_error      TEXT,
      last_success_ts BIGINT
    );
  `);
}
