// Issue 11 (rooms over federation): three of our homeservers on loopback over real TLS (a CA
// made by the test). A remote invite, joins by invite and by alias, chat in both directions,
// a leave; forged PDUs (bad signature, wrong origin, sender not allowed, bad hash) refused or
// redacted; the inbound room endpoints refusing servers that are not in the room.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { startServer, type TestServer } from '../helpers/server.ts';
import { freePort, makeCertificates } from '../helpers/federation-servers.ts';
import { connectDatabase } from '../helpers/database.ts';
import { makeClient, rawApi, registerUser, stopClients, type Credentials } from '../helpers/client.ts';
import type { MatrixClient } from 'matrix-js-sdk';
import { parseSigningKeyFile } from '../../homeserver/server/keys.ts';
import { finalizeEvent, generateSigningKey, type SigningKey } from '../../homeserver/protocol/signing.ts';
import { getRoomVersion } from '../../homeserver/protocol/room-versions.ts';
import { signRequest } from '../../homeserver/protocol/x-matrix.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fed-rooms-'));
let ca: string;
let A: TestServer; let B: TestServer; let C: TestServer;
let fa: number; let fb: number; let fc: number;
let nameA: string; let nameB: string; let nameC: string;
let alice: Credentials; let bob: Credentials; let carol: Credentials;
let roomId: string;

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
/** A federation request signed as `origin` with its key. */
function signedFed(port: number, origin: string, key: SigningKey, destination: string, method: string, urlPath: string, body?: unknown) {
  return fed(port, method, urlPath, signRequest({ method, uri: urlPath, origin, destination, ...(body !== undefined ? { content: body } : {}) }, key), body);
}

/** Polls until `check` holds (or fails after `ms`). */
async function eventually<T>(what: string, fn: () => Promise<T>, check: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T;
  do {
    last = await fn();
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 150));
  } while (Date.now() < end);
  assert.fail(`${what}: ${JSON.stringify(last!).slice(0, 800)}`);
}

