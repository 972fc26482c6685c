// The media repository: uploads (direct and reserved-then-PUT), downloads, thumbnails, URL previews.
// Bytes are stored once per sha256 (MediaStorage); the media table maps each id to its bytes.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fsp from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { LruCache } from '../cache/lru.ts';
import type { BackgroundJob } from '../coordination/jobs.ts';
import { MatrixError, notFound } from '../http/errors.ts';
import type { MediaStorage } from './storage.ts';
import type { MediaRow, MediaStore, StoredContent, ThumbnailRow } from './store.ts';
import type { SpooledFile, UploadSpool } from './spool.ts';
import { tooLarge } from './spool.ts';
import { baseType } from './serving.ts';
import { THUMBNAILABLE_TYPES, inspect, keepsFrames, makeThumbnail, selectSize, type SourceImage, type ThumbnailMethod, type ThumbnailSize } from './thumbnails.ts';
import type { OpenGraph, UrlPreviewer } from './url-preview.ts';

/** An id from /create must be uploaded to within this (Synapse's unused_expiration_time). */
export const UNUSED_MEDIA_LIFETIME_MS = 24 * 60 * 60 * 1000;
/** Reserved, not yet uploaded ids one user may hold (Synapse's max_pending_media_uploads). */
export const MAX_PENDING_UPLOADS = 5;
/** Download waits for a reserved id's bytes: the spec's default, and a bound on what a client may ask. */
export const DEFAULT_DOWNLOAD_WAIT_MS = 20_000;
export const MAX_DOWNLOAD_WAIT_MS = 120_000;
/** A URL preview is answered from the cache for this long (Synapse keeps them an hour). */
const PREVIEW_CACHE_MS = 60 * 60 * 1000;
/** How often the background job drops reserved ids that expired unused. */
const EXPIRY_SWEEP_MS = 60 * 60 * 1000;
/** Another worker may complete an upload: a waiting download also looks at the database this often. */
const PENDING_POLL_MS = 1_000;

