// Server-side key backup over raw HTTP: versions, keys at every level, etag and count, the
// spec's rule for which key of a session stays, and M_WRONG_ROOM_KEYS_VERSION.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const ALGORITHM = 'm.megolm_backup.v1.curve25519-aes-sha2';

function key(fmi: number, fc: number, verified: boolean, tag: string) {
  return { first_message_index: fmi, forwarded_count: fc, is_verified: verified, session_data: { ephemeral: 'e', ciphertext: tag, mac: 'm' } };
}

describe('key backup over HTTP', () => {
  let server: TestServer;
  let alice: Credentials;
  const call = (method: string, path: string, body?: unknown, who: Credentials = alice) => api(server.baseUrl, method, path, { token: who.accessToken, body });

  before(async () => {
    server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } });
    alice = await registerUser(server.baseUrl);
  });
  after(async () => { await server?.stop(); });

  test('versions: create, read, update, delete; numbers are never reused', async () => {
    let r = await call('GET', `${C}/room_keys/version`);
    assert.equal(r.status, 404);
    assert.equal(r.body.errcode, 'M_NOT_FOUND');
    r = await call('POST', `${C}/room_keys/version`, { algorithm: ALGORITHM, auth_data: { public_key: 'abc' } });
    assert.equal(r.status, 200);
    const v1 = r.body.version as string;
    r = await call('GET', `${C}/room_keys/version`);
    assert.deepEqual(r.body, { algorithm: ALGORITHM, auth_data: { public_key: 'abc' }, count: 0, etag: '0', version: v1 });
    assert.equal((await call('PUT', `${C}/room_keys/version/${v1}`, { algorithm: ALGORITHM, auth_data: { public_key: 'abc', signatures: {} } })).status, 200);
    assert.deepEqual((await call('GET', `${C}/room_keys/version/${v1}`)).body.auth_data, { public_key: 'abc', signatures: {} });
    assert.equal((await call('PUT', `${C}/room_keys/version/${v1}`, { algorithm: 'other', auth_data: {} })).status, 400, 'the algorithm stays');
    assert.equal((await call('PUT', `${C}/room_keys/version/${v1}`, { algorithm: ALGORITHM, auth_data: {}, version: '999' })).status, 400, 'a body version must match');
    assert.equal((await call('GET', `${C}/room_keys/version/nonsense`)).status, 404);
    assert.equal((await call('DELETE', `${C}/room_keys/version/${v1}`)).status, 200);
    assert.equal((await call('GET', `${C}/room_keys/version/${v1}`)).status, 404);
    assert.equal((await call('DELETE', `${C}/room_keys/version/${v1}`)).status, 404);
    r = await call('POST', `${C}/room_keys/version`, { algorithm: ALGORITHM, auth_data: { public_key: 'def' } });
    assert.ok(Number(r.body.version) > Number(v1), 'a new number');
    // DELETE without a version removes the current one.
    assert.equal((await call('DELETE', `${C}/room_keys/version`)).status, 200);
    assert.equal((await call('GET', `${C}/room_keys/version`)).status, 404);
    // Another user sees none of it.
    const bob = await registerUser(server.baseUrl);
    assert.equal((await call('GET', `${C}/room_keys/version/${r.body.version}`, undefined, bob)).status, 404);
  });

  test('keys at every level, etag and count, the better key stays, the wrong version is refused', async () => {
    const v = (await call('POST', `${C}/room_keys/version`, { algorithm: ALGORITHM, auth_data: { public_key: 'k' } })).body.version as string;
    const room = '!room:example.org';
    const r1 = encodeURIComponent(room);
    let r = await call('PUT', `${C}/room_keys/keys?version=${v}`, { rooms: { [room]: { sessions: { s1: key(5, 1, false, 'first'), s2: key(0, 0, false, 'two') } } } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.count, 2);
    const etag1 = r.body.etag;
    // Room level and session level.
    r = await call('PUT', `${C}/room_keys/keys/${r1}?version=${v}`, { sessions: { s3: key(0, 0, false, 'three') } });
    assert.equal(r.body.count, 3);
    assert.notEqual(r.body.etag, etag1, 'the etag moves with the keys');
    r = await call('PUT', `${C}/room_keys/keys/${r1}/s4?version=${v}`, key(0, 0, true, 'four'));
    assert.equal(r.body.count, 4);

    // Replacement rules: a worse key keeps the stored one (and the etag), a better one replaces it.
    const etagBefore = (await call('GET', `${C}/room_keys/version/${v}`)).body.etag;
    r = await call('PUT', `${C}/room_keys/keys/${r1}/s1?version=${v}`, key(9, 0, false, 'higher index'));
    assert.equal(r.body.etag, etagBefore, 'nothing changed');
    r = await call('PUT', `${C}/room_keys/keys/${r1}/s1?version=${v}`, key(5, 2, false, 'more forwarded'));
    assert.equal(r.body.etag, etagBefore);
    assert.equal((await call('GET', `${C}/room_keys/keys/${r1}/s1?version=${v}`)).body.session_data.ciphertext, 'first');
    await call('PUT', `${C}/room_keys/keys/${r1}/s1?version=${v}`, key(5, 0, false, 'less forwarded'));
    assert.equal((await call('GET', `${C}/room_keys/keys/${r1}/s1?version=${v}`)).body.session_data.ciphertext, 'less forwarded');
    await call('PUT', `${C}/room_keys/keys/${r1}/s1?version=${v}`, key(2, 0, false, 'lower index'));
    assert.equal((await call('GET', `${C}/room_keys/keys/${r1}/s1?version=${v}`)).body.session_data.ciphertext, 'lower index');
    await call('PUT', `${C}/room_keys/keys/${r1}/s1?version=${v}`, key(50, 9, true, 'verified'));
    assert.equal((await call('GET', `${C}/room_keys/keys/${r1}/s1?version=${v}`)).body.session_data.ciphertext, 'verified', 'a verified key beats an unverified one');
    await call('PUT', `${C}/room_keys/keys/${r1}/s1?version=${v}`, key(0, 0, false, 'unverified'));
    assert.equal((await call('GET', `${C}/room_keys/keys/${r1}/s1?version=${v}`)).body.session_data.ciphertext, 'verified');

    // Reads at every level.
    r = await call('GET', `${C}/room_keys/keys?version=${v}`);
    assert.deepEqual(Object.keys(r.body.rooms[room].sessions).sort(), ['s1', 's2', 's3', 's4']);
    r = await call('GET', `${C}/room_keys/keys/${encodeURIComponent('!other:example.org')}?version=${v}`);
    assert.deepEqual(r.body, { sessions: {} });
    r = await call('GET', `${C}/room_keys/keys/${r1}/nosuch?version=${v}`);
    assert.equal(r.status, 404);
    assert.equal((await call('GET', `${C}/room_keys/keys?version=12345`)).status, 404);
    assert.equal((await call('GET', `${C}/room_keys/keys`)).status, 400, 'version is required');

    // A newer version: writes to the old one are refused with the current version.
    const v2 = (await call('POST', `${C}/room_keys/version`, { algorithm: ALGORITHM, auth_data: { public_key: 'k2' } })).body.version as string;
    r = await call('PUT', `${C}/room_keys/keys/${r1}/s5?version=${v}`, key(0, 0, false, 'late'));
    assert.equal(r.status, 403);
    assert.equal(r.body.errcode, 'M_WRONG_ROOM_KEYS_VERSION');
    assert.equal(r.body.current_version, v2);
    assert.equal((await call('GET', `${C}/room_keys/version/${v}`)).body.count, 4, 'nothing written to the old version');
    assert.equal((await call('PUT', `${C}/room_keys/keys?version=999`, { rooms: {} })).status, 404, 'an unknown version');
    // Bad keys change nothing.
    assert.equal((await call('PUT', `${C}/room_keys/keys/${r1}/s6?version=${v2}`, { first_message_index: -1, forwarded_count: 0, is_verified: false, session_data: {} })).status, 400);
    assert.equal((await call('GET', `${C}/room_keys/version/${v2}`)).body.count, 0);

    // Deletes at every level, with etag and count.
    r = await call('DELETE', `${C}/room_keys/keys/${r1}/s4?version=${v}`);
    assert.equal(r.body.count, 3);
    r = await call('DELETE', `${C}/room_keys/keys/${r1}?version=${v}`);
    assert.equal(r.body.count, 0);
    await call('PUT', `${C}/room_keys/keys?version=${v2}`, { rooms: { [room]: { sessions: { a: key(0, 0, false, 'a') } } } });
    r = await call('DELETE', `${C}/room_keys/keys?version=${v2}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.count, 0);
  });
});