const messages = (s: TestServer, who: Credentials, room: string) =>
  rawApi(s.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(room)}/messages?dir=b&limit=50`, who.accessToken);
const bodies = (r: { body: any }) => (r.body?.chunk ?? []).filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);

before(async () => {
  const { cert, key } = makeCertificates(tmp);
  ca = fs.readFileSync(path.join(tmp, 'ca.crt'), 'utf8');
  [fa, fb, fc] = [await freePort(), await freePort(), await freePort()];
  [nameA, nameB, nameC] = [`localhost:${fa}`, `localhost:${fb}`, `127.0.0.1:${fc}`];
  const common = {
    FEDERATION_CA_FILE: path.join(tmp, 'ca.crt'), TLS_CERT: cert, TLS_KEY: key, REGISTRATION: 'open',
    FEDERATION_RETRY_MIN_MS: '300', FEDERATION_RETRY_MAX_MS: '1500', FEDERATION_REQUEST_TIMEOUT_MS: '5000', FEDERATION_IP_RANGE_ALLOW: '127.0.0.0/8,::1/128',
  };
  [A, B, C] = await Promise.all([
    startServer({ env: { ...common, SERVER_NAME: nameA, FEDERATION_PORT: String(fa) } }),
    startServer({ env: { ...common, SERVER_NAME: nameB, FEDERATION_PORT: String(fb) } }),
    startServer({ env: { ...common, SERVER_NAME: nameC, FEDERATION_PORT: String(fc) } }),
  ]);
  [alice, bob, carol] = await Promise.all([registerUser(A.baseUrl), registerUser(B.baseUrl), registerUser(C.baseUrl)]);
});

after(async () => {
  stopClients();
  await Promise.all([A, B, C].filter(Boolean).map((s) => s.stop()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('invite a remote user, join by invite and by alias, chat across three servers, leave', async () => {
  const created = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, { preset: 'public_chat', room_alias_name: 'fedroom', name: 'Federated' });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  roomId = created.body.room_id;
  await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t0`, alice.accessToken, { msgtype: 'm.text', body: 'before anyone' });

  // Invite of bob (B): delivered with /invite v2, shown in B's /sync with the room's stripped state.
  const inv = await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/invite`, alice.accessToken, { user_id: bob.userId });
  assert.equal(inv.status, 200, JSON.stringify(inv.body));
  const sync = await eventually('bob sees the invite', () => rawApi(B.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', bob.accessToken), (r) => !!r.body.rooms?.invite?.[roomId]);
  const inviteState = sync.body.rooms.invite[roomId].invite_state.events;
  assert.equal(inviteState.find((e: any) => e.type === 'm.room.name')?.content.name, 'Federated', "the room's stripped state comes with the invite");
  assert.equal(inviteState.find((e: any) => e.type === 'm.room.member' && e.state_key === bob.userId)?.content.membership, 'invite');

  // Bob joins through the inviter's server: B gets the state and auth chain, then the join.
  const join = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, bob.accessToken, {});
  assert.equal(join.status, 200, JSON.stringify(join.body));
  const stateB = await rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.name/`, bob.accessToken);
  assert.equal(stateB.body.name, 'Federated');

  // Carol (C) joins by the alias (query/directory on A).
  const joinC = await rawApi(C.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(`#fedroom:${nameA}`)}`, carol.accessToken, {});
  assert.equal(joinC.status, 200, JSON.stringify(joinC.body));
  assert.equal(joinC.body.room_id, roomId);

  // A's members: all three, seen from A; B learns of carol's join from A (the resident server forwards it).
  await eventually('A sees three members', () => rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`, alice.accessToken),
    (r) => Object.keys(r.body.joined ?? {}).length === 3);
  await eventually('B sees carol joined', () => rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`, bob.accessToken),
    (r) => Object.keys(r.body.joined ?? {}).length === 3);

  // Chat: each server's message reaches the two others.
  const send = (s: TestServer, who: Credentials, txn: string, body: string) =>
    rawApi(s.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, who.accessToken, { msgtype: 'm.text', body });
  assert.equal((await send(A, alice, 't1', 'hello from A')).status, 200);
  assert.equal((await send(B, bob, 't2', 'hello from B')).status, 200);
  assert.equal((await send(C, carol, 't3', 'hello from C')).status, 200);
  const all = ['hello from A', 'hello from B', 'hello from C'];
  for (const [s, who] of [[A, alice], [B, bob], [C, carol]] as const) {
    await eventually(`${who.userId} sees every message`, () => messages(s, who, roomId), (r) => all.every((m) => bodies(r).includes(m)));
  }

  // Bob leaves: the others see it.
  assert.equal((await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/leave`, bob.accessToken, {})).status, 200);
  await eventually('A sees bob leave', () => rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`, alice.accessToken),
    (r) => !(bob.userId in (r.body.joined ?? {})));
  await eventually('C sees bob leave', () => rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`, carol.accessToken),
    (r) => r.status === 200 && !(bob.userId in (r.body.joined ?? {})));
});

test('a remote invite rejected: make_leave / send_leave through the inviting server; an invite its server cannot take is not stored', async () => {
  const unreachable = `@nobody:127.0.0.1:${await freePort()}`;
  const refused = await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/invite`, alice.accessToken, { user_id: unreachable });
  assert.equal(refused.status, 502, JSON.stringify(refused.body));
  const member = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.member/${encodeURIComponent(unreachable)}`, alice.accessToken);
  assert.equal(member.status, 404, 'nothing persisted');

  const created = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, { preset: 'private_chat', invite: [bob.userId] });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const dm = created.body.room_id;
  await eventually('bob sees the invite', () => rawApi(B.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', bob.accessToken), (r) => !!r.body.rooms?.invite?.[dm]);
  const left = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/leave`, bob.accessToken, {});
  assert.equal(left.status, 200, JSON.stringify(left.body));
  await eventually('A sees the invite rejected', () => rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(dm)}/members`, alice.accessToken),
    (r) => r.body.chunk?.some((e: any) => e.state_key === bob.userId && e.content.membership === 'leave'));
});

