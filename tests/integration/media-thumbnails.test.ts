// Thumbnails: PNG, JPEG, GIF and WebP sources (made with sharp here) at two sizes and both methods,
// never upscaled, never smaller than asked where the image allows; animated GIFs stay animated when
// asked; made once and served from storage after; non-images and corrupt images answered cleanly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials } from '../helpers/client.ts';
import { mediaFiles, mediaRequest, thumbnailPath, uploadMedia } from '../helpers/media.ts';

const SOURCE_W = 1000;
const SOURCE_H = 700;

async function sourceImage(format: 'png' | 'jpeg' | 'gif' | 'webp'): Promise<Buffer> {
  // A gradient-ish picture: two colours split diagonally, so crops differ from scales.
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${SOURCE_W}" height="${SOURCE_H}"><rect width="100%" height="100%" fill="#2a6"/><polygon points="0,0 ${SOURCE_W},0 0,${SOURCE_H}" fill="#c33"/></svg>`;
  return sharp(Buffer.from(svg)).toFormat(format).toBuffer();
}

async function animatedGif(width: number, height: number, frames: number): Promise<Buffer> {
  const raw: Buffer[] = [];
  for (let i = 0; i < frames; i++) {
    raw.push(await sharp({ create: { width, height, channels: 3, background: { r: (i * 80) % 256, g: 40, b: 255 - ((i * 80) % 256) } } }).raw().toBuffer());
  }
  return sharp(Buffer.concat(raw), { raw: { width, height: height * frames, channels: 3, pageHeight: height } }).gif({ delay: Array(frames).fill(100), loop: 0 }).toBuffer();
}