/** The spec's media-id grammar (content_repo.md, "Security considerations"). */
const MEDIA_ID = /^[A-Za-z0-9_-]{1,255}$/;
const SERVER_NAME = /^(?:[A-Za-z0-9.-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

export interface MediaConfig {
  serverName: string;
  maxUploadBytes: number;
  /** Bytes one user may store in all; 0: no quota. */
  quotaBytes: number;
}

export interface UploadRequest {
  uploader: string;
  body: IncomingMessage;
  contentType: string | null;
  fileName: string | null;
  /** Content-Length, when the client sent one. */
  declaredLength: number | undefined;
}

/** Bytes to send, with what describes them. */
export interface MediaContent {
  stream: Readable;
  contentType: string;
  size: number;
  fileName: string | null;
}

/** issue 11: media of other servers (federation/ implements it; media never imports federation). */
export interface RemoteMedia {
  download(serverName: string, mediaId: string, timeoutMs: number): Promise<MediaContent>;
  thumbnail(serverName: string, mediaId: string, req: { width: number; height: number; method: ThumbnailMethod; animated: boolean; timeoutMs: number }): Promise<MediaContent>;
}

export class MediaService {
  private readonly uploaded = new EventEmitter();
  private readonly generating = new Map<string, Promise<ThumbnailRow>>();
  /** Uploaded media never changes under its id: its row is kept (bounded) after the first read. */
  private readonly uploadedRows = new LruCache<string, MediaRow & { sha256: string }>(10_000);
  /** Likewise an image's size (by its bytes' sha256) and the thumbnails made of it (by storage key). */
  private readonly images = new LruCache<string, SourceImage>(10_000);
  private readonly thumbnails = new LruCache<string, ThumbnailRow>(10_000);
  /**
   * Tells every worker's waiting downloads that `mediaId` got its bytes (main.ts routes it through
   * the invalidation bus, which runs it here too). A worker that misses it finds out by polling.
   */
  announceUpload: (mediaId: string) => void = (mediaId) => this.uploadArrived(mediaId);
  /** issue 11: other servers' media, fetched over federation (set when federation runs; not cached here yet). */
  remote: RemoteMedia | undefined;

  constructor(
    private readonly store: MediaStore,
    private readonly storage: MediaStorage,
    private readonly spool: UploadSpool,
    private readonly config: MediaConfig,
    private readonly previewer: UrlPreviewer | undefined,
    private readonly log: Logger,
  ) {
    this.uploaded.setMaxListeners(0);
  }

  // ---- issue 9 (mod9): media admin (quarantine, delete, usage); routes in homeserver/moderation/.

  /** Set by the composition root: drops the media's cached row on every worker (the bus). */
  mediaChanged: (mediaIds: string[]) => void = (ids) => this.forgetRows(ids);

  forgetRows(mediaIds?: string[]): void {
    if (mediaIds === undefined) this.uploadedRows.clear();
    else for (const id of mediaIds) this.uploadedRows.delete(id);
  }

  /** Whether a local media id exists (404 otherwise), its row. */
  async adminGet(mediaId: string): Promise<MediaRow | undefined> {
    return this.store.get(mediaId);
  }

  async quarantine(mediaIds: string[], by: string): Promise<number> {
    const changed = await this.store.quarantine(mediaIds, by);
    if (changed.length) this.mediaChanged(changed);
    return changed.length;
  }

  async quarantineUploader(userId: string, by: string): Promise<number> {
    const changed = await this.store.quarantineUploader(userId, by);
    if (changed.length) this.mediaChanged(changed);
    return changed.length;
  }

  async unquarantine(mediaId: string): Promise<boolean> {
    const ok = await this.store.unquarantine(mediaId);
    this.mediaChanged([mediaId]);
    return ok;
  }

  setSafe(mediaId: string, safe: boolean): Promise<boolean> {
    return this.store.setSafe(mediaId, safe);
  }

  mediaOf(userId: string, from: number, limit: number): ReturnType<MediaStore['mediaOf']> {
    return this.store.mediaOf(userId, from, limit);
  }

  usage(q: Parameters<MediaStore['usage']>[0]): ReturnType<MediaStore['usage']> {
    return this.store.usage(q);
  }

  /** Deletes media (rows, then bytes and thumbnails nothing else uses); returns the ids deleted. */
  async deleteMedia(which: { ids: string[] } | { uploader: string } | { beforeTs: number; sizeGt: number }): Promise<string[]> {
    const ids = 'ids' in which ? which.ids : await this.store.idsToDelete('uploader' in which ? { uploader: which.uploader } : which);
    const { deleted, unusedContent, unusedThumbnails } = await this.store.deleteMedia(ids);
    if (deleted.length) this.mediaChanged(deleted);
    for (const sha of unusedContent) await this.storage.delete(contentKey(sha)).catch((err) => this.log.warn({ err, sha }, 'media bytes not deleted'));
    for (const key of unusedThumbnails) await this.storage.delete(key).catch((err) => this.log.warn({ err, key }, 'thumbnail not deleted'));
    return deleted;
  }

  mediaConfig(): { 'm.upload.size': number } {
    return { 'm.upload.size': this.config.maxUploadBytes };
  }

  /** POST /upload: the bytes are stored before the id exists, so the id is never half there. */
  async upload(u: UploadRequest): Promise<{ content_uri: string }> {
    const content = await this.receive(u);
    const mediaId = newMediaId();
    await this.store.insertUploaded(mediaId, u.uploader, content, Date.now());
    return { content_uri: this.mxc(mediaId) };
  }

  /** POST /create: an id to PUT the bytes to later. */
  async create(uploader: string): Promise<{ content_uri: string; unused_expires_at: number }> {
    const now = Date.now();
    if (await this.store.countPending(uploader, now) >= MAX_PENDING_UPLOADS) {
      throw new MatrixError(429, 'M_LIMIT_EXCEEDED', `At most ${MAX_PENDING_UPLOADS} media ids may wait for their upload at once`, { retry_after_ms: 60_000 });
    }
    const mediaId = newMediaId();
    const expires = now + UNUSED_MEDIA_LIFETIME_MS;
    await this.store.insertPending(mediaId, uploader, now, expires);
    return { content_uri: this.mxc(mediaId), unused_expires_at: expires };
  }

  /** PUT /upload/{serverName}/{mediaId}: fills an id from /create, once. */
  async uploadTo(serverName: string, mediaId: string, u: UploadRequest): Promise<void> {
    this.checkIds(serverName, mediaId);
    if (serverName !== this.config.serverName) throw notFound('Unknown media');
    const row = await this.store.get(mediaId);
    const usable = (r: MediaRow | undefined) => {
      if (!r) throw notFound('Unknown media');
      if (r.uploader !== u.uploader) throw new MatrixError(403, 'M_FORBIDDEN', 'This media id was created by another user');
      if (r.uploadedTs !== null) throw new MatrixError(409, 'M_CANNOT_OVERWRITE_MEDIA', 'Media has already been uploaded');
      if ((r.unusedExpiresTs ?? 0) <= Date.now()) throw notFound('The media id expired before it was uploaded to');
    };
    usable(row);
    const content = await this.receive(u);
    if (!(await this.store.completePending(mediaId, content, Date.now()))) {
      usable(await this.store.get(mediaId)); // says why: another PUT won, or it expired meanwhile
      throw notFound('Unknown media');
    }
    this.announceUpload(mediaId);
  }

  /** The background job (one worker runs it) that drops reserved ids expired unused, hourly. */
  expiryJob(): BackgroundJob {
    let timer: NodeJS.Timeout | undefined;
    const sweep = () => {
      this.store.deleteExpiredPending(Date.now()).then(
        (n) => { if (n) this.log.info({ dropped: n }, 'expired unused media ids dropped'); },
        (err) => this.log.warn({ err }, 'expired media id sweep failed'),
      );
    };
    return {
      start: () => { sweep(); timer = setInterval(sweep, EXPIRY_SWEEP_MS); timer.unref(); },
      stop: () => clearInterval(timer),
    };
  }

  /** Wakes this process's downloads waiting for `mediaId`. */
  uploadArrived(mediaId: string): void {
    this.uploaded.emit(mediaId);
  }

  /** Streams the body to a temp file (limits checked up front and while it streams), then stores it. */
  private async receive(u: UploadRequest): Promise<StoredContent> {
    const { maxUploadBytes, quotaBytes } = this.config;
    if (u.declaredLength !== undefined && u.declaredLength > maxUploadBytes) throw tooLarge(maxUploadBytes);
    const used = quotaBytes > 0 ? await this.store.bytesUploadedBy(u.uploader) : 0;
    const overQuota = (size: number) => {
      if (quotaBytes > 0 && used + size > quotaBytes) {
        // 403 as the spec's upload endpoint lists for "reached a quota", with the errcode Synapse's
        // media_upload_limits uses (M_FORBIDDEN would not tell the client why).
        throw new MatrixError(403, 'M_RESOURCE_LIMIT_EXCEEDED', `Your media quota of ${quotaBytes} bytes is used up (${used} bytes stored)`);
      }
    };
    overQuota(u.declaredLength ?? 0);
    const file = await this.spool.receive(u.body, { maxBytes: maxUploadBytes, check: overQuota });
    try {
      await this.storage.putFromTempFile(contentKey(file.sha256), file.path);
    } finally {
      await fsp.rm(file.path, { force: true });
    }
    return { contentType: u.contentType, uploadName: u.fileName, size: file.size, sha256: file.sha256 };
  }

  /**
   * The media's row once its bytes are there. A reserved id waits up to `timeoutMs` for its upload,
   * then answers 504 M_NOT_YET_UPLOADED. `legacy`: the unauthenticated v3 endpoints, which serve
   * no media uploaded after the freeze.
   */
  private async uploadedMedia(serverName: string, mediaId: string, timeoutMs: number, legacy: boolean, signal?: AbortSignal): Promise<MediaRow & { sha256: string }> {
    this.checkIds(serverName, mediaId);
    // Remote media comes with federation; until then it is simply not found here.
    if (serverName !== this.config.serverName) throw notFound('Remote media is not available on this server');
    const known = this.uploadedRows.get(mediaId);
    if (known) {
      if (legacy && known.authenticated) throw notFound('Media not found');
      if (known.quarantinedBy) throw notFound('Media not found'); // issue 9 (mod9)
      return known;
    }
    const deadline = Date.now() + Math.min(Math.max(timeoutMs, 0), MAX_DOWNLOAD_WAIT_MS);
    for (;;) {
      const row = await this.store.get(mediaId);
      if (!row) throw notFound('Media not found');
      if (legacy && row.authenticated) throw notFound('Media not found');
      if (row.quarantinedBy) throw notFound('Media not found'); // issue 9 (mod9): quarantined media is never served
      if (row.uploadedTs !== null && row.sha256) {
        const uploaded = row as MediaRow & { sha256: string };
        this.uploadedRows.set(mediaId, uploaded);
        return uploaded;
      }
      if ((row.unusedExpiresTs ?? 0) <= Date.now()) throw notFound('Media not found');
      const left = deadline - Date.now();
      if (left <= 0 || signal?.aborted) throw new MatrixError(504, 'M_NOT_YET_UPLOADED', 'The media has not been uploaded yet');
      await this.uploadOrTimeout(mediaId, Math.min(left, PENDING_POLL_MS), signal);
    }
  }

  private uploadOrTimeout(mediaId: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.uploaded.off(mediaId, done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.uploaded.once(mediaId, done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  async download(serverName: string, mediaId: string, opts: { timeoutMs: number; legacy: boolean; fileName?: string; signal?: AbortSignal }): Promise<MediaContent> {
    if (serverName !== this.config.serverName && this.remote && !opts.legacy) {
      this.checkIds(serverName, mediaId);
      const content = await this.remote.download(serverName, mediaId, Math.min(Math.max(opts.timeoutMs, 0), MAX_DOWNLOAD_WAIT_MS));
      return opts.fileName ? { ...content, fileName: opts.fileName } : content;
    }
    const row = await this.uploadedMedia(serverName, mediaId, opts.timeoutMs, opts.legacy, opts.signal);
    return { stream: await this.openContent(row.sha256), contentType: row.contentType ?? 'application/octet-stream', size: row.size ?? 0, fileName: opts.fileName ?? row.uploadName };
  }

  private async openContent(sha256: string): Promise<Readable> {
    const stream = await this.storage.open(contentKey(sha256));
    if (!stream) {
      this.log.error({ sha256 }, 'media bytes missing from storage');
      throw notFound('Media not found');
    }
    return stream;
  }

  /**
   * A thumbnail at least `width`×`height` where the image allows, from the standard sizes; the
   * original when the image is no larger than asked. Made once, then served from storage.
   */
  async thumbnail(serverName: string, mediaId: string, req: { width: number; height: number; method: ThumbnailMethod; animated: boolean; timeoutMs: number; legacy: boolean; signal?: AbortSignal }): Promise<MediaContent> {
    if (serverName !== this.config.serverName && this.remote && !req.legacy) {
      this.checkIds(serverName, mediaId);
      return this.remote.thumbnail(serverName, mediaId, { width: req.width, height: req.height, method: req.method, animated: req.animated, timeoutMs: Math.min(Math.max(req.timeoutMs, 0), MAX_DOWNLOAD_WAIT_MS) });
    }
    const row = await this.uploadedMedia(serverName, mediaId, req.timeoutMs, req.legacy, req.signal);
    const sourceType = baseType(row.contentType ?? '');
    if (!THUMBNAILABLE_TYPES.has(sourceType)) {
      throw new MatrixError(400, 'M_UNKNOWN', `Cannot generate a thumbnail for media of type ${sourceType || 'unknown'}`);
    }
    const source = await this.storage.localPath(contentKey(row.sha256));
    if (!source) throw notFound('Media not found');
    let image = this.images.get(row.sha256);
    if (!image) {
      image = await inspect(source);
      this.images.set(row.sha256, image);
    }
    if (image.width <= req.width && image.height <= req.height) {
      // The spec: content smaller than asked is returned as it is, never upscaled.
      return { stream: await this.openContent(row.sha256), contentType: row.contentType ?? sourceType, size: row.size ?? 0, fileName: null };
    }
    const size = selectSize(req.width, req.height, req.method);
    const animated = keepsFrames(sourceType, image, req.animated);
    const storageKey = `thumbnails/${shard(row.sha256)}/${size.width}x${size.height}-${size.method}${animated ? '-animated' : ''}`;
    let thumb = this.thumbnails.get(storageKey) ?? await this.store.thumbnail(row.sha256, size.width, size.height, size.method, animated);
    if (!thumb || !(await this.storage.exists(thumb.storageKey))) {
      // Concurrent requests for one thumbnail share its making.
      let making = this.generating.get(storageKey);
      if (!making) {
        making = this.makeThumbnail(row.sha256, source, sourceType, image, size, animated, storageKey).finally(() => this.generating.delete(storageKey));
        this.generating.set(storageKey, making);
      }
      thumb = await making;
    }
    this.thumbnails.set(storageKey, thumb);
    const stream = await this.storage.open(thumb.storageKey);
    if (!stream) throw notFound('Thumbnail not found');
    return { stream, contentType: thumb.contentType, size: thumb.size, fileName: null };
  }

  private async makeThumbnail(sha256: string, source: string, sourceType: string, image: SourceImage, size: ThumbnailSize, animated: boolean, storageKey: string): Promise<ThumbnailRow> {
    const temp = this.spool.newTempPath();
    try {
      const made = await makeThumbnail(source, sourceType, image, size, animated, temp);
      const { size: bytes } = await fsp.stat(temp);
      const thumbnail: ThumbnailRow = { ...size, animated: made.animated, contentType: made.contentType, size: bytes, storageKey };
      await this.storage.putFromTempFile(storageKey, temp);
      await this.store.insertThumbnail(sha256, thumbnail, Date.now());
      return thumbnail;
    } finally {
      await fsp.rm(temp, { force: true });
    }
  }

  /**
   * GET /preview_url: the page's Open Graph tags; its image (or the URL's, when it is one) is stored
   * here as media of the requester and named by its mxc:// URI, as the spec and Synapse do.
   */
  async previewUrl(url: string, requester: string): Promise<OpenGraph> {
    if (!this.previewer) throw new MatrixError(404, 'M_UNRECOGNIZED', 'URL previews are disabled on this server');
    const now = Date.now();
    const cached = await this.store.cachedPreview(url, now);
    if (cached) return JSON.parse(cached) as OpenGraph;
    const { og, image } = await this.previewer.preview(url);
    if (image) {
      try {
        Object.assign(og, await this.storePreviewImage(requester, image.file, image.contentType));
      } catch (err) {
        // A preview without its image is still a preview.
        if (!(err instanceof MatrixError)) this.log.warn({ err }, 'URL preview image not stored');
      } finally {
        await fsp.rm(image.file.path, { force: true });
      }
    }
    await this.store.cachePreview(url, JSON.stringify(og), now, now + PREVIEW_CACHE_MS);
    return og;
  }

  private async storePreviewImage(requester: string, file: SpooledFile, contentType: string): Promise<OpenGraph> {
    const image = await inspect(file.path); // not an image: no og:image
    await this.storage.putFromTempFile(contentKey(file.sha256), file.path);
    const mediaId = newMediaId();
    await this.store.insertUploaded(mediaId, requester, { contentType, uploadName: null, size: file.size, sha256: file.sha256 }, Date.now());
    return { 'og:image': this.mxc(mediaId), 'og:image:type': contentType, 'og:image:width': image.width, 'og:image:height': image.height, 'matrix:image:size': file.size };
  }

  private checkIds(serverName: string, mediaId: string): void {
    if (!SERVER_NAME.test(serverName)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid server name');
    if (!MEDIA_ID.test(mediaId)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid media id');
  }

  private mxc(mediaId: string): string {
    return `mxc://${this.config.serverName}/${mediaId}`;
  }
}

/** 24 URL-safe characters, as Synapse's media ids. */
function newMediaId(): string {
  return randomBytes(18).toString('base64url');
}

function shard(sha256: string): string {
  return `${sha256.slice(0, 2)}/${sha256.slice(2, 4)}/${sha256.slice(4)}`;
}

export function contentKey(sha256: string): string {
  return `content/${shard(sha256)}`;
}