test('forged PDUs: bad signature, wrong origin, sender not allowed are refused one by one; a bad hash is stored redacted', async () => {
  const keyA = parseSigningKeyFile(fs.readFileSync(path.join(A.dataDir, 'signing.key'), 'utf8'))!;
  const version = getRoomVersion('10')!;
  // The room as B knows it: the latest event to build on, and the auth events.
  const state = await rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`, carol.accessToken);
  assert.equal(state.status, 200, JSON.stringify(state.body));
  const id = (type: string, key = '') => state.body.find((e: any) => e.type === type && e.state_key === key)?.event_id;
  const last = await messages(C, carol, roomId);
  const prev = last.body.chunk[0].event_id;
  const make = (sender: string, content: Record<string, unknown>, signer: string, key: SigningKey) => {
    const ev = {
      type: 'm.room.message', room_id: roomId, sender, content, depth: 1000, origin_server_ts: Date.now(),
      prev_events: [prev], auth_events: [id('m.room.create'), id('m.room.power_levels'), id('m.room.member', sender) ?? id('m.room.member', alice.userId)].filter(Boolean),
    };
    return finalizeEvent(ev, signer, key, version);
  };
  const stranger = `@stranger:${nameA}`;
  const goodSig = make(alice.userId, { msgtype: 'm.text', body: 'signed right' }, nameA, keyA);
  const badSig = make(alice.userId, { msgtype: 'm.text', body: 'forged' }, nameA, generateSigningKey(keyA.keyId.slice('ed25519:'.length)));
  const wrongOrigin = make(carol.userId, { msgtype: 'm.text', body: 'not from C' }, nameA, keyA);
  const notAllowed = make(stranger, { msgtype: 'm.text', body: 'not a member' }, nameA, keyA);
  const badHash = make(alice.userId, { msgtype: 'm.text', body: 'original' }, nameA, keyA);
  const tampered = { ...badHash.event, content: { msgtype: 'm.text', body: 'tampered' } };
  const r = await signedFed(fc, nameA, keyA, nameC, 'PUT', `/_matrix/federation/v1/send/forged-${Date.now()}`, {
    origin: nameA, origin_server_ts: Date.now(), pdus: [badSig.event, wrongOrigin.event, notAllowed.event, tampered, goodSig.event],
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.match(r.body.pdus[badSig.eventId].error, /not signed/);
  assert.match(r.body.pdus[wrongOrigin.eventId].error, /not signed/);
  assert.match(r.body.pdus[notAllowed.eventId].error, /rejected/);
  assert.deepEqual(r.body.pdus[goodSig.eventId], {});
  const seen = await eventually('C shows the good event', () => messages(C, carol, roomId), (x) => bodies(x).includes('signed right'));
  assert.ok(!bodies(seen).includes('forged') && !bodies(seen).includes('not from C') && !bodies(seen).includes('not a member') && !bodies(seen).includes('tampered'));
  const redacted = seen.body.chunk.find((e: any) => e.event_id === badHash.eventId);
  assert.ok(redacted, 'the event with a bad hash is stored');
  assert.deepEqual(redacted.content, {}, 'its content is not trusted');
});

test('room endpoints: a server not in the room reads nothing; bad requests are clear errors', async () => {
  const keyB = parseSigningKeyFile(fs.readFileSync(path.join(B.dataDir, 'signing.key'), 'utf8'))!;
  // B left the public room: the state is not B's to read any more.
  const st = await signedFed(fa, nameB, keyB, nameA, 'GET', `/_matrix/federation/v1/state_ids/${encodeURIComponent(roomId)}?event_id=x`);
  assert.equal(st.status, 403, JSON.stringify(st.body));
  const unknown = await signedFed(fa, nameB, keyB, nameA, 'GET', `/_matrix/federation/v1/make_join/${encodeURIComponent(`!nope:${nameA}`)}/${encodeURIComponent(bob.userId)}?ver=10`);
  assert.equal(unknown.status, 404);
  const other = await signedFed(fa, nameB, keyB, nameA, 'GET', `/_matrix/federation/v1/make_join/${encodeURIComponent(roomId)}/${encodeURIComponent(carol.userId)}?ver=10`);
  assert.equal(other.status, 403, 'a server makes joins for its own users only');
  const badVer = await signedFed(fa, nameB, keyB, nameA, 'GET', `/_matrix/federation/v1/make_join/${encodeURIComponent(roomId)}/${encodeURIComponent(bob.userId)}?ver=1`);
  assert.equal(badVer.status, 400);
  assert.equal(badVer.body.errcode, 'M_INCOMPATIBLE_ROOM_VERSION');
  const ok = await signedFed(fa, nameB, keyB, nameA, 'GET', `/_matrix/federation/v1/make_join/${encodeURIComponent(roomId)}/${encodeURIComponent(bob.userId)}?ver=10`);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.room_version, '10');
  assert.equal(ok.body.event.state_key, bob.userId);
  // C (in the room) reads the state and backfills.
  const keyC = parseSigningKeyFile(fs.readFileSync(path.join(C.dataDir, 'signing.key'), 'utf8'))!;
  const msgs = await messages(A, alice, roomId);
  const latest = msgs.body.chunk[0].event_id;
  const ids = await signedFed(fa, nameC, keyC, nameA, 'GET', `/_matrix/federation/v1/state_ids/${encodeURIComponent(roomId)}?event_id=${encodeURIComponent(latest)}`);
  assert.equal(ids.status, 200, JSON.stringify(ids.body));
  assert.ok(ids.body.pdu_ids.length >= 5 && ids.body.auth_chain_ids.length >= 3);
  const bf = await signedFed(fa, nameC, keyC, nameA, 'GET', `/_matrix/federation/v1/backfill/${encodeURIComponent(roomId)}?v=${encodeURIComponent(latest)}&limit=100`);
  assert.equal(bf.status, 200);
  assert.ok(bf.body.pdus.some((p: any) => p.type === 'm.room.create'), 'backfill reaches the start of the room');

  // /invite v2: only an invite of a user of the receiving server, by a user of the origin, signed, is co-signed.
  const keyA = parseSigningKeyFile(fs.readFileSync(path.join(A.dataDir, 'signing.key'), 'utf8'))!;
  const version = getRoomVersion('10')!;
  const member = (sender: string, target: string, membership: string, key = keyA) => finalizeEvent({
    type: 'm.room.member', room_id: roomId, sender, state_key: target, content: { membership }, depth: 10, origin_server_ts: Date.now(), prev_events: [latest], auth_events: [],
  }, nameA, key, version);
  const invite = (e: { event: Record<string, unknown>; eventId: string }) =>
    signedFed(fb, nameA, keyA, nameB, 'PUT', `/_matrix/federation/v2/invite/${encodeURIComponent(roomId)}/${encodeURIComponent(e.eventId)}`, { room_version: '10', event: e.event, invite_room_state: [] });
  for (const [what, e] of [
    ['not an invite', member(alice.userId, bob.userId, 'join')],
    ['a user of another server invited', member(alice.userId, carol.userId, 'invite')],
    ['a sender of another server', member(carol.userId, bob.userId, 'invite')],
    ['a bad signature', member(alice.userId, bob.userId, 'invite', generateSigningKey(keyA.keyId.slice('ed25519:'.length)))],
  ] as const) {
    const r = await invite(e);
    assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.errcode, 'M_INVALID_PARAM', what);
  }
  const good = member(alice.userId, bob.userId, 'invite');
  const r = await invite(good);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.ok(r.body.event.signatures[nameB] && r.body.event.signatures[nameA], 'co-signed by the invitee\'s server');
  const wrongId = await signedFed(fb, nameA, keyA, nameB, 'PUT', `/_matrix/federation/v2/invite/${encodeURIComponent(roomId)}/%24other`, { room_version: '10', event: good.event });
  assert.equal(wrongId.status, 400);
});

test('a join to a room with history, then /messages pages back to its start (backfill)', async () => {
  const created = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, { preset: 'public_chat', name: 'History' });
  const hist = created.body.room_id;
  const total = 200;
  for (let i = 0; i < total; i += 20) {
    await Promise.all(Array.from({ length: 20 }, (_, j) =>
      rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(hist)}/send/m.room.message/h${i + j}`, alice.accessToken, { msgtype: 'm.text', body: `history ${i + j}` })));
  }
  // Joined by ID through `via` (B has never heard of the room).
  const join = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(hist)}?via=${encodeURIComponent(nameA)}`, bob.accessToken, {});
  assert.equal(join.status, 200, JSON.stringify(join.body));
  const seen = new Set<string>();
  let sawCreate = false;
  let from: string | undefined;
  for (let page = 0; page < 20; page++) {
    const r = await rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(hist)}/messages?dir=b&limit=100${from ? `&from=${encodeURIComponent(from)}` : ''}`, bob.accessToken);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    for (const e of r.body.chunk) {
      if (e.type === 'm.room.message') seen.add(e.content.body);
      if (e.type === 'm.room.create') sawCreate = true;
    }
    if (!r.body.end) break;
    from = r.body.end;
  }
  const why = () => B.logs().split('\n').filter((l) => /backfill|state of an event|PDU/.test(l)).slice(-10).join('\n');
  assert.equal(seen.size, total, `every message of the history (saw ${seen.size}); B's log:\n${why()}`);
  assert.ok(sawCreate, 'paging reaches the create event');
});

