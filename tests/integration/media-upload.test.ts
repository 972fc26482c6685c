// The media repository's uploads and downloads: bytes and type round-trip on both upload paths,
// authentication, safe serving headers, deduplication, the frozen v3 download, the async upload's
// edge cases, the size limit (nothing left on disk) and the per-user quota.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient } from 'matrix-js-sdk';
import pg from 'pg';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { downloadPath, mediaFiles, mediaRequest, parseMxc, uploadMedia } from '../helpers/media.ts';

const MAX_UPLOAD = 256 * 1024;
const QUOTA = 3 * MAX_UPLOAD;
const CSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

describe('media uploads and downloads', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  const req = (method: string, p: string, opts: Parameters<typeof mediaRequest>[3] = {}) => mediaRequest(server.baseUrl, method, p, opts);

  before(async () => {
    server = await startServer({ env: { MAX_UPLOAD_BYTES: String(MAX_UPLOAD), MEDIA_QUOTA_BYTES: String(QUOTA) } });
    [alice, bob] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl)]);
  });
  after(async () => { await server?.stop(); });

  test('POST /upload: bytes, content type and file name round-trip on the authenticated download', async () => {
    const bytes = randomBytes(70_000);
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, bytes, 'image/png', 'photo.png');
    assert.equal(serverName, server.serverName);
    const res = await req('GET', downloadPath(serverName, mediaId), { token: bob.accessToken });
    assert.equal(res.status, 200);
    assert.ok(res.bytes.equals(bytes), 'the same bytes come back');
    assert.equal(res.headers.get('content-type'), 'image/png');
    assert.equal(res.headers.get('content-length'), String(bytes.length));
    assert.equal(res.headers.get('content-disposition'), 'inline; filename=photo.png');
    assert.equal(res.headers.get('cross-origin-resource-policy'), 'cross-origin');
    // The file name in the path overrides the uploaded one; a non-ASCII one is RFC 6266-encoded.
    const named = await req('GET', `${downloadPath(serverName, mediaId)}/${encodeURIComponent('été 1.png')}`, { token: bob.accessToken });
    assert.equal(named.status, 200);
    assert.equal(named.headers.get('content-disposition'), "inline; filename*=utf-8''%C3%A9t%C3%A9%201.png");
  });

  test('POST /create then PUT /upload: round-trip; a second PUT is M_CANNOT_OVERWRITE_MEDIA; another user is refused', async () => {
    const created = await req('POST', '/_matrix/media/v1/create', { token: alice.accessToken });
    assert.equal(created.status, 200, JSON.stringify(created.json));
    assert.ok(created.json.unused_expires_at > Date.now());
    const { serverName, mediaId } = parseMxc(created.json.content_uri);
    const put = (who: Credentials, body: Buffer) => req('PUT', `/_matrix/media/v3/upload/${serverName}/${mediaId}?filename=notes.txt`, { token: who.accessToken, body, contentType: 'text/plain' });
    const pending = await req('GET', `${downloadPath(serverName, mediaId)}?timeout_ms=0`, { token: alice.accessToken });
    assert.equal(pending.status, 504);
    assert.equal(pending.json.errcode, 'M_NOT_YET_UPLOADED');
    const other = await put(bob, Buffer.from('not yours'));
    assert.equal(other.status, 403);
    assert.equal(other.json.errcode, 'M_FORBIDDEN');
    // A download waiting on the id is answered as soon as the bytes arrive.
    const waiting = req('GET', `${downloadPath(serverName, mediaId)}?timeout_ms=15000`, { token: bob.accessToken });
    await new Promise((r) => setTimeout(r, 300));
    const bytes = Buffer.from('hello, async upload\n');
    const first = await put(alice, bytes);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    const waited = await waiting;
    assert.equal(waited.status, 200);
    assert.ok(waited.bytes.equals(bytes));
    assert.equal(waited.headers.get('content-type'), 'text/plain');
    assert.equal(waited.headers.get('content-disposition'), 'inline; filename=notes.txt');
    const again = await put(alice, Buffer.from('other bytes'));
    assert.equal(again.status, 409);
    assert.equal(again.json.errcode, 'M_CANNOT_OVERWRITE_MEDIA');
    const still = await req('GET', downloadPath(serverName, mediaId), { token: alice.accessToken });
    assert.ok(still.bytes.equals(bytes), 'the refused PUT changed nothing');
    const unknown = await req('PUT', `/_matrix/media/v3/upload/${serverName}/nosuchid`, { token: alice.accessToken, body: bytes });
    assert.equal(unknown.status, 404);
  });

  test('no token → 401 M_MISSING_TOKEN on every authenticated media endpoint', async () => {
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, 'x', 'text/plain');
    for (const p of [downloadPath(serverName, mediaId), `/_matrix/client/v1/media/thumbnail/${serverName}/${mediaId}?width=32&height=32`, '/_matrix/client/v1/media/config', '/_matrix/client/v1/media/preview_url?url=http://example.org/']) {
      const res = await req('GET', p);
      assert.equal(res.status, 401, p);
      assert.equal(res.json.errcode, 'M_MISSING_TOKEN', p);
    }
    const upload = await req('POST', '/_matrix/media/v3/upload', { body: 'x', contentType: 'text/plain' });
    assert.equal(upload.status, 401);
    assert.equal(upload.json.errcode, 'M_MISSING_TOKEN');
  });

  test('config: m.upload.size is the configured limit, on v1 and the old v3 path', async () => {
    for (const p of ['/_matrix/client/v1/media/config', '/_matrix/media/v3/config']) {
      const res = await req('GET', p, { token: alice.accessToken });
      assert.equal(res.status, 200);
      assert.deepEqual(res.json, { 'm.upload.size': MAX_UPLOAD });
    }
  });

  test('an HTML upload is an attachment, with the sandboxing CSP, nosniff and CORP headers', async () => {
    const html = '<html><body><script>alert(document.cookie)</script></body></html>';
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, html, 'text/html', 'page.html');
    const res = await req('GET', downloadPath(serverName, mediaId), { token: alice.accessToken });
    assert.equal(res.status, 200);
    assert.equal(res.bytes.toString(), html);
    assert.match(res.headers.get('content-disposition') ?? '', /^attachment; filename=page\.html$/);
    assert.equal(res.headers.get('content-security-policy'), CSP);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('cross-origin-resource-policy'), 'cross-origin');
    // SVG can script too; text/html with parameters is still HTML.
    for (const type of ['image/svg+xml', 'text/html; charset=utf-8', 'application/xhtml+xml']) {
      const up = await uploadMedia(server.baseUrl, alice.accessToken, html, type);
      const got = await req('GET', downloadPath(up.serverName, up.mediaId), { token: alice.accessToken });
      assert.equal(got.headers.get('content-disposition'), 'attachment', type);
    }
  });

  test('identical bytes uploaded twice are stored once, under two media ids', async () => {
    const bytes = randomBytes(50_000);
    const before = mediaFiles(server.dataDir).filter((f) => f.startsWith('content/'));
    const a = await uploadMedia(server.baseUrl, alice.accessToken, bytes, 'application/octet-stream');
    const b = await uploadMedia(server.baseUrl, bob.accessToken, bytes, 'application/pdf', 'doc.pdf');
    assert.notEqual(a.mediaId, b.mediaId);
    const added = mediaFiles(server.dataDir).filter((f) => f.startsWith('content/') && !before.includes(f));
    assert.equal(added.length, 1, `one stored file for two uploads: ${added.join(', ')}`);
    const gotA = await req('GET', downloadPath(a.serverName, a.mediaId), { token: bob.accessToken });
    const gotB = await req('GET', downloadPath(b.serverName, b.mediaId), { token: alice.accessToken });
    assert.ok(gotA.bytes.equals(bytes) && gotB.bytes.equals(bytes));
    assert.equal(gotA.headers.get('content-type'), 'application/octet-stream');
    assert.equal(gotB.headers.get('content-type'), 'application/pdf');
    assert.equal(gotB.headers.get('content-disposition'), 'attachment; filename=doc.pdf');
  });

  test('the deprecated unauthenticated /_matrix/media/v3/download and thumbnail are 404 for new media', async () => {
    const { serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, 'frozen', 'text/plain');
    for (const p of [`/_matrix/media/v3/download/${serverName}/${mediaId}`, `/_matrix/media/v3/download/${serverName}/${mediaId}/f.txt`, `/_matrix/media/v3/thumbnail/${serverName}/${mediaId}?width=32&height=32`]) {
      const res = await req('GET', p);
      assert.equal(res.status, 404, p);
      assert.equal(res.json.errcode, 'M_NOT_FOUND', p);
      const withToken = await req('GET', p, { token: alice.accessToken });
      assert.equal(withToken.status, 404, p);
    }
  });

  test('unknown, remote and malformed media ids', async () => {
    const unknown = await req('GET', downloadPath(server.serverName, 'AAAAAAAAAAAAAAAAAAAAAAAA'), { token: alice.accessToken });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.errcode, 'M_NOT_FOUND');
    // Remote media is asked of its server (issue 11: federation); one that cannot be reached is 502, as in Synapse.
    const remote = await req('GET', downloadPath('elsewhere.example', 'abc'), { token: alice.accessToken });
    assert.equal(remote.status, 502);
    const bad = await req('GET', downloadPath(server.serverName, 'a.b'), { token: alice.accessToken });
    assert.equal(bad.status, 400);
  });

  test('an upload over MAX_UPLOAD_BYTES is 413 M_TOO_LARGE and leaves nothing on disk (declared and streamed)', async () => {
    const before = mediaFiles(server.dataDir);
    const declared = await req('POST', '/_matrix/media/v3/upload', { token: bob.accessToken, body: randomBytes(MAX_UPLOAD + 1), contentType: 'application/octet-stream' });
    assert.equal(declared.status, 413);
    assert.equal(declared.json.errcode, 'M_TOO_LARGE');
    // Without a Content-Length (chunked), the limit is found while the body streams.
    const chunk = randomBytes(64 * 1024);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > MAX_UPLOAD * 2) { controller.close(); return; }
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const streamed = await req('POST', '/_matrix/media/v3/upload', { token: bob.accessToken, body: stream, contentType: 'application/octet-stream' });
    assert.equal(streamed.status, 413);
    assert.equal(streamed.json.errcode, 'M_TOO_LARGE');
    assert.deepEqual(mediaFiles(server.dataDir), before, 'no file was added under DATA_DIR/media');
    // Exactly the limit is fine.
    await uploadMedia(server.baseUrl, bob.accessToken, randomBytes(MAX_UPLOAD));
  });

  test('the per-user quota: once used up, uploads are refused (403 M_RESOURCE_LIMIT_EXCEEDED) and nothing is stored', async () => {
    const carol = await registerUser(server.baseUrl);
    for (let i = 0; i < 3; i++) await uploadMedia(server.baseUrl, carol.accessToken, randomBytes(MAX_UPLOAD));
    const before = mediaFiles(server.dataDir);
    const refused = await req('POST', '/_matrix/media/v3/upload', { token: carol.accessToken, body: randomBytes(10), contentType: 'text/plain' });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.errcode, 'M_RESOURCE_LIMIT_EXCEEDED');
    assert.deepEqual(mediaFiles(server.dataDir), before);
    // The async path counts against the same quota; other users are unaffected.
    const created = await req('POST', '/_matrix/media/v1/create', { token: carol.accessToken });
    const { serverName, mediaId } = parseMxc(created.json.content_uri);
    const put = await req('PUT', `/_matrix/media/v3/upload/${serverName}/${mediaId}`, { token: carol.accessToken, body: 'x', contentType: 'text/plain' });
    assert.equal(put.status, 403);
    assert.equal(put.json.errcode, 'M_RESOURCE_LIMIT_EXCEEDED');
    await uploadMedia(server.baseUrl, alice.accessToken, 'still fine', 'text/plain');
  });

  test("an uploaded image as a profile's and a room's avatar: set, read back, downloaded", async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082', 'hex');
    const { uri, serverName, mediaId } = await uploadMedia(server.baseUrl, alice.accessToken, png, 'image/png', 'me.png');
    const C = '/_matrix/client/v3';
    const set = await api(server.baseUrl, 'PUT', `${C}/profile/${encodeURIComponent(alice.userId)}/avatar_url`, { token: alice.accessToken, body: { avatar_url: uri } });
    assert.equal(set.status, 200);
    const read = await api(server.baseUrl, 'GET', `${C}/profile/${encodeURIComponent(alice.userId)}`, { token: bob.accessToken });
    assert.equal(read.body.avatar_url, uri);
    const notMxc = await api(server.baseUrl, 'PUT', `${C}/profile/${encodeURIComponent(alice.userId)}/avatar_url`, { token: alice.accessToken, body: { avatar_url: 'https://example.org/a.png' } });
    assert.equal(notMxc.status, 400);
    const room = await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: { initial_state: [{ type: 'm.room.avatar', state_key: '', content: { url: uri } }] } });
    assert.equal(room.status, 200);
    const state = await api(server.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(room.body.room_id)}/state/m.room.avatar`, { token: alice.accessToken });
    assert.equal(state.body.url, uri);
    const got = await req('GET', downloadPath(serverName, mediaId), { token: bob.accessToken });
    assert.ok(got.bytes.equals(png));
  });

  test('matrix-js-sdk: uploadContent, the authenticated media config, mxcUrlToHttp with authentication', async () => {
    const client = createClient({ baseUrl: server.baseUrl, userId: alice.userId, accessToken: alice.accessToken, deviceId: alice.deviceId });
    const bytes = randomBytes(4096);
    const { content_uri: uri } = await client.uploadContent(new Blob([bytes]), { name: 'sdk.bin', type: 'application/octet-stream' });
    assert.match(uri, /^mxc:\/\/localhost\//);
    assert.deepEqual(await client.getMediaConfig(true), { 'm.upload.size': MAX_UPLOAD });
    const url = client.mxcUrlToHttp(uri, undefined, undefined, undefined, false, true, true);
    assert.ok(url?.startsWith(`${server.baseUrl}/_matrix/client/v1/media/download/`), url ?? 'no URL');
    const got = await fetch(url!, { headers: { authorization: `Bearer ${alice.accessToken}` } });
    assert.equal(got.status, 200);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
  });

  test('URL previews are off unless configured: 404 M_UNRECOGNIZED', async () => {
    const res = await req('GET', `/_matrix/client/v1/media/preview_url?url=${encodeURIComponent('http://example.org/')}`, { token: alice.accessToken });
    assert.equal(res.status, 404);
    assert.equal(res.json.errcode, 'M_UNRECOGNIZED');
  });

  test('bad upload parameters are refused and store nothing', async () => {
    const before = mediaFiles(server.dataDir);
    const longName = await req('POST', `/_matrix/media/v3/upload?filename=${'a'.repeat(300)}`, { token: alice.accessToken, body: 'x', contentType: 'text/plain' });
    assert.equal(longName.status, 400);
    const badType = await req('POST', '/_matrix/media/v3/upload', { token: alice.accessToken, body: 'x', contentType: 'not a type' });
    assert.equal(badType.status, 400);
    assert.deepEqual(mediaFiles(server.dataDir), before);
  });

  // It expires the id through the external database, so it exists on that backend only.
  if (process.env.TEST_BACKEND !== 'embedded') test('an id from /create that expired unused: PUT and download are 404, and the sweep drops it', async () => {
    const created = await req('POST', '/_matrix/media/v1/create', { token: bob.accessToken });
    const { serverName, mediaId } = parseMxc(created.json.content_uri);
    const db = new pg.Client({ connectionString: server.env.DATABASE_URL });
    await db.connect();
    try {
      await db.query('UPDATE media SET unused_expires_ts = $1 WHERE media_id = $2', [Date.now() - 1, mediaId]);
      const put = await req('PUT', `/_matrix/media/v3/upload/${serverName}/${mediaId}`, { token: bob.accessToken, body: 'late', contentType: 'text/plain' });
      assert.equal(put.status, 404);
      assert.equal(put.json.errcode, 'M_NOT_FOUND');
      const get = await req('GET', `${downloadPath(serverName, mediaId)}?timeout_ms=5000`, { token: bob.accessToken });
      assert.equal(get.status, 404, 'an expired id is not waited on');
      // The sweep runs when the background jobs start (then hourly).
      await server.restart();
      let left = 1;
      for (const end = Date.now() + 15_000; left && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
        left = (await db.query('SELECT 1 FROM media WHERE media_id = $1', [mediaId])).rows.length;
      }
      assert.equal(left, 0, 'the expired id was dropped');
    } finally {
      await db.end();
    }
  });

  test('POST /create is limited to a few ids waiting for their upload', async () => {
    const dave = await registerUser(server.baseUrl);
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await req('POST', '/_matrix/media/v1/create', { token: dave.accessToken })).status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
  });
});
