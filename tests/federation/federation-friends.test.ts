// Friends over federation (issue 13): two of our servers over real TLS. A request from alice@A to
// bob@B travels as the io.superserver.friend_request EDU, shows live in bob's /sync, is accepted;
// remove and cancel reach the other side; forged or bad EDUs are ignored without failing the
// transaction; a server refused by policy gets a clean 501; a server that never answers leaves the
// request pending.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { startServer, type TestServer } from '../helpers/server.ts';
import { freePort, makeCertificates } from '../helpers/federation-servers.ts';
import { rawApi, registerUser, type Credentials } from '../helpers/client.ts';
import { parseSigningKeyFile } from '../../homeserver/server/keys.ts';
import type { SigningKey } from '../../homeserver/protocol/signing.ts';
import { signRequest } from '../../homeserver/protocol/x-matrix.ts';

const F = '/_super/client/v1/friends';
const KEY = 'io.superserver.friends';
const EDU = 'io.superserver.friend_request';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fed-friends-'));
let ca: string;
let A: TestServer; let B: TestServer;
let fa: number; let fb: number;
let nameA: string; let nameB: string;
let alice: Credentials; let bob: Credentials; let bob2: Credentials;

function fed(port: number, method: string, urlPath: string, authorization: string, body?: unknown): Promise<{ status: number; body: any }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, method, path: urlPath, ca, servername: 'localhost', headers: { authorization, ...(payload ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => { try { resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined }); } catch (e) { reject(e); } });
    });
    req.on('error', reject);
    req.end(payload);
  });
}
function signedFed(port: number, origin: string, key: SigningKey, destination: string, method: string, urlPath: string, body?: unknown) {
  return fed(port, method, urlPath, signRequest({ method, uri: urlPath, origin, destination, ...(body !== undefined ? { content: body } : {}) }, key), body);
}

async function eventually<T>(what: string, fn: () => Promise<T>, check: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T;
  do {
    last = await fn();
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  } while (Date.now() < end);
  assert.fail(`${what}: ${JSON.stringify(last!).slice(0, 800)}`);
}

const list = async (s: TestServer, who: Credentials) => {
  const r = await rawApi(s.baseUrl, 'GET', F, who.accessToken);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { friends: any[]; incoming: any[]; outgoing: any[]; blocked: string[] };
};
const ids = (xs: any[]) => xs.map((x) => x.user_id);

before(async () => {
  const { cert, key } = makeCertificates(tmp);
  ca = fs.readFileSync(path.join(tmp, 'ca.crt'), 'utf8');
  [fa, fb] = [await freePort(), await freePort()];
  [nameA, nameB] = [`localhost:${fa}`, `localhost:${fb}`];
  const common = {
    FEDERATION_CA_FILE: path.join(tmp, 'ca.crt'), TLS_CERT: cert, TLS_KEY: key, REGISTRATION: 'open', AUTO_JOIN_ROOMS: '',
    FEDERATION_RETRY_MIN_MS: '300', FEDERATION_RETRY_MAX_MS: '1500', FEDERATION_REQUEST_TIMEOUT_MS: '5000', FEDERATION_IP_RANGE_ALLOW: '127.0.0.0/8,::1/128',
  };
  [A, B] = await Promise.all([
    startServer({ env: { ...common, SERVER_NAME: nameA, FEDERATION_PORT: String(fa), FEDERATION_DOMAIN_BLOCKLIST: 'blocked.example' } }),
    // B limits friend requests (5 per sender, no refill to speak of), as locally: inbound requests pay too.
    startServer({ env: { ...common, SERVER_NAME: nameB, FEDERATION_PORT: String(fb), RATE_LIMITS: 'on', RC_REGISTRATION_PER_SECOND: '1000', RC_REGISTRATION_BURST: '1000',
      RC_INVITES_PER_USER_BURST: '1000', RC_FRIEND_REQUESTS_PER_SECOND: '0.001', RC_FRIEND_REQUESTS_BURST: '5' } }),
  ]);
  [alice, bob, bob2] = await Promise.all([registerUser(A.baseUrl), registerUser(B.baseUrl), registerUser(B.baseUrl)]);
});