test('a server down for a while catches up with nothing lost', async () => {
  await C.kill();
  for (let i = 0; i < 5; i++) {
    const r = await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/down${i}`, alice.accessToken, { msgtype: 'm.text', body: `while C was down ${i}` });
    assert.equal(r.status, 200);
  }
  await new Promise((r) => setTimeout(r, 1000));
  await C.restart();
  const want = Array.from({ length: 5 }, (_, i) => `while C was down ${i}`);
  await eventually('C has every message sent while it was down', () => messages(C, carol, roomId), (r) => want.every((m) => bodies(r).includes(m)), 30_000);
});

test('a fork with conflicting power-level changes resolves to the same state on all three servers', async () => {
  // Bob is back in the room; carol gets power 100 from alice.
  assert.equal((await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}?via=${encodeURIComponent(nameA)}`, bob.accessToken, {})).status, 200);
  const plNow = await rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.power_levels/`, alice.accessToken);
  const pl = { ...plNow.body, users: { ...plNow.body.users, [carol.userId]: 100 } };
  assert.equal((await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.power_levels/`, alice.accessToken, pl)).status, 200);
  await eventually('C sees carol at 100', () => rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.power_levels/`, carol.accessToken),
    (r) => r.body.users?.[carol.userId] === 100);
  await eventually('B sees carol at 100', () => rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.power_levels/`, bob.accessToken),
    (r) => r.body.users?.[carol.userId] === 100);

  const keyA = parseSigningKeyFile(fs.readFileSync(path.join(A.dataDir, 'signing.key'), 'utf8'))!;
  const keyC = parseSigningKeyFile(fs.readFileSync(path.join(C.dataDir, 'signing.key'), 'utf8'))!;
  const version = getRoomVersion('10')!;
  const state = await rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`, carol.accessToken);
  const id = (type: string, key = '') => state.body.find((e: any) => e.type === type && e.state_key === key)?.event_id;
  // Both branch off the power-level event that made carol an admin.
  const prev = id('m.room.power_levels');
  const ts = Date.now();
  const fork = (sender: string, signer: string, key: SigningKey, bobLevel: number, at: number) => finalizeEvent({
    type: 'm.room.power_levels', state_key: '', room_id: roomId, sender, depth: 5000, origin_server_ts: at,
    content: { ...pl, users: { ...pl.users, [bob.userId]: bobLevel } },
    prev_events: [prev], auth_events: [id('m.room.create'), id('m.room.power_levels'), id('m.room.member', sender)],
  }, signer, key, version);
  const byAlice = fork(alice.userId, nameA, keyA, 50, ts);
  const byCarol = fork(carol.userId, nameC, keyC, 0, ts + 1);
  // Each server gets both branches, in different orders.
  const deliver = async (port: number, dest: string, pdus: unknown[]) => {
    const [origin, key] = dest === nameC ? [nameA, keyA] : [nameC, keyC];
    const r = await signedFed(port, origin, key, dest, 'PUT', `/_matrix/federation/v1/send/fork-${dest}-${Date.now()}`, { origin, origin_server_ts: Date.now(), pdus });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    for (const v of Object.values(r.body.pdus)) assert.deepEqual(v, {}, JSON.stringify(r.body));
  };
  await deliver(fa, nameA, [byAlice.event, byCarol.event]);
  await deliver(fb, nameB, [byCarol.event, byAlice.event]);
  await deliver(fc, nameC, [byCarol.event, byAlice.event]);
  const plId = async (s: TestServer, who: Credentials) => (await rawApi(s.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`, who.accessToken)).body
    .find((e: any) => e.type === 'm.room.power_levels').event_id;
  const [pa, pb, pc] = [await plId(A, alice), await plId(B, bob), await plId(C, carol)];
  assert.ok([byAlice.eventId, byCarol.eventId].includes(pa), 'one branch wins');
  assert.equal(pb, pa);
  assert.equal(pc, pa);
});

