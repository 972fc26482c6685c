// Media requests for tests: bodies are bytes (not JSON), answers are kept as bytes; JSON answers are
// checked against the spec's OpenAPI like every other response (tests/helpers/openapi.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { specChecker } from './openapi.ts';

export interface MediaResponse { status: number; headers: Headers; bytes: Buffer; json: any }

export async function mediaRequest(
  baseUrl: string, method: string, urlPath: string,
  opts: { token?: string; body?: Buffer | string | ReadableStream<Uint8Array>; contentType?: string; headers?: Record<string, string> } = {},
): Promise<MediaResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.contentType) headers['content-type'] = opts.contentType;
  const init: RequestInit & { duplex?: string } = { method, headers, body: opts.body as RequestInit['body'] };
  if (opts.body instanceof ReadableStream) init.duplex = 'half';
  const res = await fetch(baseUrl + urlPath, init);
  const bytes = Buffer.from(await res.arrayBuffer());
  const isJson = (res.headers.get('content-type') ?? '').startsWith('application/json');
  let json: any;
  if (isJson && bytes.length) json = JSON.parse(bytes.toString('utf8'));
  const { problem } = specChecker().check({
    method, path: urlPath, status: res.status, contentType: res.headers.get('content-type'),
    body: isJson ? json : bytes.toString('latin1'), isJson,
  });
  if (problem && isJson) throw new assert.AssertionError({ message: `response drifts from the spec: ${problem}` });
  return { status: res.status, headers: res.headers, bytes, json };
}

/** POST /_matrix/media/v3/upload; returns the mxc URI's server name and media id. */
export async function uploadMedia(baseUrl: string, token: string, bytes: Buffer | string, contentType = 'application/octet-stream', fileName?: string): Promise<{ serverName: string; mediaId: string; uri: string }> {
  const res = await mediaRequest(baseUrl, 'POST', `/_matrix/media/v3/upload${fileName ? `?filename=${encodeURIComponent(fileName)}` : ''}`, { token, body: bytes, contentType });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  return { ...parseMxc(res.json.content_uri), uri: res.json.content_uri };
}

export function parseMxc(uri: string): { serverName: string; mediaId: string } {
  const m = /^mxc:\/\/([^/]+)\/([A-Za-z0-9_-]+)$/.exec(uri);
  assert.ok(m, `not an mxc URI: ${uri}`);
  return { serverName: m[1]!, mediaId: m[2]! };
}

export const downloadPath = (serverName: string, mediaId: string) => `/_matrix/client/v1/media/download/${serverName}/${mediaId}`;
export const thumbnailPath = (serverName: string, mediaId: string, query: string) => `/_matrix/client/v1/media/thumbnail/${serverName}/${mediaId}?${query}`;

/** Every file under DATA_DIR/media, relative paths. */
export function mediaFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'media');
  const out: string[] = [];
  const walk = (dir: string) => {
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(root, p));
    }
  };
  walk(root);
  return out.sort();
}
