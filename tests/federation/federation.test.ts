// Issue 11 (federation without the DAG): three of our homeservers on loopback, each terminating
// TLS itself (FEDERATION_PORT) with a certificate of a CA made here; server names with explicit
// ports (localhost:P) and an IP literal (127.0.0.1:P). Keys (direct and through a notary), signed
// request verification, remote profiles and keys, to-device and device-list EDUs, /send
// idempotence, back-off then catch-up, private-range refusal, discovery by explicit port and IP.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.ts';
import { connectDatabase } from '../helpers/database.ts';
import { rawApi, registerUser, type Credentials } from '../helpers/client.ts';
import { generateSigningKey, signJson, signingKeyFromSeed, verifyJsonSignature, type SigningKey } from '../../homeserver/protocol/signing.ts';
import { signRequest } from '../../homeserver/protocol/x-matrix.ts';
import { formatSigningKeyFile, parseSigningKeyFile } from '../../homeserver/server/keys.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fed-test-'));
let ca: string;
let A: TestServer; let B: TestServer; let C: TestServer;
let fa: number; let fb: number; let fc: number;
let alice: Credentials; let bob: Credentials; let carol: Credentials;
/** C's first signing key (replaced at start: an old key from then on). */
let cOldKey: SigningKey;

/** A local CA and one certificate for localhost and 127.0.0.1, made with openssl. */
function makeCertificates(): { cert: string; key: string } {
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: tmp, stdio: 'pipe' });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=federation test CA', '-days', '2',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
  fs.writeFileSync(path.join(tmp, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf']);
  return { cert: path.join(tmp, 'server.crt'), key: path.join(tmp, 'server.key') };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address() as net.AddressInfo; srv.close(() => resolve(port)); });
  });
}

/** One HTTPS request to a federation port (trusting the test CA). */
function fed(port: number, method: string, urlPath: string, opts: { authorization?: string; body?: unknown } = {}): Promise<{ status: number; body: any }> {
  const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, method, path: urlPath, ca, servername: 'localhost',
      headers: { ...(opts.authorization ? { authorization: opts.authorization } : {}), ...(payload ? { 'content-type': 'application/json' } : {}) },
    }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => { try { resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined }); } catch (e) { reject(e); } });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A request signed as `origin` with `key` for `destination`, sent to `port`. */
function signedFed(port: number, origin: string, key: SigningKey, destination: string, method: string, urlPath: string, body?: unknown) {
  const authorization = signRequest({ method, uri: urlPath, origin, destination, ...(body !== undefined ? { content: body } : {}) }, key);
  return fed(port, method, urlPath, { authorization, body });
}

/** The to-device events a user's device receives within `ms` (a sync loop from `since`). */
async function toDeviceEvents(server: TestServer, who: Credentials, since: string | undefined, ms: number, until: (events: any[]) => boolean): Promise<{ events: any[]; next: string }> {
  const events: any[] = [];
  let token = since;
  const end = Date.now() + ms;
  do {
    const q = token ? `?since=${encodeURIComponent(token)}&timeout=500` : '?timeout=0';
    const r = await rawApi(server.baseUrl, 'GET', `/_matrix/client/v3/sync${q}`, who.accessToken);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    token = r.body.next_batch;
    events.push(...(r.body.to_device?.events ?? []));
    if (until(events)) break;
  } while (Date.now() < end);
  return { events, next: token! };
}

async function syncToken(server: TestServer, who: Credentials): Promise<string> {
  return (await toDeviceEvents(server, who, undefined, 0, () => true)).next;
}