test('typing, read receipts and presence flow to the other servers of a room; a ban of a remote user reaches everyone (the banned server included)', async () => {
  const since = (await rawApi(C.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', carol.accessToken)).body.next_batch;
  assert.equal((await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(alice.userId)}`, alice.accessToken, { typing: true, timeout: 20_000 })).status, 200);
  const latest = (await messages(A, alice, roomId)).body.chunk.find((e: any) => e.sender === alice.userId).event_id;
  assert.equal((await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/receipt/m.read/${encodeURIComponent(latest)}`, alice.accessToken, {})).status, 200);
  let token = since;
  const ephemeral: any[] = [];
  await eventually('carol sees alice typing and her receipt', async () => {
    const r = await rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/sync?timeout=500&since=${encodeURIComponent(token)}`, carol.accessToken);
    token = r.body.next_batch;
    ephemeral.push(...(r.body.rooms?.join?.[roomId]?.ephemeral?.events ?? []));
    return ephemeral;
  }, (evs) => evs.some((e) => e.type === 'm.typing' && e.content.user_ids.includes(alice.userId))
    && evs.some((e) => e.type === 'm.receipt' && e.content[latest]?.['m.read']?.[alice.userId]));

  // Presence: alice's status reaches carol, who shares a room with her.
  assert.equal((await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/presence/${encodeURIComponent(alice.userId)}/status`, alice.accessToken, { presence: 'online', status_msg: 'federated' })).status, 200);
  await eventually("carol sees alice's presence", async () => {
    const r = await rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/sync?timeout=500&since=${encodeURIComponent(token)}`, carol.accessToken);
    token = r.body.next_batch;
    return r.body.presence?.events ?? [];
  }, (evs) => evs.some((e: any) => e.sender === alice.userId && e.content.status_msg === 'federated'));

  // Alice bans bob (carol, at power 100, she may not): B hears of it as the target's server, so does C.
  assert.equal((await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/ban`, alice.accessToken, { user_id: carol.userId })).status, 403);
  const bobSince = (await rawApi(B.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', bob.accessToken)).body.next_batch;
  assert.equal((await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/ban`, alice.accessToken, { user_id: bob.userId, reason: 'test' })).status, 200);
  await eventually('C sees bob banned', () => rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.member/${encodeURIComponent(bob.userId)}`, carol.accessToken),
    (r) => r.body.membership === 'ban');
  await eventually('bob sees he is banned', () => rawApi(B.baseUrl, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(bobSince)}`, bob.accessToken),
    (r) => !!r.body.rooms?.leave?.[roomId]);
  const again = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}?via=${encodeURIComponent(nameA)}`, bob.accessToken, {});
  assert.equal(again.status, 403, JSON.stringify(again.body));
});

