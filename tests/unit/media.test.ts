// The media repository's pure parts: the previewer's IP policy, Content-Disposition, Open Graph
// parsing, the choice of a standard thumbnail size, and the media config options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_PREVIEW_DENYLIST, IpRangePolicy, parseCidr } from '../../homeserver/media/ip-ranges.ts';
import { contentDisposition } from '../../homeserver/media/serving.ts';
import { parseOpenGraph } from '../../homeserver/media/url-preview.ts';
import { selectSize } from '../../homeserver/media/thumbnails.ts';
import { loadConfig } from '../../homeserver/config.ts';
import { StartupError } from '../../homeserver/startup-error.ts';

test('the default IP policy refuses loopback, private, link-local and mapped forms; an allow range overrides', () => {
  const policy = new IpRangePolicy(DEFAULT_PREVIEW_DENYLIST, []);
  for (const ip of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '::1', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:a9fe:a9fe', '0.0.0.0', '::', '224.0.0.1']) {
    assert.equal(policy.permits(ip), false, ip);
  }
  for (const ip of ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946', '8.8.8.8']) assert.equal(policy.permits(ip), true, ip);
  const allowing = new IpRangePolicy(DEFAULT_PREVIEW_DENYLIST, ['127.0.0.1/32']);
  assert.equal(allowing.permits('127.0.0.1'), true);
  assert.equal(allowing.permits('127.0.0.2'), false);
  assert.equal(allowing.permits('0.0.0.0'), false, 'the unspecified address stays refused');
  assert.equal(policy.permits('not an ip'), false);
});

test('parseCidr accepts ranges and bare addresses, refuses the rest', () => {
  assert.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
  assert.deepEqual(parseCidr('::1'), { address: '::1', prefix: 128, family: 'ipv6' });
  for (const bad of ['10.0.0.0/33', '::/129', 'example.org/8', '10.0.0.0/8/1', '10.0.0.0/-1', '']) assert.equal(parseCidr(bad), undefined, bad);
});

test('Content-Disposition: inline only for the safe types; file names per RFC 6266', () => {
  assert.equal(contentDisposition('image/png', null), 'inline');
  assert.equal(contentDisposition('IMAGE/PNG; x=y', 'a.png'), 'inline; filename=a.png');
  assert.equal(contentDisposition('text/html', 'a.html'), 'attachment; filename=a.html');
  assert.equal(contentDisposition('image/svg+xml', null), 'attachment');
  assert.equal(contentDisposition('application/octet-stream', 'quote".txt'), "attachment; filename*=utf-8''quote%22.txt");
  assert.equal(contentDisposition('text/plain', 'naïve (1).txt'), "inline; filename*=utf-8''na%C3%AFve%20%281%29.txt");
});

test('Open Graph: og tags, entities decoded, title and description fallbacks, og:image resolved for fetching', () => {
  const parsed = parseOpenGraph(`<html><head><title> The  &lt;title&gt; </title>
    <meta name="description" content="Meta &#233;t&#xE9;">
    <meta property="og:site_name" content="Site">
    <meta property="og:image" content="/img/y.png?a=1&amp;b=2"><meta property="og:image:width" content="5"></head></html>`, new URL('http://x.example/page/'));
  assert.deepEqual(parsed, { og: { 'og:site_name': 'Site', 'og:title': 'The <title>', 'og:description': 'Meta été' }, imageUrl: 'http://x.example/img/y.png?a=1&b=2' });
  assert.equal(String(parseOpenGraph(`<meta property="og:description" content="${'d'.repeat(2000)}">`, new URL('http://x/')).og['og:description']).length, 500);
});

test('thumbnail sizes: the smallest standard size covering the request, else the largest', () => {
  assert.deepEqual(selectSize(32, 32, 'crop'), { width: 32, height: 32, method: 'crop' });
  assert.deepEqual(selectSize(33, 10, 'crop'), { width: 96, height: 96, method: 'crop' });
  assert.deepEqual(selectSize(500, 100, 'crop'), { width: 96, height: 96, method: 'crop' });
  assert.deepEqual(selectSize(100, 100, 'scale'), { width: 320, height: 240, method: 'scale' });
  assert.deepEqual(selectSize(641, 100, 'scale'), { width: 800, height: 600, method: 'scale' });
  assert.deepEqual(selectSize(5000, 5000, 'scale'), { width: 800, height: 600, method: 'scale' });
});

test('media options: defaults, and a bad value is one StartupError line naming it', () => {
  const c = loadConfig({});
  assert.equal(c.maxUploadBytes, 50 * 1024 * 1024);
  assert.equal(c.mediaQuotaBytes, 0);
  assert.equal(c.urlPreview, false);
  assert.ok(c.urlPreviewIpDenylist.includes('127.0.0.0/8'));
  assert.deepEqual(loadConfig({ URL_PREVIEW_IP_RANGE_ALLOWLIST: '127.0.0.1/32, ::1' }).urlPreviewIpAllowlist, ['127.0.0.1/32', '::1']);
  for (const [name, value] of [['MAX_UPLOAD_BYTES', '0'], ['MEDIA_QUOTA_BYTES', '-1'], ['URL_PREVIEW', 'yes'], ['URL_PREVIEW_IP_RANGE_DENYLIST', '10.0.0.0/8,nope']] as const) {
    assert.throws(() => loadConfig({ [name]: value }), (e: unknown) => e instanceof StartupError && e.message.startsWith(`${name}=`) && !e.message.includes('\n'), name);
  }
});