before(async () => {
  const { cert, key } = makeCertificates();
  ca = fs.readFileSync(path.join(tmp, 'ca.crt'), 'utf8');
  [fa, fb, fc] = [await freePort(), await freePort(), await freePort()];
  const common = {
    FEDERATION_CA_FILE: path.join(tmp, 'ca.crt'), TLS_CERT: cert, TLS_KEY: key, REGISTRATION: 'open',
    FEDERATION_RETRY_MIN_MS: '300', FEDERATION_RETRY_MAX_MS: '1500', FEDERATION_REQUEST_TIMEOUT_MS: '5000',
  };
  // C's key is a file in Synapse's format, given with SIGNING_KEY_PATH.
  cOldKey = generateSigningKey('old1');
  fs.writeFileSync(path.join(tmp, 'c-old.key'), formatSigningKeyFile(cOldKey));
  [A, B, C] = await Promise.all([
    startServer({ env: { ...common, SERVER_NAME: `localhost:${fa}`, FEDERATION_PORT: String(fa), FEDERATION_IP_RANGE_ALLOW: '127.0.0.0/8,::1/128' } }),
    startServer({ env: { ...common, SERVER_NAME: `localhost:${fb}`, FEDERATION_PORT: String(fb), FEDERATION_IP_RANGE_ALLOW: '127.0.0.0/8,::1/128' } }),
    // C: an IP literal as its name; reaches only 127.0.0.1 (and ::1); asks A for keys it cannot fetch itself.
    startServer({ env: { ...common, SERVER_NAME: `127.0.0.1:${fc}`, FEDERATION_PORT: String(fc), FEDERATION_IP_RANGE_ALLOW: '127.0.0.1/32,::1/128', TRUSTED_KEY_SERVERS: `localhost:${fa}`, SIGNING_KEY_PATH: path.join(tmp, 'c-old.key') } }),
  ]);
  // C's key is replaced by another file before anyone fetched C's keys: the first one is an old key now.
  const cNewKey = generateSigningKey('new2');
  fs.writeFileSync(path.join(tmp, 'c-new.key'), formatSigningKeyFile(cNewKey));
  C.env.SIGNING_KEY_PATH = path.join(tmp, 'c-new.key');
  await C.restart();
  [alice, bob, carol] = await Promise.all([registerUser(A.baseUrl), registerUser(B.baseUrl), registerUser(C.baseUrl)]);
});