test("history visibility: a server reads a `joined` room's events from before its users joined only redacted", async () => {
  const created = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, {
    preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'joined' } }],
  });
  const room = created.body.room_id;
  const send = (txn: string, text: string) => rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room)}/send/m.room.message/${txn}`, alice.accessToken, { msgtype: 'm.text', body: text });
  const before = await send('v1', 'secret before');
  assert.equal((await rawApi(C.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(room)}?via=${encodeURIComponent(nameA)}`, carol.accessToken, {})).status, 200);
  const afterJoin = await send('v2', 'after the join');
  const keyC = parseSigningKeyFile(fs.readFileSync(path.join(C.dataDir, 'signing.key'), 'utf8'))!;
  const bf = await signedFed(fa, nameC, keyC, nameA, 'GET', `/_matrix/federation/v1/backfill/${encodeURIComponent(room)}?v=${encodeURIComponent(afterJoin.body.event_id)}&limit=50`);
  assert.equal(bf.status, 200, JSON.stringify(bf.body));
  const byBody = (text: string) => bf.body.pdus.find((p: any) => p.content?.body === text);
  assert.ok(byBody('after the join'), 'seen in full after the join');
  assert.equal(byBody('secret before'), undefined, 'never in full before it');
  assert.ok(bf.body.pdus.some((p: any) => p.type === 'm.room.message' && Object.keys(p.content).length === 0), 'the earlier message is there, redacted');
  const ev = await signedFed(fa, nameC, keyC, nameA, 'GET', `/_matrix/federation/v1/event/${encodeURIComponent(before.body.event_id)}`);
  assert.deepEqual(ev.body.pdus[0].content, {});
});

