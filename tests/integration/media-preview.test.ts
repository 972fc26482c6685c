// GET /preview_url against a local HTTP server: refused on loopback by default (by IP, by name, via a
// redirect), allowed when the config allows 127.0.0.1 explicitly; Open Graph tags parsed; cached.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials } from '../helpers/client.ts';
import sharp from 'sharp';
import { downloadPath, mediaRequest, parseMxc } from '../helpers/media.ts';

let title = 'A page &amp; its title';
let image: Buffer;
const pageHits: string[] = [];

function page(): string {
  return `<!doctype html><html><head><title>fallback</title>
    <meta property="og:title" content="${title}">
    <meta content='Described here' property='og:description'>
    <meta property="og:image" content="/image.png">
    <meta name="twitter:card" content="summary">
    </head><body>${'x'.repeat(1000)}</body></html>`;
}

describe('URL previews', () => {
  let site: http.Server;
  let siteUrl: string;
  let denied: TestServer;
  let allowed: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  const preview = (server: TestServer, who: Credentials, url: string) =>
    mediaRequest(server.baseUrl, 'GET', `/_matrix/client/v1/media/preview_url?url=${encodeURIComponent(url)}`, { token: who.accessToken });

  before(async () => {
    image = await sharp({ create: { width: 120, height: 80, channels: 3, background: '#0a0' } }).png().toBuffer();
    site = http.createServer((req, res) => {
      pageHits.push(req.url ?? '');
      if (req.url === '/redirect') { res.writeHead(302, { location: '/page' }); res.end(); return; }
      if (req.url === '/to-private') { res.writeHead(302, { location: 'http://10.255.255.1/page' }); res.end(); return; }
      if (req.url === '/to-v6-loopback') { res.writeHead(302, { location: `http://[::1]:${(site.address() as AddressInfo).port}/page` }); res.end(); return; }
      if (req.url === '/image.png') { res.writeHead(200, { 'content-type': 'image/png' }); res.end(image); return; }
      if (req.url === '/private-image') {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<meta property="og:title" content="t"><meta property="og:image" content="http://10.255.255.1/x.png">');
        return;
      }
      if (req.url === '/plain') { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('hi'); return; }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page());
    });
    await new Promise<void>((r) => site.listen(0, '127.0.0.1', () => r()));
    siteUrl = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
    // One after the other: two embedded PostgreSQLs starting at once on a loaded machine can miss the ready timeout.
    denied = await startServer({ env: { URL_PREVIEW: 'on' } });
    allowed = await startServer({ env: { URL_PREVIEW: 'on', URL_PREVIEW_IP_RANGE_ALLOWLIST: '127.0.0.1/32' } });
    [alice, bob] = await Promise.all([registerUser(denied.baseUrl), registerUser(allowed.baseUrl)]);
  });
  after(async () => {
    await Promise.all([denied?.stop(), allowed?.stop()]);
    site?.close();
  });

  test('by default, loopback is never fetched: by address, by name, by a mapped IPv6 form', async () => {
    const port = (site.address() as AddressInfo).port;
    const before = pageHits.length;
    for (const url of [`${siteUrl}/page`, `http://localhost:${port}/page`, `http://[::ffff:127.0.0.1]:${port}/page`, `http://0.0.0.0:${port}/page`]) {
      const res = await preview(denied, alice, url);
      assert.equal(res.status, 403, `${url}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.errcode, 'M_FORBIDDEN');
    }
    assert.equal(pageHits.length, before, 'the local server was never contacted');
  });

  test('allowed explicitly: Open Graph tags come back, the image stored here as mxc://, redirects followed', async () => {
    const res = await preview(allowed, bob, `${siteUrl}/page`);
    assert.equal(res.status, 200, JSON.stringify(res.json));
    assert.equal(res.json['og:title'], 'A page & its title');
    assert.equal(res.json['og:description'], 'Described here');
    assert.equal(res.json['og:image:width'], 120);
    assert.equal(res.json['og:image:height'], 80);
    assert.equal(res.json['og:image:type'], 'image/png');
    assert.equal(res.json['matrix:image:size'], image.length);
    const { serverName, mediaId } = parseMxc(res.json['og:image']);
    const stored = await mediaRequest(allowed.baseUrl, 'GET', downloadPath(serverName, mediaId), { token: bob.accessToken });
    assert.ok(stored.bytes.equals(image), 'the page image, served from this repository');
    // A URL that is an image is previewed as that image.
    const direct = await preview(allowed, bob, `${siteUrl}/image.png`);
    assert.equal(direct.status, 200);
    assert.match(direct.json['og:image'], /^mxc:\/\//);
    // An image on a refused address is left out; the page is still previewed.
    const privateImage = await preview(allowed, bob, `${siteUrl}/private-image`);
    assert.equal(privateImage.status, 200);
    assert.deepEqual(privateImage.json, { 'og:title': 't' });
    const redirected = await preview(allowed, bob, `${siteUrl}/redirect`);
    assert.equal(redirected.status, 200);
    assert.equal(redirected.json['og:title'], 'A page & its title');
    const plain = await preview(allowed, bob, `${siteUrl}/plain`);
    assert.equal(plain.status, 200);
    assert.deepEqual(plain.json, {});
  });

  test('every hop is checked: a redirect to a private or loopback address not allowed is refused', async () => {
    for (const p of ['/to-private', '/to-v6-loopback']) {
      const res = await preview(allowed, bob, `${siteUrl}${p}`);
      // 403 (refused before connecting), not 502 (a failed connection to 10.255.255.1 or ::1).
      assert.equal(res.status, 403, `${p}: ${JSON.stringify(res.json)}`);
    }
  });

  test('answers are cached', async () => {
    const url = `${siteUrl}/page?cached`;
    const first = await preview(allowed, bob, url);
    title = 'Changed title';
    const second = await preview(allowed, bob, url);
    assert.equal(first.json['og:title'], 'A page & its title');
    assert.deepEqual(second.json, first.json);
    assert.equal(pageHits.filter((h) => h === '/page?cached').length, 1, 'fetched once');
  });

  test('bad URLs are 400', async () => {
    for (const url of ['not a url', 'ftp://127.0.0.1/', 'file:///etc/passwd', 'http://user:pw@127.0.0.1/']) {
      const res = await preview(allowed, bob, url);
      assert.equal(res.status, 400, url);
    }
    const missing = await mediaRequest(allowed.baseUrl, 'GET', '/_matrix/client/v1/media/preview_url', { token: bob.accessToken });
    assert.equal(missing.status, 400);
  });
});
