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
  /** issue 9 (mod9): the admin who quarantined it (never served again); null when not. */
  quarantinedBy: string | null;
  safeFromQuarantine: boolean;
}

/** issue 9 (mod9): a user's media usage (Synapse's statistics/users/media). */
export interface MediaUsage {
  user_id: string;
  displayname: string | null;
  media_count: number;
  media_length: number;
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
  quarantined_by: string | null; safe_from_quarantine: boolean;
}

const toMedia = (r: RawMedia): MediaRow => ({
  mediaId: r.media_id, uploader: r.uploader, createdTs: r.created_ts, uploadedTs: r.uploaded_ts, unusedExpiresTs: r.unused_expires_ts,
  contentType: r.content_type, uploadName: r.upload_name, size: r.size, sha256: r.sha256, authenticated: r.authenticated,
  quarantinedBy: r.quarantined_by ?? null, safeFromQuarantine: r.safe_from_quarantine ?? false,
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

  // ---- issue 9 (mod9): media admin ---------------------------------------------------------

  /** Quarantines these ids (those marked safe excepted); returns the ids changed. */
  async quarantine(mediaIds: string[], by: string): Promise<string[]> {
    if (!mediaIds.length) return [];
    const { rows } = await this.db.raw<{ rows: Array<{ media_id: string }> }>(
      'UPDATE media SET quarantined_by = ? WHERE media_id = ANY(?) AND quarantined_by IS NULL AND NOT safe_from_quarantine RETURNING media_id', [by, mediaIds]);
    return rows.map((r) => r.media_id);
  }

  async quarantineUploader(uploader: string, by: string): Promise<string[]> {
    const { rows } = await this.db.raw<{ rows: Array<{ media_id: string }> }>(
      'UPDATE media SET quarantined_by = ? WHERE uploader = ? AND quarantined_by IS NULL AND NOT safe_from_quarantine RETURNING media_id', [by, uploader]);
    return rows.map((r) => r.media_id);
  }

  async unquarantine(mediaId: string): Promise<boolean> {
    const { rowCount } = await this.db.raw<{ rowCount: number }>('UPDATE media SET quarantined_by = NULL WHERE media_id = ?', [mediaId]);
    return rowCount === 1;
  }

  async setSafe(mediaId: string, safe: boolean): Promise<boolean> {
    const { rowCount } = await this.db.raw<{ rowCount: number }>('UPDATE media SET safe_from_quarantine = ? WHERE media_id = ?', [safe, mediaId]);
    return rowCount === 1;
  }

  /** A user's media, newest first. */
  async mediaOf(uploader: string, from: number, limit: number): Promise<{ rows: MediaRow[]; total: number }> {
    const { rows } = await this.db.raw<{ rows: Array<RawMedia & { total: number }> }>(
      `SELECT *, count(*) OVER ()::int AS total FROM media WHERE uploader = ? AND uploaded_ts IS NOT NULL
       ORDER BY created_ts DESC, media_id OFFSET ? LIMIT ?`, [uploader, from, limit]);
    return { rows: rows.map(toMedia), total: rows[0]?.total ?? 0 };
  }

  /** Ids of media matching: by uploader, or created before a time (larger than a size), never the safe ones for the latter. */
  async idsToDelete(q: { uploader?: string; beforeTs?: number; sizeGt?: number }): Promise<string[]> {
    if (q.uploader !== undefined) {
      const { rows } = await this.db.raw<{ rows: Array<{ media_id: string }> }>('SELECT media_id FROM media WHERE uploader = ?', [q.uploader]);
      return rows.map((r) => r.media_id);
    }
    const { rows } = await this.db.raw<{ rows: Array<{ media_id: string }> }>(
      `SELECT media_id FROM media WHERE created_ts < ? AND coalesce(size, 0) > ? AND NOT safe_from_quarantine`, [q.beforeTs ?? 0, q.sizeGt ?? 0]);
    return rows.map((r) => r.media_id);
  }

  /**
   * Deletes media rows (one transaction) and the thumbnails of bytes no other row shares; returns
   * the ids deleted and the storage keys now unused (content sha256s, thumbnail keys).
   */
  async deleteMedia(mediaIds: string[]): Promise<{ deleted: string[]; unusedContent: string[]; unusedThumbnails: string[] }> {
    if (!mediaIds.length) return { deleted: [], unusedContent: [], unusedThumbnails: [] };
    return this.db.transaction(async (trx) => {
      const { rows } = await trx.raw<{ rows: Array<{ media_id: string; sha256: string | null }> }>(
        'DELETE FROM media WHERE media_id = ANY(?) RETURNING media_id, sha256', [mediaIds]);
      const shas = [...new Set(rows.map((r) => r.sha256).filter((x): x is string => !!x))];
      const still = new Set((await trx.raw<{ rows: Array<{ sha256: string }> }>('SELECT DISTINCT sha256 FROM media WHERE sha256 = ANY(?)', [shas])).rows.map((r) => r.sha256));
      const unused = shas.filter((s) => !still.has(s));
      const thumbs = (await trx.raw<{ rows: Array<{ storage_key: string }> }>(
        'DELETE FROM media_thumbnails WHERE source_sha256 = ANY(?) RETURNING storage_key', [unused])).rows.map((r) => r.storage_key);
      return { deleted: rows.map((r) => r.media_id), unusedContent: unused, unusedThumbnails: thumbs };
    });
  }

  /** Media usage per uploader (Synapse's statistics/users/media), paged and ordered. */
  async usage(q: { from: number; limit: number; orderBy: 'user_id' | 'displayname' | 'media_length' | 'media_count'; dir: 'f' | 'b'; fromTs?: number; untilTs?: number; term?: string }): Promise<{ users: MediaUsage[]; total: number }> {
    const conds = ['m.uploaded_ts IS NOT NULL'];
    const params: Array<string | number> = [];
    if (q.fromTs !== undefined) { conds.push('m.created_ts >= ?'); params.push(q.fromTs); }
    if (q.untilTs !== undefined) { conds.push('m.created_ts <= ?'); params.push(q.untilTs); }
    const having = q.term ? 'WHERE strpos(lower(u.user_id), ?) > 0 OR strpos(lower(coalesce(u.displayname, \'\')), ?) > 0' : '';
    if (q.term) params.push(q.term.toLowerCase(), q.term.toLowerCase());
    const dir = q.dir === 'b' ? 'DESC' : 'ASC';
    const { rows } = await this.db.raw<{ rows: Array<MediaUsage & { total: number }> }>(
      `WITH u AS (
         SELECT m.uploader AS user_id, p.displayname, count(*)::int AS media_count, coalesce(sum(m.size), 0)::bigint AS media_length
         FROM media m LEFT JOIN profiles p ON p.user_id = m.uploader
         WHERE ${conds.join(' AND ')} GROUP BY m.uploader, p.displayname)
       SELECT u.*, count(*) OVER ()::int AS total FROM u ${having}
       ORDER BY ${q.orderBy} ${dir} NULLS LAST, user_id ${dir} OFFSET ? LIMIT ?`, [...params, q.from, q.limit]);
    return { users: rows.map(({ total: _t, ...u }) => ({ ...u, media_length: Number(u.media_length) })), total: rows[0]?.total ?? 0 };
  }
}