after(async () => {
  await Promise.all([A, B, C].filter(Boolean).map((s) => s.stop()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('key server: our keys, self-signed, valid for a while, the key file in DATA_DIR; old keys as old_verify_keys', async () => {
  const r = await fed(fa, 'GET', '/_matrix/key/v2/server');
  assert.equal(r.status, 200);
  assert.equal(r.body.server_name, `localhost:${fa}`);
  assert.ok(r.body.valid_until_ts > Date.now() + 3600_000);
  const [keyId, { key }] = Object.entries(r.body.verify_keys as Record<string, { key: string }>)[0]!;
  assert.ok(verifyJsonSignature(r.body, `localhost:${fa}`, keyId, key));
  const file = parseSigningKeyFile(fs.readFileSync(path.join(A.dataDir, 'signing.key'), 'utf8'))!;
  assert.equal(file.keyId, keyId, 'the key made on first start is kept in DATA_DIR/signing.key');
  assert.equal(file.publicKey, key);

  const c = await fed(fc, 'GET', '/_matrix/key/v2/server');
  assert.deepEqual(Object.keys(c.body.verify_keys), ['ed25519:new2'], "the configured file's key signs");
  assert.equal(c.body.old_verify_keys['ed25519:old1'].key, cOldKey.publicKey);
  assert.ok(c.body.old_verify_keys['ed25519:old1'].expired_ts <= Date.now());
  assert.ok(verifyJsonSignature(c.body, `127.0.0.1:${fc}`, 'ed25519:new2', c.body.verify_keys['ed25519:new2'].key));

  const wk = await fed(fa, 'GET', '/.well-known/matrix/server');
  assert.deepEqual(wk.body, { 'm.server': `localhost:${fa}` });
  assert.equal((await fed(fa, 'GET', '/_matrix/client/versions')).status, 404, 'the federation port serves no client API');
  const v = await fed(fa, 'GET', '/_matrix/federation/v1/version');
  assert.equal(v.body.server.name, 'super-server');
});

test('an unreadable SIGNING_KEY_PATH stops the start with a clear message (no new key in its place)', async () => {
  await assert.rejects(startServer({ env: { SIGNING_KEY_PATH: path.join(tmp, 'missing.key') } }), /SIGNING_KEY_PATH .*missing\.key cannot be read \(ENOENT\)/);
});

test('remote profile: a user of another server, asked of it (explicit port and IP literal names)', async () => {
  assert.equal((await rawApi(B.baseUrl, 'PUT', `/_matrix/client/v3/profile/${encodeURIComponent(bob.userId)}/displayname`, bob.accessToken, { displayname: 'Bob of B' })).status, 200);
  const r = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(bob.userId)}`, alice.accessToken);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.displayname, 'Bob of B');
  const one = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(bob.userId)}/displayname`, alice.accessToken);
  assert.deepEqual(one.body, { displayname: 'Bob of B' });
  const none = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(`@nobody:localhost:${fb}`)}`, alice.accessToken);
  assert.equal(none.status, 404);
  // An IP-literal server name (C) reaching a host:port one (B), and back.
  assert.equal((await rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(bob.userId)}`, carol.accessToken)).body.displayname, 'Bob of B');
  assert.equal((await rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(carol.userId)}`, bob.accessToken)).status, 200);
});

test('remote keys: /keys/query and /keys/claim fan out to the users\' servers; an unreachable server is a failure', async () => {
  const device = generateSigningKey(bob.deviceId);
  const deviceKeys = signJson({
    user_id: bob.userId, device_id: bob.deviceId, algorithms: ['m.olm.v1.curve25519-aes-sha2'],
    keys: { [`ed25519:${bob.deviceId}`]: device.publicKey, [`curve25519:${bob.deviceId}`]: 'curvekeycurvekeycurvekeycurvekeycurvekeyAAA' },
  }, bob.userId, signingKeyFromSeed(`ed25519:${bob.deviceId}`, device.seed.toString('base64')));
  const otk = signJson({ key: 'onetimekeyonetimekeyonetimekeyonetimekey123' }, bob.userId, signingKeyFromSeed(`ed25519:${bob.deviceId}`, device.seed.toString('base64')));
  const up = await rawApi(B.baseUrl, 'POST', '/_matrix/client/v3/keys/upload', bob.accessToken, { device_keys: deviceKeys, one_time_keys: { 'signed_curve25519:AAAA': otk } });
  assert.equal(up.status, 200, JSON.stringify(up.body));

  const unreachable = `@x:127.0.0.1:${await freePort()}`;
  const q = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/keys/query', alice.accessToken, { device_keys: { [bob.userId]: [], [unreachable]: [] }, timeout: 5000 });
  assert.equal(q.status, 200);
  assert.deepEqual(q.body.device_keys[bob.userId][bob.deviceId].keys, deviceKeys.keys);
  assert.ok(verifyJsonSignature(q.body.device_keys[bob.userId][bob.deviceId], bob.userId, `ed25519:${bob.deviceId}`, device.publicKey), 'the device keys arrive as signed');
  assert.equal(q.body.device_keys[bob.userId][bob.deviceId].unsigned?.device_display_name, undefined, 'device names stay on their server');
  assert.ok(q.body.failures[unreachable.slice(3)], 'the unreachable server is reported in failures');

  const c1 = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/keys/claim', alice.accessToken, { one_time_keys: { [bob.userId]: { [bob.deviceId]: 'signed_curve25519' } } });
  assert.deepEqual(c1.body.one_time_keys[bob.userId][bob.deviceId], { 'signed_curve25519:AAAA': otk });
  const c2 = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/keys/claim', alice.accessToken, { one_time_keys: { [bob.userId]: { [bob.deviceId]: 'signed_curve25519' } } });
  assert.deepEqual(c2.body.one_time_keys, {}, 'a one-time key is claimed once');

  // query/directory: B's own alias (the auto-join room), refused for another server's alias.
  const dir = await signedFed(fb, `127.0.0.1:${fc}`, parseSigningKeyFile(fs.readFileSync(path.join(tmp, 'c-new.key'), 'utf8'))!, `localhost:${fb}`, 'GET', `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(`#global:localhost:${fb}`)}`);
  assert.equal(dir.status, 200, JSON.stringify(dir.body));
  assert.match(dir.body.room_id, /^!/);
  assert.deepEqual(dir.body.servers, [`localhost:${fb}`]);
  const elsewhere = await signedFed(fb, `127.0.0.1:${fc}`, parseSigningKeyFile(fs.readFileSync(path.join(tmp, 'c-new.key'), 'utf8'))!, `localhost:${fb}`, 'GET', `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(`#global:localhost:${fa}`)}`);
  assert.equal(elsewhere.status, 404);

  const devices = await signedFed(fb, `127.0.0.1:${fc}`, parseSigningKeyFile(fs.readFileSync(path.join(tmp, 'c-new.key'), 'utf8'))!, `localhost:${fb}`, 'GET', `/_matrix/federation/v1/user/devices/${encodeURIComponent(bob.userId)}`);
  assert.equal(devices.status, 200, JSON.stringify(devices.body));
  assert.deepEqual(devices.body.devices.map((d: any) => d.device_id), [bob.deviceId]);
  assert.equal(typeof devices.body.stream_id, 'number');
});

test('to-device across servers, and remote public rooms', async () => {
  const since = await syncToken(B, bob);
  const put = await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/sendToDevice/m.test/t1`, alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { hello: 'from A' } } } });
  assert.equal(put.status, 200);
  const got = await toDeviceEvents(B, bob, since, 10_000, (ev) => ev.length > 0);
  assert.deepEqual(got.events, [{ sender: alice.userId, type: 'm.test', content: { hello: 'from A' } }]);
  // The same transaction id again sends nothing again.
  await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/sendToDevice/m.test/t1`, alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { hello: 'from A' } } } });
  assert.deepEqual((await toDeviceEvents(B, bob, got.next, 1_000, (ev) => ev.length > 0)).events, []);

  const rooms = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/publicRooms?server=${encodeURIComponent(`localhost:${fb}`)}`, alice.accessToken);
  assert.equal(rooms.status, 200, JSON.stringify(rooms.body));
  assert.ok(Array.isArray(rooms.body.chunk));
});

