// The media repository's SQL: media, media_thumbnails, media_url_previews (migration 013).
import type { Db } from '../storage/db.ts';

export interface MediaRow {
  mediaId: string;
  uploader: string;
  createdTs: number;
  uploadedTs: number | null;
  unusedExpiresTs: number | null;
  contentType: string | null;
  uploadName: string | null;
  size: number | null;
  sha256: string | null;
  authenticated: boolean;
}

export interface ThumbnailRow {
  width: number;
  height: number;
  method: 'crop' | 'scale';
  animated: boolean;
  contentType: string;
  size: number;
  storageKey: string;
}

interface RawMedia {
  media_id: string; uploader: string; created_ts: number; uploaded_ts: number | null; unused_expires_ts: number | null;
  content_type: string | null; upload_name: string | null; size: number | null; sha256: string | null; authenticated: boolean;
}

const toMedia = (r: RawMedia): MediaRow => ({
  mediaId: r.media_id, uploader: r.uploader, createdTs: r.created_ts, uploadedTs: r.uploaded_ts, unusedExpiresTs: r.unused_expires_ts,
  contentType: r.content_type, uploadName: r.upload_name, size: r.size, sha256: r.sha256, authenticated: r.authenticated,
});

export interface StoredContent {
  contentType: string | null;
  uploadName: string | null;
  size: number;
  sha256: string;
}

export class MediaStore {
  constructor(private readonly db: Db) {}

  async get(mediaId: string): Promise<MediaRow | undefined> {
    const { rows } = await this.db.raw<{ rows: RawMedia[] }>('SELECT * FROM media WHERE media_id = ?', [mediaId]);
    return rows[0] ? toMedia(rows[0]) : undefined;
  }

  /** A finished upload (POST /upload): one row, its bytes already stored. */
  async insertUploaded(mediaId: string, uploader: string, content: StoredContent, now: number): Promise<void> {
    await this.db.raw(
      `INSERT INTO media (media_id, uploader, created_ts, uploaded_ts, content_type, upload_name, size, sha256)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [mediaId, uploader, now, now, content.contentType, content.uploadName, content.size, content.sha256],
    );
  }

  /** An id reserved by POST /create; expired reservations of the same user are dropped first. */
  async insertPending(mediaId: string, uploader: string, now: number, expiresTs: number): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx.raw('DELETE FROM media WHERE uploader = ? AND uploaded_ts IS NULL AND unused_expires_ts <= ?', [uploader, now]);
      await trx.raw('INSERT INTO media (media_id, uploader, created_ts, unused_expires_ts) VALUES (?, ?, ?, ?)', [mediaId, uploader, now, expiresTs]);
    });
  }

  /** Drops every reservation that expired unused; returns how many. */
  async deleteExpiredPending(now: number): Promise<number> {
    const { rowCount } = await this.db.raw<{ rowCount: number }>('DELETE FROM media WHERE uploaded_ts IS NULL AND unused_expires_ts <= ?', [now]);
    return rowCount;
  }

  /** Reservations of the user that can still be uploaded to. */
  async countPending(uploader: string, now: number): Promise<number> {
    const { rows } = await this.db.raw<{ rows: Array<{ n: number }> }>(
      'SELECT count(*)::int AS n FROM media WHERE uploader = ? AND uploaded_ts IS NULL AND unused_expires_ts > ?', [uploader, now]);
    return rows[0]?.n ?? 0;
  }

  /**
   * Fills a reserved id (PUT /upload/{server}/{id}). False when it was filled meanwhile or expired:
   * the guarded UPDATE makes a second PUT lose even when two race.
   */
  async completePending(mediaId: string, content: StoredContent, now: number): Promise<boolean> {
    const { rowCount } = await this.db.raw<{ rowCount: number }>(
      `UPDATE media SET uploaded_ts = ?, content_type = ?, upload_name = ?, size = ?, sha256 = ?, unused_expires_ts = NULL
       WHERE media_id = ? AND uploaded_ts IS NULL AND unused_expires_ts > ?`,
      [now, content.contentType, content.uploadName, content.size, content.sha256, mediaId, now],
    );
    return rowCount === 1;
  }

  /** Bytes the user has stored (each upload counts, even when its bytes are shared with another). */
  async bytesUploadedBy(uploader: string): Promise<number> {
    const { rows } = await this.db.raw<{ rows: Array<{ total: number }> }>(
      'SELECT coalesce(sum(size), 0)::bigint AS total FROM media WHERE uploader = ? AND uploaded_ts IS NOT NULL', [uploader]);
    return Number(rows[0]?.total ?? 0);
  }

  async thumbnail(sha256: string, width: number, height: number, method: string, animated: boolean): Promise<ThumbnailRow | undefined> {
    const { rows } = await this.db.raw<{ rows: Array<{ width: number; height: number; method: 'crop' | 'scale'; animated: boolean; content_type: string; size: number; storage_key: string }> }>(
      `SELECT width, height, method, animated, content_type, size, storage_key FROM media_thumbnails
       WHERE source_sha256 = ? AND width = ? AND height = ? AND method = ? AND animated = ?`,
      [sha256, width, height, method, animated],
    );
    const r = rows[0];
    return r ? { width: r.width, height: r.height, method: r.method, animated: r.animated, contentType: r.content_type, size: r.size, storageKey: r.storage_key } : undefined;
  }

  async insertThumbnail(sha256: string, t: ThumbnailRow, now: number): Promise<void> {
    await this.db.raw(
      `INSERT INTO media_thumbnails (source_sha256, width, height, method, animated, content_type, size, storage_key, created_ts)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      [sha256, t.width, t.height, t.method, t.animated, t.contentType, t.size, t.storageKey, now],
    );
  }

  async cachedPreview(url: string, now: number): Promise<string | undefined> {
    const { rows } = await this.db.raw<{ rows: Array<{ og: string }> }>('SELECT og FROM media_url_previews WHERE url = ? AND expires_ts > ?', [url, now]);
    return rows[0]?.og;
  }

  async cachePreview(url: string, og: string, now: number, expiresTs: number): Promise<void> {
    await this.db.raw(
      `INSERT INTO media_url_previews (url, og, fetched_ts, expires_ts) VALUES (?, ?, ?, ?)
       ON CONFLICT (url) DO UPDATE SET og = EXCLUDED.og, fetched_ts = EXCLUDED.fetched_ts, expires_ts = EXCLUDED.expires_ts`,
      [url, og, now, expiresTs],
    );
  }
}
