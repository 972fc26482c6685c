// Two workers on one database, one Redis and one DATA_DIR: media uploaded on one is served by the
// other, a download waiting on a reserved id on one worker is answered when the bytes arrive on the
// other, and thumbnails made on one are reused by the other.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials } from '../helpers/client.ts';
import { downloadPath, mediaFiles, mediaRequest, parseMxc, thumbnailPath, uploadMedia } from '../helpers/media.ts';

const skip = process.env.TEST_BACKEND === 'embedded' ? 'needs an external database and Redis' : false;

describe('media across workers', { skip }, () => {
  let a: TestServer;
  let b: TestServer;
  let alice: Credentials;

  before(async () => {
    a = await startServer({ redis: true });
    b = await startServer({ env: { DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX!, DATA_DIR: a.dataDir } });
    alice = await registerUser(a.baseUrl);
  });
  after(async () => {
    await b?.stop();
    await a?.stop();
  });

  test('uploaded on A, downloaded on B; a wait on B ends when the PUT lands on A', async () => {
    const bytes = randomBytes(30_000);
    const up = await uploadMedia(a.baseUrl, alice.accessToken, bytes, 'application/octet-stream');
    const got = await mediaRequest(b.baseUrl, 'GET', downloadPath(up.serverName, up.mediaId), { token: alice.accessToken });
    assert.equal(got.status, 200);
    assert.ok(got.bytes.equals(bytes));

    const created = await mediaRequest(b.baseUrl, 'POST', '/_matrix/media/v1/create', { token: alice.accessToken });
    const { serverName, mediaId } = parseMxc(created.json.content_uri);
    const started = Date.now();
    const waiting = mediaRequest(b.baseUrl, 'GET', `${downloadPath(serverName, mediaId)}?timeout_ms=20000`, { token: alice.accessToken });
    await new Promise((r) => setTimeout(r, 300));
    const later = randomBytes(1000);
    const put = await mediaRequest(a.baseUrl, 'PUT', `/_matrix/media/v3/upload/${serverName}/${mediaId}`, { token: alice.accessToken, body: later, contentType: 'application/octet-stream' });
    assert.equal(put.status, 200);
    const waited = await waiting;
    assert.equal(waited.status, 200);
    assert.ok(waited.bytes.equals(later));
    const ms = Date.now() - started;
    console.log(`cross-worker wait answered after ${ms} ms`);
    assert.ok(ms < 15_000, `answered long before its timeout (${ms} ms)`);
  });

  test('a thumbnail made on A is served by B from storage', async () => {
    const png = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#345' } }).png().toBuffer();
    const { serverName, mediaId } = await uploadMedia(a.baseUrl, alice.accessToken, png, 'image/png');
    const onA = await mediaRequest(a.baseUrl, 'GET', thumbnailPath(serverName, mediaId, 'width=96&height=96&method=crop'), { token: alice.accessToken });
    assert.equal(onA.status, 200);
    const files = mediaFiles(a.dataDir).filter((f) => f.startsWith('thumbnails/'));
    const onB = await mediaRequest(b.baseUrl, 'GET', thumbnailPath(serverName, mediaId, 'width=96&height=96&method=crop'), { token: alice.accessToken });
    assert.ok(onB.bytes.equals(onA.bytes));
    assert.deepEqual(mediaFiles(a.dataDir).filter((f) => f.startsWith('thumbnails/')), files, 'no second thumbnail made');
  });
});