test("our users' events go from the room engine's outbox to the other servers concerned (a ban of a remote user reaches its server)", async () => {
  const room = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, { preset: 'private_chat' });
  assert.equal(room.status, 200, JSON.stringify(room.body));
  const ban = await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/ban`, alice.accessToken, { user_id: bob.userId, reason: 'test' });
  assert.equal(ban.status, 200, JSON.stringify(ban.body));
  const last = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/messages?dir=b&limit=1`, alice.accessToken);
  const eventId = last.body.chunk[0].event_id as string;
  assert.equal(last.body.chunk[0].content.membership, 'ban');
  const db = await connectDatabase(B);
  try {
    let answer: any;
    for (const end = Date.now() + 10_000; Date.now() < end && !answer; await new Promise((r) => setTimeout(r, 200))) {
      const rows = await db.query('SELECT response_json FROM federation_inbound_txns WHERE origin = $1', [`localhost:${fa}`]);
      answer = rows.rows.map((r) => JSON.parse(r.response_json)).find((a) => a.pdus?.[eventId]);
    }
    assert.ok(answer, 'B received the ban event in a transaction from A, under the same event ID');
    assert.ok(answer.pdus[eventId].error, 'and answered it (PDUs are not accepted yet)');
  } finally { await db.end(); }
});

test('signed requests: unsigned, wrong signature, wrong destination, unknown key, expired key are 401 and change nothing', async () => {
  const cName = `127.0.0.1:${fc}`;
  const bName = `localhost:${fb}`;
  const cKey = parseSigningKeyFile(fs.readFileSync(path.join(tmp, 'c-new.key'), 'utf8'))!;
  const since = await syncToken(B, bob);
  const txn = (n: string) => ({
    origin: cName, origin_server_ts: Date.now(), pdus: [],
    edus: [{ edu_type: 'm.direct_to_device', content: { sender: `@carol:${cName}`, type: 'm.bad', message_id: `m-${n}`, messages: { [bob.userId]: { [bob.deviceId]: { n } } } } }],
  });
  const url = (n: string) => `/_matrix/federation/v1/send/${n}`;
  const unsigned = await fed(fb, 'PUT', url('u'), { body: txn('u') });
  assert.equal(unsigned.status, 401);
  assert.equal(unsigned.body.errcode, 'M_UNAUTHORIZED');
  const forged = generateSigningKey('new2'); // C's key id, another key
  assert.equal((await signedFed(fb, cName, forged, bName, 'PUT', url('f'), txn('f'))).status, 401);
  // Signed for A, sent to B.
  const wrongDest = signRequest({ method: 'PUT', uri: url('d'), origin: cName, destination: `localhost:${fa}`, content: txn('d') }, cKey);
  assert.equal((await fed(fb, 'PUT', url('d'), { authorization: wrongDest, body: txn('d') })).status, 401);
  assert.equal((await signedFed(fb, cName, generateSigningKey('nosuch'), bName, 'PUT', url('k'), txn('k'))).status, 401);
  const expired = await signedFed(fb, cName, cOldKey, bName, 'PUT', url('e'), txn('e'));
  assert.equal(expired.status, 401);
  assert.match(expired.body.error, /expired/);
  // A signature over another body.
  const swapped = signRequest({ method: 'PUT', uri: url('s'), origin: cName, destination: bName, content: txn('other') }, cKey);
  assert.equal((await fed(fb, 'PUT', url('s'), { authorization: swapped, body: txn('s') })).status, 401);
  assert.deepEqual((await toDeviceEvents(B, bob, since, 800, (ev) => ev.length > 0)).events, [], 'nothing refused was delivered');
});

