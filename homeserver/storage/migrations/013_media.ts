import type { Knex } from 'knex';

/**
 * Issue 8, deliverable 2: the media repository's metadata. The bytes live behind MediaStorage
 * (homeserver/media/storage.ts), keyed by their sha256, so identical uploads share one file.
 * Owned by homeserver/media/: only its store.ts runs SQL on these tables.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE media (
      media_id        TEXT PRIMARY KEY,        -- the opaque id of mxc://<server>/<media_id>
      uploader        TEXT NOT NULL,           -- user id
      created_ts      BIGINT NOT NULL,         -- ms since epoch: POST /upload or /create
      -- Set when the bytes are stored; NULL while an id from /create waits for its PUT.
      uploaded_ts     BIGINT,
      -- An id from /create that is never uploaded to stops being usable at this time (ms).
      unused_expires_ts BIGINT,
      content_type    TEXT,                    -- as the uploader declared it
      upload_name     TEXT,                    -- the filename query parameter
      size            BIGINT,                  -- bytes
      sha256          TEXT,                    -- hex; the storage key of the bytes
      -- Served by the deprecated unauthenticated /_matrix/media/v3/download only when false: media
      -- uploaded after the freeze (all media this server makes) is authenticated, as Synapse's
      -- enable_authenticated_media marks it.
      authenticated   BOOLEAN NOT NULL DEFAULT TRUE
    );
    CREATE INDEX media_uploader ON media (uploader) WHERE uploaded_ts IS NOT NULL;
    CREATE INDEX media_pending ON media (uploader, unused_expires_ts) WHERE uploaded_ts IS NULL;

    -- Thumbnails are made from bytes, so they are keyed by the source's sha256: deduplicated media
    -- shares its thumbnails too.
    CREATE TABLE media_thumbnails (
      source_sha256   TEXT NOT NULL,
      width           INTEGER NOT NULL,        -- the box asked for (one of the standard sizes)
      height          INTEGER NOT NULL,
      method          TEXT NOT NULL,           -- 'crop' | 'scale'
      animated        BOOLEAN NOT NULL,
      content_type    TEXT NOT NULL,           -- of the thumbnail
      size            BIGINT NOT NULL,
      storage_key     TEXT NOT NULL,
      created_ts      BIGINT NOT NULL,
      PRIMARY KEY (source_sha256, width, height, method, animated)
    );

    -- GET /preview_url answers, cached (Synapse keeps them an hour).
    CREATE TABLE media_url_previews (
      url             TEXT PRIMARY KEY,
      og              TEXT NOT NULL,           -- the answer, JSON text
      fetched_ts      BIGINT NOT NULL,
      expires_ts      BIGINT NOT NULL
    );
  `);
}