test('knock on a remote room, then let in', async () => {
  const created = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, {
    preset: 'private_chat', name: 'Knock here', initial_state: [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: 'knock' } }],
  });
  const room = created.body.room_id;
  const dave = await registerUser(B.baseUrl);
  const knocked = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/knock/${encodeURIComponent(room)}?via=${encodeURIComponent(nameA)}`, dave.accessToken, { reason: 'let me in' });
  assert.equal(knocked.status, 200, JSON.stringify(knocked.body));
  const sync = await rawApi(B.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', dave.accessToken);
  assert.equal(sync.body.rooms?.knock?.[room]?.knock_state.events.find((e: any) => e.type === 'm.room.name')?.content.name, 'Knock here');
  await eventually('A sees the knock', () => rawApi(A.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(room)}/state/m.room.member/${encodeURIComponent(dave.userId)}`, alice.accessToken),
    (r) => r.body.membership === 'knock');
  assert.equal((await rawApi(A.baseUrl, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(room)}/invite`, alice.accessToken, { user_id: dave.userId })).status, 200);
  await eventually('dave is invited', () => rawApi(B.baseUrl, 'GET', '/_matrix/client/v3/sync?timeout=0', dave.accessToken), (r) => !!r.body.rooms?.invite?.[room]);
  const join = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(room)}`, dave.accessToken, {});
  assert.equal(join.status, 200, JSON.stringify(join.body));
  // Knocking on a room of a version without knocks is refused by the room's server.
  const old = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', alice.accessToken, { room_version: '6', preset: 'public_chat' });
  const refused = await rawApi(B.baseUrl, 'POST', `/_matrix/client/v3/knock/${encodeURIComponent(old.body.room_id)}?via=${encodeURIComponent(nameA)}`, dave.accessToken, {});
  assert.equal(refused.status, 400, JSON.stringify(refused.body));
});