test('/send: EDUs applied once per origin and txnId, one bad EDU never fails the rest, PDUs answered one by one', async () => {
  const cName = `127.0.0.1:${fc}`;
  const bName = `localhost:${fb}`;
  const cKey = parseSigningKeyFile(fs.readFileSync(path.join(tmp, 'c-new.key'), 'utf8'))!;
  const since = await syncToken(B, bob);
  const pdu = { type: 'm.room.message', room_id: '!nowhere:' + cName, sender: `@carol:${cName}`, content: { body: 'hi' }, depth: 1, prev_events: [], auth_events: [], origin_server_ts: Date.now() };
  const body = {
    origin: cName, origin_server_ts: Date.now(), pdus: [pdu],
    edus: [
      { edu_type: 'm.direct_to_device', content: { sender: `@mallory:localhost:${fa}`, type: 'm.spoof', message_id: 'x1', messages: { [bob.userId]: { '*': { spoof: true } } } } },
      { edu_type: 'm.nonsense', content: {} },
      'not an edu',
      { edu_type: 'm.direct_to_device', content: { sender: `@carol:${cName}`, type: 'm.good', message_id: 'g1', messages: { [bob.userId]: { '*': { ok: 1 } } } } },
      { edu_type: 'm.device_list_update', content: { user_id: `@carol:${cName}`, device_id: 'CDEV', stream_id: 1, prev_id: [], deleted: false } },
    ],
  };
  const r1 = await signedFed(fb, cName, cKey, bName, 'PUT', '/_matrix/federation/v1/send/txn-1', body);
  assert.equal(r1.status, 200, JSON.stringify(r1.body));
  const [eventId, result] = Object.entries(r1.body.pdus)[0] as [string, { error?: string }];
  assert.match(eventId, /^\$/);
  assert.ok(result.error, 'the PDU is answered with an error of its own');
  // Retried (even with other content): the first answer, nothing applied again.
  const r2 = await signedFed(fb, cName, cKey, bName, 'PUT', '/_matrix/federation/v1/send/txn-1', { ...body, edus: [{ edu_type: 'm.direct_to_device', content: { sender: `@carol:${cName}`, type: 'm.again', message_id: 'g2', messages: { [bob.userId]: { '*': {} } } } }] });
  assert.deepEqual(r2.body, r1.body);
  const got = await toDeviceEvents(B, bob, since, 1_500, () => false);
  assert.deepEqual(got.events, [{ sender: `@carol:${cName}`, type: 'm.good', content: { ok: 1 } }]);
  const db = await connectDatabase(B);
  try {
    const rows = await db.query('SELECT user_id FROM e2ee_device_list_changes WHERE user_id = $1', [`@carol:${cName}`]);
    assert.equal(rows.rows.length, 1, 'the device list update of a remote user is recorded');
  } finally { await db.end(); }
  // A transaction larger than MAX_REQUEST_BYTES (1 MiB) is accepted on /send.
  const big = { origin: cName, pdus: [], edus: [{ edu_type: 'm.direct_to_device', content: { sender: `@carol:${cName}`, type: 'm.big', message_id: 'big1', messages: { [bob.userId]: { [bob.deviceId]: { pad: 'x'.repeat(1_500_000) } } } } }] };
  assert.equal((await signedFed(fb, cName, cKey, bName, 'PUT', '/_matrix/federation/v1/send/txn-big', big)).status, 200);
  // A bad body is refused before anything is applied.
  assert.equal((await signedFed(fb, cName, cKey, bName, 'PUT', '/_matrix/federation/v1/send/txn-2', { pdus: 'no' })).status, 400);
  assert.equal((await signedFed(fb, cName, cKey, bName, 'PUT', '/_matrix/federation/v1/send/txn-3', { pdus: [], edus: Array(101).fill({ edu_type: 'm.typing', content: {} }) })).status, 400);
});

