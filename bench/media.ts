// The media repository: uploads/s and downloads/s of a 100 KB file, the latency of a first (made)
// and a repeated (stored) thumbnail, and the server's RSS while a 50 MB upload streams in, against
// before it (the body goes to disk chunk by chunk: RSS must not grow by the file's size).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import sharp from 'sharp';
import { Client, closedLoop, createDatabase, fmt, latencyLine, mb, now, register, sleep, startHomeserver, stats, summary } from './lib.ts';

const FILE_BYTES = 100 * 1024;
const CONCURRENCY = 8;
const DURATION_MS = 5_000;
const THUMBNAIL_IMAGES = 10;
const BIG_UPLOAD = 50 * 1024 * 1024;

interface BinRes { status: number; bytes: number; body: string; ms: number }

/** One request with a byte body (or a stream of `streamBytes` random bytes, sent in 64 KB chunks). */
function binary(c: Client, method: string, path: string, token: string, body?: Buffer, streamBytes?: number, contentType = 'application/octet-stream'): Promise<BinRes> {
  const t0 = now();
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { authorization: `Bearer ${token}`, 'content-type': contentType };
    if (body) headers['content-length'] = body.length;
    if (streamBytes !== undefined) headers['content-length'] = streamBytes;
    const req = http.request({ host: c.url.hostname, port: c.url.port, method, path, headers, agent: c.agent }, (res) => {
      let bytes = 0;
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => { bytes += d.length; if (chunks.length < 4) chunks.push(d); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, body: Buffer.concat(chunks).toString('utf8').slice(0, 300), ms: now() - t0 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (streamBytes === undefined) { req.end(body); return; }
    const chunk = randomBytes(64 * 1024);
    let sent = 0;
    const pump = () => {
      while (sent < streamBytes) {
        const n = Math.min(chunk.length, streamBytes - sent);
        sent += n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { req.once('drain', pump); return; }
      }
      req.end();
    };
    pump();
  });
}

function rssMb(pid: number): number {
  const kb = Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return kb / 1024;
}

export async function main(): Promise<void> {
  console.log(`media: ${CONCURRENCY} concurrent clients, ${DURATION_MS / 1000} s per loop, ${FILE_BYTES / 1024} KB files; `
    + 'figures on a busy shared machine are noise: compare runs on a quiet one');
  const db = await createDatabase('media');
  const hs = await startHomeserver({ databaseUrl: db.url, env: { MAX_UPLOAD_BYTES: String(64 * 1024 * 1024) } });
  const c = new Client(hs.baseUrl);
  try {
    const user = await register(c, `media${Math.random().toString(36).slice(2, 8)}`);
    const base = randomBytes(FILE_BYTES);
    // Each upload differs (its first bytes are its sequence number): every one is hashed and stored, none deduplicated.
    const unique = (w: number, seq: number) => {
      const b = Buffer.from(base);
      b.writeUInt32BE(w, 0);
      b.writeUInt32BE(seq, 4);
      return b;
    };
    const uploads = await closedLoop(CONCURRENCY, DURATION_MS, async (w, seq) => {
      const r = await binary(c, 'POST', '/_matrix/media/v3/upload', user.token, unique(w, seq));
      if (r.status !== 200) throw new Error(`upload: HTTP ${r.status} ${r.body}`);
      return true;
    });
    console.log(`uploads: ${fmt(uploads.perSec, 0)}/s (${fmt((uploads.perSec * FILE_BYTES) / 1024 / 1024)} MB/s), ${uploads.errors} errors${uploads.firstError ? ` (${uploads.firstError})` : ''}`);
    console.log(`  ${latencyLine('latency', uploads.latency)}`);

    const one = JSON.parse((await binary(c, 'POST', '/_matrix/media/v3/upload', user.token, unique(999, 0))).body).content_uri.split('/').pop();
    const downloads = await closedLoop(CONCURRENCY, DURATION_MS, async () => {
      const r = await binary(c, 'GET', `/_matrix/client/v1/media/download/localhost/${one}`, user.token);
      if (r.status !== 200 || r.bytes !== FILE_BYTES) throw new Error(`download: HTTP ${r.status} ${r.bytes} bytes`);
      return true;
    });
    console.log(`downloads: ${fmt(downloads.perSec, 0)}/s (${fmt((downloads.perSec * FILE_BYTES) / 1024 / 1024)} MB/s), ${downloads.errors} errors${downloads.firstError ? ` (${downloads.firstError})` : ''}`);
    console.log(`  ${latencyLine('latency', downloads.latency)}`);

    // Thumbnails: distinct 1600×1200 JPEGs (a photo's size), first request makes it, second reads it.
    const first: number[] = [];
    const again: number[] = [];
    for (let i = 0; i < THUMBNAIL_IMAGES; i++) {
      const noise = await sharp(randomBytes(160 * 120 * 3), { raw: { width: 160, height: 120, channels: 3 } }).resize(1600, 1200).jpeg({ quality: 85 }).toBuffer();
      const id = JSON.parse((await binary(c, 'POST', '/_matrix/media/v3/upload', user.token, noise, undefined, 'image/jpeg')).body).content_uri.split('/').pop();
      const path = `/_matrix/client/v1/media/thumbnail/localhost/${id}?width=320&height=240&method=scale`;
      for (const into of [first, again]) {
        const r = await binary(c, 'GET', path, user.token);
        if (r.status !== 200) throw new Error(`thumbnail: HTTP ${r.status} ${r.body}`);
        into.push(r.ms);
      }
    }
    const firstStats = stats(first);
    const againStats = stats(again);
    console.log(latencyLine('first thumbnail (320x240 scale of a 1600x1200 JPEG, made)', firstStats));
    console.log(latencyLine('same thumbnail again (stored)', againStats));

    // RSS while a 50 MB body streams in.
    await sleep(500);
    const before = rssMb(hs.pid);
    let peak = before;
    const sampler = setInterval(() => { peak = Math.max(peak, rssMb(hs.pid)); }, 20);
    const t0 = now();
    const big = await binary(c, 'POST', '/_matrix/media/v3/upload', user.token, undefined, BIG_UPLOAD);
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(hs.pid));
    if (big.status !== 200) throw new Error(`50 MB upload: HTTP ${big.status} ${big.body}`);
    const seconds = (now() - t0) / 1000;
    console.log(`50 MB upload: ${fmt(seconds, 2)} s (${fmt(mb(BIG_UPLOAD) / seconds)} MB/s); server RSS ${fmt(before)} MB before, peak ${fmt(peak)} MB during (+${fmt(peak - before)} MB for a ${fmt(mb(BIG_UPLOAD), 0)} MB body)`);

    summary('media', {
      uploadsPerSec: uploads.perSec, uploadP50Ms: uploads.latency.p50, downloadsPerSec: downloads.perSec, downloadP50Ms: downloads.latency.p50,
      firstThumbnailP50Ms: firstStats.p50, firstThumbnailMaxMs: firstStats.max, storedThumbnailP50Ms: againStats.p50,
      rssBeforeMb: before, rssPeakDuring50MbUploadMb: peak, rssGrowthMb: peak - before,
    });
  } finally {
    c.close();
    await hs.stop();
    await db.drop();
  }
}
