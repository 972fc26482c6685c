// Our users' downloads of other servers' media: GET /_matrix/federation/v1/media/download|thumbnail
// on the media's server, whose multipart/mixed answer holds the JSON metadata and then the bytes
// (or a Location to fetch them from). Not cached yet: each download asks the server again.
import { Readable } from 'node:stream';
import { MatrixError, notFound } from '../homeserver/http/errors.ts';
import type { MediaContent, RemoteMedia } from '../homeserver/media/service.ts';
import { FederationRequestError, type FederationClient, type RawResponse } from './client.ts';

export interface MultipartPart { headers: Record<string, string>; body: Buffer }

/** The parts of a multipart body (RFC 2046): header names lower-cased; the epilogue ignored. */
export function parseMultipart(body: Buffer, boundary: string): MultipartPart[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const next = Buffer.from(`\r\n--${boundary}`);
  const parts: MultipartPart[] = [];
  let pos = body.indexOf(delimiter);
  while (pos !== -1) {
    let start = pos + delimiter.length;
    if (body.subarray(start, start + 2).toString() === '--') break; // the close delimiter
    const lineEnd = body.indexOf('\r\n', start);
    if (lineEnd === -1) break;
    start = lineEnd + 2;
    const end = body.indexOf(next, start);
    if (end === -1) break;
    const part = body.subarray(start, end);
    const split = part.subarray(0, 2).toString() === '\r\n' ? 0 : part.indexOf('\r\n\r\n');
    if (split === -1) break;
    const headers: Record<string, string> = {};
    for (const line of part.subarray(0, split).toString('utf8').split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    parts.push({ headers, body: part.subarray(split === 0 ? 2 : split + 4) });
    pos = end + 2;
  }
  return parts;
}

/** The filename of a Content-Disposition (filename*=UTF-8'' first, then filename="…"). */
function fileNameOf(disposition: string | undefined): string | null {
  if (!disposition) return null;
  const star = /filename\*=utf-8''([^;]+)/i.exec(disposition);
  if (star) { try { return decodeURIComponent(star[1]!); } catch { /* fall through */ } }
  const plain = /filename="((?:[^"\\]|\\.)*)"/i.exec(disposition) ?? /filename=([^;\s]+)/i.exec(disposition);
  return plain ? plain[1]!.replace(/\\(.)/g, '$1') : null;
}

export class RemoteMediaFetcher implements RemoteMedia {
  constructor(private client: FederationClient, private maxBytes: number) {}

  download(serverName: string, mediaId: string, timeoutMs: number): Promise<MediaContent> {
    return this.fetch(serverName, `/_matrix/federation/v1/media/download/${encodeURIComponent(mediaId)}?timeout_ms=${timeoutMs}`, timeoutMs);
  }

  thumbnail(serverName: string, mediaId: string, req: { width: number; height: number; method: string; animated: boolean; timeoutMs: number }): Promise<MediaContent> {
    const q = new URLSearchParams({ width: String(req.width), height: String(req.height), method: req.method, animated: String(req.animated), timeout_ms: String(req.timeoutMs) });
    return this.fetch(serverName, `/_matrix/federation/v1/media/thumbnail/${encodeURIComponent(mediaId)}?${q}`, req.timeoutMs);
  }

  private async fetch(serverName: string, path: string, timeoutMs: number): Promise<MediaContent> {
    let res: RawResponse;
    // The server may wait up to timeout_ms for a pending upload; allow for the transfer on top.
    const budget = timeoutMs + 30_000;
    try {
      res = await this.client.requestRaw(serverName, 'GET', path, undefined, budget, this.maxBytes + 64 * 1024);
    } catch (err) {
      throw new MatrixError(502, 'M_UNKNOWN', `The media's server could not be reached: ${(err as Error).message}`);
    }
    if (res.status === 404) throw notFound('Media not found');
    if (res.status === 504) throw new MatrixError(504, 'M_NOT_YET_UPLOADED', 'The media has not been uploaded yet');
    if (res.status === 400) {
      let body: { errcode?: string; error?: string } = {};
      try { body = JSON.parse(res.body.toString('utf8')); } catch { /* not JSON */ }
      throw new MatrixError(400, typeof body.errcode === 'string' ? body.errcode : 'M_UNKNOWN', typeof body.error === 'string' ? body.error : 'The media server refused the request');
    }
    if (res.status !== 200) throw new MatrixError(502, 'M_UNKNOWN', `The media's server answered ${res.status}`);
    const type = String(res.headers['content-type'] ?? '');
    const boundary = /^multipart\/mixed\s*;.*boundary=("?)([^";]+)\1/i.exec(type)?.[2];
    if (!boundary) throw new MatrixError(502, 'M_UNKNOWN', "The media's server did not answer with multipart/mixed");
    const parts = parseMultipart(res.body, boundary);
    const media = parts[1];
    if (parts.length < 2 || !media) throw new MatrixError(502, 'M_UNKNOWN', "The media's server sent no content part");
    let bytes = media.body;
    let contentType = media.headers['content-type'] ?? 'application/octet-stream';
    const disposition = media.headers['content-disposition'];
    if (media.headers.location) {
      // The bytes are elsewhere (a CDN): fetched under the same address policy, unsigned.
      let url: URL;
      try { url = new URL(media.headers.location); } catch { throw new MatrixError(502, 'M_UNKNOWN', 'Bad media location'); }
      let got: RawResponse;
      try { got = await this.client.getUrl(url, budget, this.maxBytes); } catch (err) {
        if (err instanceof FederationRequestError) throw new MatrixError(502, 'M_UNKNOWN', err.message);
        throw err;
      }
      if (got.status !== 200) throw new MatrixError(502, 'M_UNKNOWN', `The media location answered ${got.status}`);
      bytes = got.body;
      contentType = String(got.headers['content-type'] ?? contentType);
    }
    return { stream: Readable.from([bytes]), contentType, size: bytes.length, fileName: fileNameOf(disposition) };
  }
}
