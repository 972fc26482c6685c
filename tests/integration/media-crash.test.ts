// A server SIGKILLed while an upload streams in leaves no half file: nothing under the stored tree,
// no row pointing at partial bytes, the temp file removed at the next start; the reserved id can still
// be uploaded to afterwards.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials } from '../helpers/client.ts';
import { downloadPath, mediaFiles, mediaRequest, parseMxc } from '../helpers/media.ts';

const TOTAL = 4 * 1024 * 1024;
const CHUNK = 64 * 1024;

/** Starts an upload that sends CHUNK bytes every 50 ms; resolves once `sent` chunks are out. */
function slowUpload(baseUrl: string, method: string, path: string, token: string, chunksBeforeResolve: number): Promise<{ request: http.ClientRequest }> {
  return new Promise((resolve) => {
    const url = new URL(baseUrl + path);
    const request = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': String(TOTAL) } });
    request.on('error', () => { /* the server is killed under it */ });
    request.on('response', (res) => res.resume());
    let sent = 0;
    const timer = setInterval(() => {
      if (request.destroyed || sent * CHUNK >= TOTAL - CHUNK) { clearInterval(timer); return; }
      request.write(randomBytes(CHUNK));
      if (++sent === chunksBeforeResolve) resolve({ request });
    }, 50);
  });
}

async function until(pred: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (pred()) return;
  throw new Error('condition not met');
}

describe('media upload across a crash', () => {
  let server: TestServer;
  let alice: Credentials;

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
  });
  after(async () => { await server?.stop(); });

  test('SIGKILL mid-upload (direct and reserved-id): no half file visible or served; the id still takes its upload', async () => {
    const created = await mediaRequest(server.baseUrl, 'POST', '/_matrix/media/v1/create', { token: alice.accessToken });
    assert.equal(created.status, 200);
    const { serverName, mediaId } = parseMxc(created.json.content_uri);

    const direct = await slowUpload(server.baseUrl, 'POST', '/_matrix/media/v3/upload', alice.accessToken, 6);
    const reserved = await slowUpload(server.baseUrl, 'PUT', `/_matrix/media/v3/upload/${serverName}/${mediaId}`, alice.accessToken, 6);
    // Both bodies are being written to temp files, outside the stored tree.
    await until(() => mediaFiles(server.dataDir).filter((f) => f.startsWith('tmp/')).length === 2);
    assert.deepEqual(mediaFiles(server.dataDir).filter((f) => !f.startsWith('tmp/')), [], 'nothing stored while the bodies stream');

    await server.kill();
    direct.request.destroy();
    reserved.request.destroy();
    await server.restart();

    assert.deepEqual(mediaFiles(server.dataDir), [], 'the crashed uploads left no file behind');
    const pending = await mediaRequest(server.baseUrl, 'GET', `${downloadPath(serverName, mediaId)}?timeout_ms=0`, { token: alice.accessToken });
    assert.equal(pending.status, 504, 'the reserved id serves nothing partial');
    assert.equal(pending.json.errcode, 'M_NOT_YET_UPLOADED');

    const bytes = randomBytes(100_000);
    const put = await mediaRequest(server.baseUrl, 'PUT', `/_matrix/media/v3/upload/${serverName}/${mediaId}`, { token: alice.accessToken, body: bytes, contentType: 'application/octet-stream' });
    assert.equal(put.status, 200, JSON.stringify(put.json));
    const got = await mediaRequest(server.baseUrl, 'GET', downloadPath(serverName, mediaId), { token: alice.accessToken });
    assert.ok(got.bytes.equals(bytes));
    assert.deepEqual(mediaFiles(server.dataDir).filter((f) => f.startsWith('tmp/')), []);
  });
});