test('federation media: our media served as multipart/mixed to signed requests only; remote media downloaded through it', async () => {
  const cName = `127.0.0.1:${fc}`;
  const cKey = parseSigningKeyFile(fs.readFileSync(path.join(tmp, 'c-new.key'), 'utf8'))!;
  const res = await fetch(`${B.baseUrl}/_matrix/media/v3/upload?filename=a.txt`, { method: 'POST', headers: { authorization: `Bearer ${bob.accessToken}`, 'content-type': 'text/plain' }, body: 'federated bytes' });
  assert.equal(res.status, 200);
  const mediaId = ((await res.json()) as { content_uri: string }).content_uri.split('/').pop()!;
  const urlPath = `/_matrix/federation/v1/media/download/${mediaId}`;
  assert.equal((await fed(fb, 'GET', urlPath)).status, 401);
  const raw = await new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
    const authorization = signRequest({ method: 'GET', uri: urlPath, origin: cName, destination: `localhost:${fb}` }, cKey);
    https.get({ host: '127.0.0.1', port: fb, path: urlPath, ca, servername: 'localhost', headers: { authorization } }, (r) => {
      let text = '';
      r.on('data', (c) => { text += c; });
      r.on('end', () => resolve({ status: r.statusCode!, type: String(r.headers['content-type']), text }));
    }).on('error', reject);
  });
  assert.equal(raw.status, 200);
  const boundary = /^multipart\/mixed; boundary=(\S+)$/.exec(raw.type)?.[1];
  assert.ok(boundary, raw.type);
  const parts = raw.text.split(`--${boundary}`);
  assert.equal(parts.at(-1), '--\r\n', 'the closing delimiter');
  assert.match(parts[1]!, /^\r\nContent-Type: application\/json\r\n\r\n\{\}\r\n$/);
  assert.match(parts[2]!, /Content-Type: text\/plain[\s\S]*\r\n\r\nfederated bytes\r\n$/);
  const missing = await signedFed(fb, cName, cKey, `localhost:${fb}`, 'GET', '/_matrix/federation/v1/media/download/nosuchmedia?timeout_ms=0');
  assert.equal(missing.status, 404);
  // Our users download other servers' media through their server.
  const viaA = await fetch(`${A.baseUrl}/_matrix/client/v1/media/download/${encodeURIComponent(`localhost:${fb}`)}/${mediaId}`, { headers: { authorization: `Bearer ${alice.accessToken}` } });
  assert.equal(viaA.status, 200);
  assert.equal(await viaA.text(), 'federated bytes');
  assert.match(String(viaA.headers.get('content-type')), /^text\/plain/);
  assert.match(String(viaA.headers.get('content-disposition')), /a\.txt/);
  const gone = await fetch(`${A.baseUrl}/_matrix/client/v1/media/download/${encodeURIComponent(`localhost:${fb}`)}/nosuchmedia?timeout_ms=0`, { headers: { authorization: `Bearer ${alice.accessToken}` } });
  assert.equal(gone.status, 404);
});