after(async () => {
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('alice@A asks bob@B: live in his /sync, accepted, friends on both sides; remove reaches A', async () => {
  // Bob's sync position before the request: the request must arrive as an incremental change.
  const first = await rawApi(B.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', bob.accessToken);
  assert.equal(first.status, 200);
  assert.deepEqual(first.body[KEY].links, []);
  const sent = await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: bob.userId, message: 'hi from A' });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  assert.deepEqual(sent.body, { state: 'outgoing' });
  assert.deepEqual(ids((await list(A, alice)).outgoing), [bob.userId]);

  // A long-poll of bob's is woken by the EDU.
  const woken = await rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/sync?timeout=15000&since=${encodeURIComponent(first.body.next_batch)}`, bob.accessToken);
  assert.equal(woken.status, 200);
  const link = woken.body[KEY]?.links?.find((l: any) => l.user_id === alice.userId);
  assert.equal(woken.body[KEY]?.full, false);
  assert.deepEqual({ state: link?.state, message: link?.message }, { state: 'incoming', message: 'hi from A' });
  assert.deepEqual(ids((await list(B, bob)).incoming), [alice.userId]);

  // Asking twice is refused on A as locally.
  const again = await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: bob.userId });
  assert.equal(again.status, 400);
  assert.match(again.body.error, /already sent/);

  const acc = await rawApi(B.baseUrl, 'POST', `${F}/requests/${encodeURIComponent(alice.userId)}/accept`, bob.accessToken, {});
  assert.equal(acc.status, 200, JSON.stringify(acc.body));
  assert.deepEqual(ids((await list(B, bob)).friends), [alice.userId]);
  await eventually('alice sees bob as a friend', () => list(A, alice), (l) => ids(l.friends).includes(bob.userId) && l.outgoing.length === 0);

  // Remove from A: B's row ends too.
  const rm = await rawApi(A.baseUrl, 'DELETE', `${F}/${encodeURIComponent(bob.userId)}`, alice.accessToken);
  assert.equal(rm.status, 200, JSON.stringify(rm.body));
  assert.deepEqual((await list(A, alice)).friends, []);
  await eventually('bob no longer lists alice', () => list(B, bob), (l) => l.friends.length === 0);
});

test('cancel and decline reach the other server; asking back across servers makes friends', async () => {
  // Cancel: alice asks bob2, then takes it back.
  assert.equal((await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: bob2.userId })).status, 200);
  await eventually('bob2 sees the request', () => list(B, bob2), (l) => ids(l.incoming).includes(alice.userId));
  assert.equal((await rawApi(A.baseUrl, 'DELETE', `${F}/requests/${encodeURIComponent(bob2.userId)}`, alice.accessToken)).status, 200);
  await eventually('the cancel reaches B', () => list(B, bob2), (l) => l.incoming.length === 0);

  // Decline: bob2 asks alice (B → A), alice declines, bob2's outgoing request ends.
  assert.equal((await rawApi(B.baseUrl, 'POST', `${F}/requests`, bob2.accessToken, { user_id: alice.userId })).status, 200);
  await eventually('alice sees bob2 ask', () => list(A, alice), (l) => ids(l.incoming).includes(bob2.userId));
  assert.equal((await rawApi(A.baseUrl, 'POST', `${F}/requests/${encodeURIComponent(bob2.userId)}/decline`, alice.accessToken, {})).status, 200);
  await eventually('the decline reaches B', () => list(B, bob2), (l) => l.outgoing.length === 0);

  // Asking back: bob asks alice, alice asks bob in return → friends on both sides.
  assert.equal((await rawApi(B.baseUrl, 'POST', `${F}/requests`, bob.accessToken, { user_id: alice.userId })).status, 200);
  await eventually('alice sees bob ask', () => list(A, alice), (l) => ids(l.incoming).includes(bob.userId));
  const back = await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: bob.userId });
  assert.deepEqual(back.body, { state: 'friend' });
  await eventually('bob sees alice as a friend', () => list(B, bob), (l) => ids(l.friends).includes(alice.userId));
});

test('forged and bad EDUs are ignored one by one; the transaction and the good EDU still go through', async () => {
  const keyA = parseSigningKeyFile(fs.readFileSync(path.join(A.dataDir, 'signing.key'), 'utf8'))!;
  const edu = (content: Record<string, unknown>) => ({ edu_type: EDU, content });
  const forger = '@mallory:evil.example';
  const carl = `@carl:${nameA}`;
  const r = await signedFed(fb, nameA, keyA, nameB, 'PUT', `/_matrix/federation/v1/send/friends-${Date.now()}`, {
    origin: nameA, origin_server_ts: Date.now(), pdus: [],
    edus: [
      edu({ sender: forger, target: bob2.userId, action: 'request' }), // origin ≠ the sender's server
      edu({ sender: `@ghost:${nameA}`, target: `@nobody:${nameB}`, action: 'request' }), // unknown local target
      edu({ sender: `@ghost:${nameA}`, target: `@someone:${nameA}`, action: 'request' }), // target not ours
      edu({ sender: `@ghost:${nameA}`, target: bob2.userId, action: 'befriend' }), // unknown action
      edu({ sender: `@ghost:${nameA}`, target: bob2.userId, action: 'request', message: 42 }), // bad message
      edu({ sender: `@ghost2:${nameA}`, target: bob2.userId, action: 'accept' }), // nothing to accept
      'not an EDU',
      edu({ sender: carl, target: bob2.userId, action: 'request', message: 'the good one' }),
    ],
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const l = await eventually('the good EDU is applied', () => list(B, bob2), (x) => x.incoming.length > 0);
  assert.deepEqual(l.incoming.map((x) => [x.user_id, x.message]), [[carl, 'the good one']], 'only the good EDU changed anything');
  assert.deepEqual(l.friends, []);
  assert.deepEqual(l.outgoing, []);
});

test('a server refused by policy: 501 with a clear error; a server that never answers leaves the request pending', async () => {
  const refused = await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: '@someone:blocked.example' });
  assert.equal(refused.status, 501, JSON.stringify(refused.body));
  assert.equal(refused.body.errcode, 'M_UNRECOGNIZED');
  assert.match(refused.body.error, /does not federate with/);
  assert.ok(!ids((await list(A, alice)).outgoing).includes('@someone:blocked.example'), 'nothing changed');

  const silent = `@nobody:127.0.0.1:${await freePort()}`;
  const pending = await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: silent });
  assert.equal(pending.status, 200, JSON.stringify(pending.body));
  assert.ok(ids((await list(A, alice)).outgoing).includes(silent), 'pending until cancelled');
  assert.equal((await rawApi(A.baseUrl, 'DELETE', `${F}/requests/${encodeURIComponent(silent)}`, alice.accessToken)).status, 200);
  assert.ok(!ids((await list(A, alice)).outgoing).includes(silent));
});

test('blocks stay local: blocking a remote friend ends the friendship there (as a remove); their requests are then dropped', async () => {
  // alice and bob are friends since the test above.
  assert.ok(ids((await list(A, alice)).friends).includes(bob.userId));
  assert.equal((await rawApi(B.baseUrl, 'PUT', `${F}/blocks/${encodeURIComponent(alice.userId)}`, bob.accessToken, {})).status, 200);
  assert.deepEqual((await list(B, bob)).blocked, [alice.userId]);
  await eventually('the friendship ends on A', () => list(A, alice), (l) => !ids(l.friends).includes(bob.userId));
  // A does not know of the block: its request is sent, and dropped by B.
  const r = await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: bob.userId });
  assert.deepEqual(r.body, { state: 'outgoing' });
  // A later request of someone else arriving proves the earlier EDU was handled (one queue, in order).
  assert.equal((await rawApi(A.baseUrl, 'POST', `${F}/requests`, alice.accessToken, { user_id: bob2.userId })).status, 200);
  await eventually('bob2 gets the later request', () => list(B, bob2), (l) => ids(l.incoming).includes(alice.userId));
  const b = await list(B, bob);
  assert.deepEqual([b.incoming, b.friends, b.blocked], [[], [], [alice.userId]]);
});

test('inbound requests pay the rate limits a local request pays: past the sender\'s burst they are dropped', async () => {
  const keyA = parseSigningKeyFile(fs.readFileSync(path.join(A.dataDir, 'signing.key'), 'utf8'))!;
  const spammer = `@spammer:${nameA}`;
  const request = (target: string) => ({ edu_type: EDU, content: { sender: spammer, target, action: 'request' } });
  // Five requests use the burst; the sixth (to bob) is over the limit.
  const r = await signedFed(fb, nameA, keyA, nameB, 'PUT', `/_matrix/federation/v1/send/spam-${Date.now()}`, {
    origin: nameA, origin_server_ts: Date.now(), pdus: [],
    edus: [request(bob2.userId), request(bob2.userId), request(bob2.userId), request(bob2.userId), request(bob2.userId), request(bob.userId)],
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.ok(ids((await list(B, bob2)).incoming).includes(spammer));
  assert.ok(!ids((await list(B, bob)).incoming).includes(spammer), 'the request past the limit is dropped');
});
