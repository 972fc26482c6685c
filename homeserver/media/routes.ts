// POST /_matrix/media/v3/upload                                   upload (body streamed to disk)
// POST /_matrix/media/v1/create                                   reserve an id
// PUT  /_matrix/media/v3/upload/{serverName}/{mediaId}            upload to a reserved id
// GET  /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
// GET  /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
// GET  /_matrix/client/v1/media/config, /_matrix/media/v3/config
// GET  /_matrix/client/v1/media/preview_url, /_matrix/media/v3/preview_url
// GET  /_matrix/media/v3/download|thumbnail/…                     deprecated, frozen: new media is 404
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { booleanParam, single } from '../http/params.ts';
import { acceptableContentType, mediaHeaders } from './serving.ts';
import { DEFAULT_DOWNLOAD_WAIT_MS, type MediaContent, type MediaService, type UploadRequest } from './service.ts';
import type { ThumbnailMethod } from './thumbnails.ts';

const MAX_FILENAME = 255;
const MAX_THUMBNAIL_SIDE = 10_000;

function integerParam(ctx: RouterContext, name: string, min: number, max: number): number | undefined {
  const v = single(ctx, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v) || Number(v) < min || Number(v) > max) throw new MatrixError(400, 'M_INVALID_PARAM', `${name} must be a whole number from ${min} to ${max}`);
  return Number(v);
}

function uploadRequest(ctx: RouterContext): UploadRequest {
  const fileName = single(ctx, 'filename') ?? null;
  if (fileName !== null && (fileName.length > MAX_FILENAME || [...fileName].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f))) {
    throw new MatrixError(400, 'M_INVALID_PARAM', `filename must be at most ${MAX_FILENAME} characters, without control characters`);
  }
  const contentType = ctx.get('content-type') || null;
  if (contentType !== null && !acceptableContentType(contentType)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Content-Type is not a valid media type');
  const length = ctx.get('content-length');
  return { uploader: requester(ctx).userId, body: ctx.req, contentType, fileName, declaredLength: length && /^\d+$/.test(length) ? Number(length) : undefined };
}

function send(ctx: RouterContext, content: MediaContent): void {
  ctx.body = content.stream;
  // After the body: koa drops Content-Length and guesses a type when a stream is assigned.
  ctx.set(mediaHeaders(content.contentType, content.fileName, content.size));
  ctx.status = 200;
}

const waitMs = (ctx: RouterContext) => integerParam(ctx, 'timeout_ms', 0, 2 ** 31 - 1) ?? DEFAULT_DOWNLOAD_WAIT_MS;
const shutdownSignal = (ctx: RouterContext) => ctx.state.shutdown as AbortSignal | undefined;

export function mediaRoutes(r: Routes, media: MediaService): void {
  r.raw('post', '/_matrix/media/v3/upload', async (ctx) => {
    await r.limits.check('media_upload', requester(ctx).userId, ctx);
    return media.upload(uploadRequest(ctx));
  }, { auth: true, rawBody: true });

  // An id reserved by /create is paid for there: its PUT is not charged again.
  r.raw('post', '/_matrix/media/v1/create', async (ctx) => {
    await r.limits.check('media_upload', requester(ctx).userId, ctx);
    return media.create(requester(ctx).userId);
  }, { auth: true });

  r.raw('put', '/_matrix/media/v3/upload/:serverName/:mediaId', async (ctx) => {
    const upload = uploadRequest(ctx);
    await media.uploadTo(ctx.params.serverName!, ctx.params.mediaId!, upload);
    return {};
  }, { auth: true, rawBody: true });

  const download = (legacy: boolean) => async (ctx: RouterContext) => {
    if (legacy) booleanParam(ctx, 'allow_remote');
    booleanParam(ctx, 'allow_redirect');
    send(ctx, await media.download(ctx.params.serverName!, ctx.params.mediaId!, {
      timeoutMs: waitMs(ctx), legacy, fileName: ctx.params.fileName, signal: shutdownSignal(ctx),
    }));
  };
  const thumbnail = (legacy: boolean) => async (ctx: RouterContext) => {
    if (legacy) booleanParam(ctx, 'allow_remote');
    booleanParam(ctx, 'allow_redirect');
    const width = integerParam(ctx, 'width', 1, MAX_THUMBNAIL_SIDE);
    const height = integerParam(ctx, 'height', 1, MAX_THUMBNAIL_SIDE);
    if (width === undefined || height === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'width and height are required');
    const method = single(ctx, 'method') ?? 'scale';
    if (method !== 'crop' && method !== 'scale') throw new MatrixError(400, 'M_INVALID_PARAM', "method must be 'crop' or 'scale'");
    send(ctx, await media.thumbnail(ctx.params.serverName!, ctx.params.mediaId!, {
      width, height, method: method as ThumbnailMethod, animated: booleanParam(ctx, 'animated') ?? false,
      timeoutMs: waitMs(ctx), legacy, signal: shutdownSignal(ctx),
    }));
  };
  const preview = async (ctx: RouterContext) => {
    const url = single(ctx, 'url');
    if (!url) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: url');
    integerParam(ctx, 'ts', 0, Number.MAX_SAFE_INTEGER);
    return media.previewUrl(url, requester(ctx).userId);
  };

  // The authenticated endpoints (spec v1.11).
  r.client('get', '/media/config', () => media.mediaConfig(), { auth: true }, ['v1']);
  r.client('get', '/media/download/:serverName/:mediaId', download(false), { auth: true }, ['v1']);
  r.client('get', '/media/download/:serverName/:mediaId/:fileName', download(false), { auth: true }, ['v1']);
  r.client('get', '/media/thumbnail/:serverName/:mediaId', thumbnail(false), { auth: true }, ['v1']);
  r.client('get', '/media/preview_url', preview, { auth: true }, ['v1']);

  // The deprecated ones: config and preview_url keep working (they always needed a token); the
  // downloads are frozen, so media uploaded here (all of it is after the freeze) is 404 there.
  r.raw('get', '/_matrix/media/v3/config', () => media.mediaConfig(), { auth: true });
  r.raw('get', '/_matrix/media/v3/preview_url', preview, { auth: true });
  r.raw('get', '/_matrix/media/v3/download/:serverName/:mediaId', download(true));
  r.raw('get', '/_matrix/media/v3/download/:serverName/:mediaId/:fileName', download(true));
  r.raw('get', '/_matrix/media/v3/thumbnail/:serverName/:mediaId', thumbnail(true));
}