test('notary: keys of a server served co-signed; fetched through the notary when the server is down; outbound queue backs off, then catches up', async () => {
  const bName = `localhost:${fb}`;
  const notary = await fed(fa, 'POST', '/_matrix/key/v2/query', { body: { server_keys: { [bName]: {} } } });
  assert.equal(notary.status, 200);
  const resp = notary.body.server_keys.find((k: any) => k.server_name === bName);
  assert.ok(resp, 'A knows B\'s keys (it verified B\'s requests)');
  assert.ok(resp.signatures[bName] && resp.signatures[`localhost:${fa}`], 'signed by B and co-signed by the notary');
  const get = await fed(fa, 'GET', `/_matrix/key/v2/query/${encodeURIComponent(bName)}`);
  assert.equal(get.body.server_keys.length, 1);

  const bKey = parseSigningKeyFile(fs.readFileSync(path.join(B.dataDir, 'signing.key'), 'utf8'))!;
  await B.kill();
  // Queued while B is down: A keeps it and backs off.
  const put = await rawApi(A.baseUrl, 'PUT', '/_matrix/client/v3/sendToDevice/m.test/while-down', alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { queued: true } } } });
  assert.equal(put.status, 200, 'a local send is never blocked by a destination that is down');
  const db = await connectDatabase(A);
  try {
    let failures = 0;
    for (const end = Date.now() + 8_000; Date.now() < end && failures < 2; await new Promise((r) => setTimeout(r, 200))) {
      const r = await db.query('SELECT failures, retry_at FROM federation_destinations WHERE destination = $1', [bName]);
      failures = r.rows[0]?.failures ?? 0;
    }
    assert.ok(failures >= 2, `A retried with back-off (failures: ${failures})`);
    // 120 more while B is down: caught up as transactions of at most 100 EDUs.
    for (let i = 0; i < 120; i += 20) {
      await Promise.all(Array.from({ length: 20 }, (_, j) => rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/sendToDevice/m.bulk/b${i + j}`, alice.accessToken, { messages: { [bob.userId]: { [bob.deviceId]: { n: i + j } } } })));
    }
    const queued = await db.query('SELECT count(*)::int AS n FROM federation_outbound_queue WHERE destination = $1', [bName]);
    assert.equal(queued.rows[0].n, 121, 'the EDUs wait in the durable queue');

    // C cannot reach B for its keys; it asks its notary (A), which vouches for them.
    const viaNotary = await signedFed(fc, bName, bKey, `127.0.0.1:${fc}`, 'GET', `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(carol.userId)}`);
    assert.equal(viaNotary.status, 200, JSON.stringify(viaNotary.body));

    await B.restart();
    const got = await toDeviceEvents(B, bob, undefined, 15_000, (ev) => ev.filter((e) => e.type === 'm.bulk').length === 120 && ev.some((e) => e.content.queued));
    assert.ok(got.events.some((e) => e.sender === alice.userId && e.content.queued), 'the queued message arrived after B came back');
    assert.deepEqual(got.events.filter((e) => e.type === 'm.bulk').map((e) => e.content.n).sort((x: number, y: number) => x - y), Array.from({ length: 120 }, (_, i) => i), 'all of them, once');
    const bDb = await connectDatabase(B);
    try {
      const txns = await bDb.query('SELECT count(*)::int AS n FROM federation_inbound_txns WHERE origin = $1', [`localhost:${fa}`]);
      assert.ok(txns.rows[0].n >= 3, `121 EDUs came in at least two transactions (${txns.rows[0].n} from A in all)`);
    } finally { await bDb.end(); }
    // A deletes what was delivered once B's answer is in (a moment after B delivered it).
    let left = 1;
    let failuresAfter = -1;
    for (const end = Date.now() + 5_000; Date.now() < end && (left || failuresAfter); await new Promise((r) => setTimeout(r, 100))) {
      left = (await db.query('SELECT count(*)::int AS n FROM federation_outbound_queue WHERE destination = $1', [bName])).rows[0].n;
      failuresAfter = (await db.query('SELECT failures FROM federation_destinations WHERE destination = $1', [bName])).rows[0].failures;
    }
    assert.equal(left, 0, 'the queue is empty');
    assert.equal(failuresAfter, 0, 'the back-off is reset');
  } finally { await db.end(); }
});

test('outbound requests never reach addresses outside FEDERATION_IP_RANGE_ALLOW (private ranges)', async () => {
  // 127.0.0.2 is B too (B listens on every address), but C may reach only 127.0.0.1.
  const r = await rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(`@bob:127.0.0.2:${fb}`)}`, carol.accessToken);
  assert.equal(r.status, 502);
  assert.match(r.body.error, /FEDERATION_IP_RANGE_ALLOW/);
  const q = await rawApi(C.baseUrl, 'POST', '/_matrix/client/v3/keys/query', carol.accessToken, { device_keys: { [`@bob:127.0.0.2:${fb}`]: [] } });
  assert.ok(q.body.failures[`127.0.0.2:${fb}`]);
});