describe('media thumbnails', () => {
  let server: TestServer;
  let alice: Credentials;
  const get = (p: string) => mediaRequest(server.baseUrl, 'GET', p, { token: alice.accessToken });

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
  });
  after(async () => { await server?.stop(); });

  for (const format of ['png', 'jpeg', 'gif', 'webp'] as const) {
    test(`${format}: crop and scale at two sizes`, async () => {
      const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, await sourceImage(format), `image/${format}`);
      const cases = [
        // asked → the standard size served (crop: that box exactly; scale: fits inside it, aspect kept)
        { method: 'crop', w: 32, h: 32, box: [32, 32] },
        { method: 'crop', w: 64, h: 50, box: [96, 96] },
        { method: 'scale', w: 320, h: 240, box: [320, 240] },
        { method: 'scale', w: 500, h: 400, box: [640, 480] },
      ] as const;
      for (const c of cases) {
        const res = await get(thumbnailPath(serverName, mediaId, `width=${c.w}&height=${c.h}&method=${c.method}`));
        assert.equal(res.status, 200, `${format} ${c.method} ${c.w}x${c.h}: ${res.bytes.toString().slice(0, 200)}`);
        const meta = await sharp(res.bytes).metadata();
        assert.equal(res.headers.get('content-type'), `image/${meta.format === 'jpeg' ? 'jpeg' : meta.format}`);
        assert.ok(['png', 'jpeg'].includes(meta.format!), `a still thumbnail is PNG or JPEG, got ${meta.format}`);
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
        if (c.method === 'crop') {
          assert.deepEqual([meta.width, meta.height], c.box, `${format} crop ${c.w}x${c.h}`);
        } else {
          // Inside the box, the source's aspect kept, and the box's width reached (the source is wider).
          assert.equal(meta.width, c.box[0]);
          assert.equal(meta.height, Math.round((c.box[0] * SOURCE_H) / SOURCE_W));
          assert.ok(meta.width! >= c.w, 'never narrower than asked');
        }
      }
    });
  }

  test('an image smaller than asked comes back as it is (never upscaled)', async () => {
    const small = await sharp({ create: { width: 20, height: 10, channels: 3, background: '#123456' } }).png().toBuffer();
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, small, 'image/png');
    const res = await get(thumbnailPath(serverName, mediaId, 'width=96&height=96&method=crop'));
    assert.equal(res.status, 200);
    assert.ok(res.bytes.equals(small));
  });

  test('an animated GIF stays animated with animated=true, and is a still image without', async () => {
    const gif = await animatedGif(300, 200, 3);
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, gif, 'image/gif');
    const animated = await get(thumbnailPath(serverName, mediaId, 'width=96&height=96&method=crop&animated=true'));
    assert.equal(animated.status, 200);
    assert.equal(animated.headers.get('content-type'), 'image/gif');
    const meta = await sharp(animated.bytes, { animated: true }).metadata();
    assert.equal(meta.pages, 3, 'all frames kept');
    assert.deepEqual([meta.width, meta.pageHeight], [96, 96]);
    const still = await get(thumbnailPath(serverName, mediaId, 'width=96&height=96&method=crop'));
    assert.equal(still.status, 200);
    assert.equal(still.headers.get('content-type'), 'image/png');
    assert.equal((await sharp(still.bytes, { animated: true }).metadata()).pages ?? 1, 1);
  });

  test('a thumbnail is made once: the second request is served from storage', async () => {
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, await sourceImage('png'), 'image/png', 'again.png');
    // Identical bytes were uploaded above: their thumbnails exist already and are shared.
    const before = mediaFiles(server.dataDir).filter((f) => f.startsWith('thumbnails/'));
    const first = await get(thumbnailPath(serverName, mediaId, 'width=800&height=600&method=scale'));
    const made = mediaFiles(server.dataDir).filter((f) => f.startsWith('thumbnails/'));
    assert.equal(made.length, before.length + 1, 'one new thumbnail file');
    const second = await get(thumbnailPath(serverName, mediaId, 'width=700&height=500&method=scale'));
    assert.ok(first.bytes.equals(second.bytes), 'the same stored thumbnail');
    assert.deepEqual(mediaFiles(server.dataDir).filter((f) => f.startsWith('thumbnails/')), made);
  });

  test('a non-image, a corrupt image and bad parameters are answered with 400, never a 500', async () => {
    const text = await uploadMedia(server.baseUrl, alice.accessToken, 'just text', 'text/plain');
    const pdf = await uploadMedia(server.baseUrl, alice.accessToken, '%PDF-1.4 not really', 'application/pdf');
    const png = await sourceImage('png');
    const corrupt = await uploadMedia(server.baseUrl, alice.accessToken, Buffer.concat([png.subarray(0, 40), Buffer.alloc(500, 7)]), 'image/png');
    const lying = await uploadMedia(server.baseUrl, alice.accessToken, 'GIF89a but nothing else', 'image/gif');
    for (const m of [text, pdf, corrupt, lying]) {
      const res = await get(thumbnailPath(m.serverName, m.mediaId, 'width=32&height=32&method=crop'));
      assert.equal(res.status, 400, `${m.mediaId}: ${res.bytes.toString()}`);
      assert.equal(typeof res.json.errcode, 'string');
    }
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, png, 'image/png');
    for (const q of ['width=32', 'width=0&height=32', 'width=a&height=32', 'width=32&height=32&method=stretch', 'width=32&height=32&animated=maybe']) {
      const res = await get(thumbnailPath(serverName, mediaId, q));
      assert.equal(res.status, 400, q);
    }
    // The server is still fine.
    assert.equal((await get(thumbnailPath(serverName, mediaId, 'width=32&height=32'))).status, 200);
  });

  test('an image too large to decode safely (decompression bomb) is 413 M_TOO_LARGE', async () => {
    // 6000 × 6000 (36 megapixels) of one colour compresses to a few kB but would be 108 MB decoded.
    const bomb = await sharp({ create: { width: 6_000, height: 6_000, channels: 3, background: '#000' } }).png({ compressionLevel: 9 }).toBuffer();
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, bomb, 'image/png');
    const res = await get(thumbnailPath(serverName, mediaId, 'width=32&height=32&method=crop'));
    assert.equal(res.status, 413);
    assert.equal(res.json.errcode, 'M_TOO_LARGE');
  });
});
