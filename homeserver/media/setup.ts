// Builds the media repository from the config and registers its routes (called by main.ts).
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { InvalidationBus } from '../coordination/invalidation.ts';
import type { BackgroundJobs } from '../coordination/jobs.ts';
import type { Routes } from '../http/app.ts';
import type { Db } from '../storage/db.ts';
import { prepareDataDir } from '../storage/data-dir.ts';
import { IpRangePolicy } from './ip-ranges.ts';
import { mediaRoutes } from './routes.ts';
import { MediaService } from './service.ts';
import { UploadSpool } from './spool.ts';
import { FileSystemMediaStorage } from './storage.ts';
import { MediaStore } from './store.ts';
import { MAX_PREVIEW_BYTES, UrlPreviewer } from './url-preview.ts';

export async function createMediaRepository(routes: Routes, db: Db, config: Config, bus: InvalidationBus, jobs: BackgroundJobs, log: Logger): Promise<MediaService> {
  const root = path.join(config.dataDir, 'media');
  // With DATABASE_URL, DATA_DIR holds nothing else and was not prepared yet.
  prepareDataDir(root);
  const spool = new UploadSpool(root);
  await spool.prepare();
  const previewer = config.urlPreview ? new UrlPreviewer(new IpRangePolicy(config.urlPreviewIpDenylist, config.urlPreviewIpAllowlist), spool, Math.min(config.maxUploadBytes, MAX_PREVIEW_BYTES)) : undefined;
  const media = new MediaService(new MediaStore(db), new FileSystemMediaStorage(root), spool, {
    serverName: config.serverName, maxUploadBytes: config.maxUploadBytes, quotaBytes: config.mediaQuotaBytes,
  }, previewer, log);
  // A download waiting on another worker for a reserved id is woken when its PUT lands here.
  bus.on('media-uploaded', (mediaId) => media.uploadArrived(mediaId), () => {});
  media.announceUpload = (mediaId) => bus.emit('media-uploaded', mediaId);
  // issue 9 (mod9): a quarantine or deletion drops the cached rows on every worker.
  bus.on('media-admin', (ids) => media.forgetRows(ids.split(',')), () => media.forgetRows());
  media.mediaChanged = (ids) => bus.emit('media-admin', ids.join(','));
  jobs.register('media: expired upload ids', media.expiryJob());
  mediaRoutes(routes, media);
  return media;
}
