// GET /_matrix/federation/v1/media/download/{mediaId}    our media, as multipart/mixed
// GET /_matrix/federation/v1/media/thumbnail/{mediaId}   a thumbnail of it, as multipart/mixed
// (server-server API "Content Repository", spec v1.11): the first part is the JSON metadata
// (empty), the second the bytes with their Content-Type and Content-Disposition.
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { RouterContext } from '@koa/router';
import type { Routes } from '../homeserver/http/app.ts';
import { MatrixError } from '../homeserver/http/errors.ts';
import { single } from '../homeserver/http/params.ts';
import { DEFAULT_DOWNLOAD_WAIT_MS, MAX_DOWNLOAD_WAIT_MS, type MediaContent, type MediaService } from '../homeserver/media/service.ts';
import { mediaHeaders } from '../homeserver/media/serving.ts';
import type { ThumbnailMethod } from '../homeserver/media/thumbnails.ts';
import type { RequestAuthenticator } from './request-auth.ts';

const MAX_THUMBNAIL_SIDE = 10_000;

function integerParam(ctx: RouterContext, name: string, min: number, max: number): number | undefined {
  const v = single(ctx, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,10}$/.test(v) || Number(v) < min || Number(v) > max) throw new MatrixError(400, 'M_INVALID_PARAM', `${name} must be a whole number from ${min} to ${max}`);
  return Number(v);
}

/** The answer: `{}` metadata, then the content, in a multipart/mixed body streamed as it is read. */
function sendMultipart(ctx: RouterContext, content: MediaContent): void {
  const boundary = randomBytes(16).toString('hex');
  const headers = mediaHeaders(content.contentType, content.fileName, content.size);
  const partHeaders = [`Content-Type: ${headers['Content-Type'] ?? content.contentType}`, ...(headers['Content-Disposition'] ? [`Content-Disposition: ${headers['Content-Disposition']}`] : [])];
  const body = new PassThrough();
  body.write(`--${boundary}\r\nContent-Type: application/json\r\n\r\n{}\r\n--${boundary}\r\n${partHeaders.join('\r\n')}\r\n\r\n`);
  content.stream.on('error', (err) => body.destroy(err));
  content.stream.on('end', () => body.end(`\r\n--${boundary}--\r\n`));
  content.stream.pipe(body, { end: false });
  ctx.body = body;
  ctx.set('Content-Type', `multipart/mixed; boundary=${boundary}`);
  ctx.status = 200;
}

export function federationMediaRoutes(r: Routes, auth: RequestAuthenticator, media: MediaService, serverName: string): void {
  const waitMs = (ctx: RouterContext) => Math.min(integerParam(ctx, 'timeout_ms', 0, 2 ** 31 - 1) ?? DEFAULT_DOWNLOAD_WAIT_MS, MAX_DOWNLOAD_WAIT_MS);
  r.raw('get', '/_matrix/federation/v1/media/download/:mediaId', async (ctx) => {
    await auth.authenticate(ctx);
    sendMultipart(ctx, await media.download(serverName, ctx.params.mediaId!, { timeoutMs: waitMs(ctx), legacy: false, signal: ctx.state.shutdown as AbortSignal | undefined }));
  });
  r.raw('get', '/_matrix/federation/v1/media/thumbnail/:mediaId', async (ctx) => {
    await auth.authenticate(ctx);
    const width = integerParam(ctx, 'width', 1, MAX_THUMBNAIL_SIDE);
    const height = integerParam(ctx, 'height', 1, MAX_THUMBNAIL_SIDE);
    if (width === undefined || height === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'width and height are required');
    const method = single(ctx, 'method') ?? 'scale';
    if (method !== 'crop' && method !== 'scale') throw new MatrixError(400, 'M_INVALID_PARAM', "method must be 'crop' or 'scale'");
    const animated = single(ctx, 'animated');
    if (animated !== undefined && animated !== 'true' && animated !== 'false') throw new MatrixError(400, 'M_INVALID_PARAM', "animated must be 'true' or 'false'");
    sendMultipart(ctx, await media.thumbnail(serverName, ctx.params.mediaId!, {
      width, height, method: method as ThumbnailMethod, animated: animated === 'true', timeoutMs: waitMs(ctx), legacy: false, signal: ctx.state.shutdown as AbortSignal | undefined,
    }));
  });
}