test('an encrypted DM between matrix-js-sdk Rust-crypto clients on two servers decrypts both ways', async () => {
  const [erin, frank] = await Promise.all([registerUser(A.baseUrl), registerUser(C.baseUrl)]);
  const [ce, cf] = [await makeClient(A.baseUrl, erin, { crypto: true }), await makeClient(C.baseUrl, frank, { crypto: true })];
  const created = await rawApi(A.baseUrl, 'POST', '/_matrix/client/v3/createRoom', erin.accessToken, {
    preset: 'trusted_private_chat', is_direct: true, invite: [frank.userId],
    initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
  });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const dm = created.body.room_id;
  await eventually('frank is invited', async () => cf.getRoom(dm)?.getMyMembership(), (m) => m === 'invite', 20_000);
  const joined = await rawApi(C.baseUrl, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(dm)}`, frank.accessToken, {});
  assert.equal(joined.status, 200, JSON.stringify(joined.body));
  const bothJoined = (c: MatrixClient) => async () => c.getRoom(dm)?.getJoinedMemberCount();
  await eventually('erin sees frank joined', bothJoined(ce), (n) => n === 2, 20_000);
  await eventually('frank sees himself joined', bothJoined(cf), (n) => n === 2, 20_000);
  const decrypted = (c: MatrixClient, text: string) => async () =>
    (c.getRoom(dm)?.getLiveTimeline().getEvents() ?? []).some((e) => e.getType() === 'm.room.message' && e.isEncrypted() && e.getContent().body === text);
  await ce.sendTextMessage(dm, 'secret across servers');
  await eventually('frank decrypts', decrypted(cf, 'secret across servers'), (x) => x, 30_000);
  await cf.sendTextMessage(dm, 'secret reply');
  await eventually('erin decrypts', decrypted(ce, 'secret reply'), (x) => x, 30_000);
  const stored = await messages(C, frank, dm);
  assert.ok(stored.body.chunk.some((e: any) => e.type === 'm.room.encrypted'), 'the servers hold ciphertext');
  assert.ok(!JSON.stringify(stored.body).includes('secret across servers'));
});

test('events a server never got are fetched with get_missing_events when a later one cites them', async () => {
  await C.kill();
  // More than one get_missing_events answer (10 events) can hold.
  const lost = 14;
  for (let i = 0; i < lost; i++) {
    assert.equal((await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/gap${i}`, alice.accessToken, { msgtype: 'm.text', body: `gap ${i}` })).status, 200);
  }
  // Lost on the way: A's queue for C forgets them.
  const db = await connectDatabase(A);
  try {
    await eventually('the events are queued for C', async () => (await db.query('SELECT count(*)::int AS n FROM federation_outbound_queue WHERE destination = $1', [nameC])).rows[0].n, (n) => n >= lost);
    await db.query('DELETE FROM federation_outbound_queue WHERE destination = $1', [nameC]);
  } finally {
    await db.end();
  }
  await C.restart();
  assert.equal((await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/gap-last`, alice.accessToken, { msgtype: 'm.text', body: 'gap last' })).status, 200);
  const want = [...Array.from({ length: lost }, (_, i) => `gap ${i}`), 'gap last'];
  await eventually('C has the later event and the ones it missed', () => messages(C, carol, roomId), (r) => want.every((m) => bodies(r).includes(m)), 30_000);
});

test('m.room.server_acl: a denied server\'s events and requests are refused for the room', async () => {
  const acl = await rawApi(A.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.server_acl/`, alice.accessToken, { allow: ['*'], allow_ip_literals: false });
  assert.equal(acl.status, 200, JSON.stringify(acl.body));
  await eventually('C has the ACL', () => rawApi(C.baseUrl, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.server_acl/`, carol.accessToken), (r) => r.status === 200);
  // C (an IP literal) is denied: what carol sends on C never shows on A.
  assert.equal((await rawApi(C.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/acl1`, carol.accessToken, { msgtype: 'm.text', body: 'from a denied server' })).status, 200);
  const keyC = parseSigningKeyFile(fs.readFileSync(path.join(C.dataDir, 'signing.key'), 'utf8'))!;
  const st = await signedFed(fa, nameC, keyC, nameA, 'GET', `/_matrix/federation/v1/state_ids/${encodeURIComponent(roomId)}?event_id=x`);
  assert.equal(st.status, 403, JSON.stringify(st.body));
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(!bodies(await messages(A, alice, roomId)).includes('from a denied server'));
});
