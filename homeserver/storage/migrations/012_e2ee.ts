import type { Knex } from 'knex';

/**
 * Issue 8, deliverable 1: end-to-end encryption, server side. Owned by homeserver/e2ee/: only its
 * store files run SQL on these tables. Positions (to-device, device lists) come from the one
 * stream sequence (stream_positions), as receipts' do.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- A device's identity keys as uploaded and self-signed (canonical JSON, signatures of others kept apart).
    CREATE TABLE e2ee_device_keys (
      user_id     TEXT NOT NULL,
      device_id   TEXT NOT NULL,
      key_json    TEXT NOT NULL,
      PRIMARY KEY (user_id, device_id)
    );
    -- Unclaimed one-time keys; a claim deletes the row it hands out (each key goes out once).
    CREATE TABLE e2ee_one_time_keys (
      user_id     TEXT NOT NULL,
      device_id   TEXT NOT NULL,
      algorithm   TEXT NOT NULL,
      key_id      TEXT NOT NULL,
      key_json    TEXT NOT NULL,            -- the key: a JSON string or a signed object
      PRIMARY KEY (user_id, device_id, algorithm, key_id)
    );
    -- The one fallback key per device and algorithm; used once a claim found no one-time key.
    CREATE TABLE e2ee_fallback_keys (
      user_id     TEXT NOT NULL,
      device_id   TEXT NOT NULL,
      algorithm   TEXT NOT NULL,
      key_id      TEXT NOT NULL,
      key_json    TEXT NOT NULL,
      used        BOOLEAN NOT NULL DEFAULT FALSE,
      PRIMARY KEY (user_id, device_id, algorithm)
    );
    -- Cross-signing keys: master, self_signing, user_signing (the latest of each per user).
    CREATE TABLE e2ee_cross_signing_keys (
      user_id     TEXT NOT NULL,
      key_type    TEXT NOT NULL,
      public_key  TEXT NOT NULL,
      key_json    TEXT NOT NULL,
      PRIMARY KEY (user_id, key_type)
    );
    -- Signatures uploaded by /keys/signatures/upload: signer's key over a target device or cross-signing key.
    CREATE TABLE e2ee_signatures (
      signer_user_id  TEXT NOT NULL,
      signer_key_id   TEXT NOT NULL,          -- e.g. ed25519:<self-signing public key>
      target_user_id  TEXT NOT NULL,
      target_key_id   TEXT NOT NULL,          -- a device id or a cross-signing public key
      signature       TEXT NOT NULL,
      PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
    );
    -- Whose keys changed at which position; only_to: a change only that user sees (their user-signing signatures).
    CREATE TABLE e2ee_device_list_changes (
      stream_pos  BIGINT NOT NULL,
      user_id     TEXT NOT NULL,
      only_to     TEXT,
      PRIMARY KEY (stream_pos, user_id)
    );
    CREATE INDEX e2ee_device_list_changes_user ON e2ee_device_list_changes (user_id, stream_pos);
    -- Pending to-device messages, deleted once the device syncs past them; one per device and position.
    CREATE TABLE e2ee_to_device (
      user_id     TEXT NOT NULL,
      device_id   TEXT NOT NULL,
      stream_pos  BIGINT NOT NULL,
      sender      TEXT NOT NULL,
      type        TEXT NOT NULL,
      content     TEXT NOT NULL,
      PRIMARY KEY (user_id, device_id, stream_pos)
    );
    -- sendToDevice transaction ids seen per sending device (a retry is answered without sending again).
    CREATE TABLE e2ee_to_device_txns (
      user_id     TEXT NOT NULL,
      device_id   TEXT NOT NULL,
      txn_id      TEXT NOT NULL,
      created_ts  BIGINT NOT NULL,
      PRIMARY KEY (user_id, device_id, txn_id)
    );
    -- Server-side key backup versions; deleted ones keep their number (a version is never reused).
    CREATE TABLE e2ee_backup_versions (
      user_id     TEXT NOT NULL,
      version     BIGINT NOT NULL,
      algorithm   TEXT NOT NULL,
      auth_data   TEXT NOT NULL,
      etag        BIGINT NOT NULL DEFAULT 0,
      deleted     BOOLEAN NOT NULL DEFAULT FALSE,
      PRIMARY KEY (user_id, version)
    );
    CREATE TABLE e2ee_backup_keys (
      user_id              TEXT NOT NULL,
      version              BIGINT NOT NULL,
      room_id              TEXT NOT NULL,
      session_id           TEXT NOT NULL,
      first_message_index  BIGINT NOT NULL,
      forwarded_count      BIGINT NOT NULL,
      is_verified          BOOLEAN NOT NULL,
      session_data         TEXT NOT NULL,
      PRIMARY KEY (user_id, version, room_id, session_id)
    );
  `);
}
