// Room version 12 end to end on one server: the room ID is the create event's hash, creators
// (sender + additional_creators) have infinite power that no PL 100 user can touch, members read
// /sync, /messages and /state as usual, @room from a creator notifies, upgrades into and out of
// v12 rooms, a matrix-js-sdk client chats in one, and bad additional_creators create nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import type { MatrixClient } from 'matrix-js-sdk';
import { startHomeserver, type Homeserver } from '../../homeserver/main.ts';
import { loadConfig } from '../../homeserver/config.ts';
import { computeRoomId } from '../../homeserver/protocol/hashes.ts';
import { getRoomVersion } from '../../homeserver/protocol/room-versions.ts';
import { finalizeEvent } from '../../homeserver/protocol/signing.ts';
import type { PDU } from '../../homeserver/protocol/auth.ts';
import { createTestDatabase } from '../helpers/server.ts';
import { remoteServer } from '../helpers/pdus.ts';
import { makeClient, registerUser, roomApi, waitForMessage, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const V12 = getRoomVersion('12')!;

describe('room version 12', () => {
  let hs: Homeserver;
  let base: string;
  let dataDir: string;
  let alice: Credentials;
  let bob: Credentials;
  let carol: Credentials;
  let client: MatrixClient | undefined;
  const { call, room, create, send } = roomApi(() => base);
  const state = async (who: Credentials, rid: string, type: string, key = '') => {
    const res = await call('GET', `${room(rid)}/state/${type}/${encodeURIComponent(key)}`, { token: who.accessToken });
    return res.status === 200 ? res.body : undefined;
  };
  const put = (who: Credentials, rid: string, type: string, content: unknown, key = '') =>
    call('PUT', `${room(rid)}/state/${type}/${encodeURIComponent(key)}`, { token: who.accessToken, body: content });
  const join = async (who: Credentials, rid: string) => {
    const res = await call('POST', `${C}/join/${encodeURIComponent(rid)}`, { token: who.accessToken, body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };
  const joinedRooms = async (who: Credentials) => (await call('GET', `${C}/joined_rooms`, { token: who.accessToken })).body.joined_rooms as string[];

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-v12-'));
    const url = await createTestDatabase();
    const config = loadConfig({
      PORT: '0', SERVER_NAME: 'localhost', DATA_DIR: dataDir, RATE_LIMITS: 'off', LOG_LEVEL: 'warn', AUTO_JOIN_ROOMS: '', ...(url ? { DATABASE_URL: url } : {}),
    });
    hs = await startHomeserver(config, pino({ level: 'warn' }));
    base = `http://127.0.0.1:${(hs.server.address() as AddressInfo).port}`;
    alice = await registerUser(base);
    bob = await registerUser(base);
    carol = await registerUser(base);
  });

  after(async () => {
    client?.stopClient();
    await hs?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test('version 12 is offered; the default stays 10', async () => {
    const caps = (await call('GET', `${C}/capabilities`, { token: alice.accessToken })).body.capabilities['m.room_versions'];
    assert.equal(caps.available['12'], 'stable');
    assert.equal(caps.default, '10');
    const rid = await create(alice, {});
    assert.equal((await state(alice, rid, 'm.room.create')).room_version, '10');
  });

  test('the room ID is the create event\'s hash; the creator is not listed in the power levels', async () => {
    const rid = await create(alice, { room_version: '12', preset: 'public_chat', name: 'v12' });
    assert.match(rid, /^![A-Za-z0-9_-]{43}$/);
    const stored = (await hs.db.raw('SELECT json FROM events WHERE event_id = ?', [`$${rid.slice(1)}`])).rows;
    assert.equal(stored.length, 1);
    const pdu = JSON.parse(stored[0].json);
    assert.equal(pdu.room_id, undefined, 'a v12 create event carries no room_id');
    assert.equal(computeRoomId(pdu, V12), rid);
    const createEv = (await call('GET', `${room(rid)}/state`, { token: alice.accessToken })).body.find((e: { type: string }) => e.type === 'm.room.create');
    assert.equal(createEv.room_id, rid, 'clients see the create event with its room ID');
    assert.equal(createEv.event_id, `$${rid.slice(1)}`);
    assert.equal(createEv.sender, alice.userId);
    const pl = await state(alice, rid, 'm.room.power_levels');
    assert.deepEqual(pl.users, {});
    assert.equal(pl.events['m.room.tombstone'], 150);
    assert.equal((await state(alice, rid, 'm.room.name')).name, 'v12');
    // Two rooms made alike in a row still get two IDs.
    const again = await create(alice, { room_version: '12', preset: 'public_chat', name: 'v12' });
    assert.notEqual(again, rid);
  });

  test('the creator outranks a PL 100 user, who can neither kick nor demote them', async () => {
    const rid = await create(alice, { room_version: '12', preset: 'public_chat' });
    await join(bob, rid);
    await join(carol, rid);
    assert.equal((await put(alice, rid, 'm.room.power_levels', { ...(await state(alice, rid, 'm.room.power_levels')), users: { [bob.userId]: 100 } })).status, 200);
    const pl = await state(alice, rid, 'm.room.power_levels');
    // Bob (100) cannot touch the creator: not kick, not ban, not list them in users at any level.
    for (const membership of ['leave', 'ban']) {
      const res = await call('POST', `${room(rid)}/${membership === 'ban' ? 'ban' : 'kick'}`, { token: bob.accessToken, body: { user_id: alice.userId } });
      assert.equal(res.status, 403, JSON.stringify(res.body));
    }
    for (const level of [0, 100, 1000]) {
      const res = await put(bob, rid, 'm.room.power_levels', { ...pl, users: { ...pl.users, [alice.userId]: level } });
      assert.equal(res.status, 403, `listing the creator at ${level}: ${JSON.stringify(res.body)}`);
    }
    // Even the creator may not list themselves.
    assert.equal((await put(alice, rid, 'm.room.power_levels', { ...pl, users: { ...pl.users, [alice.userId]: 100 } })).status, 403);
    // Bob may still kick carol (below him), and the tombstone level (150) is above him.
    assert.equal((await call('POST', `${room(rid)}/kick`, { token: bob.accessToken, body: { user_id: carol.userId } })).status, 200);
    assert.equal((await put(bob, rid, 'm.room.tombstone', { body: 'x', replacement_room: '!x:localhost' })).status, 403);
    assert.equal((await call('POST', `${room(rid)}/upgrade`, { token: bob.accessToken, body: { new_version: '12' } })).status, 403);
    // The creator does everything: demote bob, kick him, set any state.
    assert.equal((await put(alice, rid, 'm.room.power_levels', { ...pl, users: {} })).status, 200);
    assert.equal((await put(alice, rid, 'm.room.server_acl', { allow: ['*'], deny: [] })).status, 200);
    assert.equal((await call('POST', `${room(rid)}/kick`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
    assert.equal((await call('POST', `${room(rid)}/ban`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
    assert.equal((await state(alice, rid, 'm.room.member', bob.userId)).membership, 'ban');
  });

  test('additional_creators and trusted_private_chat invitees have creator power', async () => {
    const rid = await create(alice, { room_version: '12', preset: 'public_chat', creation_content: { additional_creators: [carol.userId] } });
    assert.deepEqual((await state(alice, rid, 'm.room.create')).additional_creators, [carol.userId]);
    await join(bob, rid);
    await join(carol, rid);
    const pl = await state(alice, rid, 'm.room.power_levels');
    assert.equal((await put(alice, rid, 'm.room.power_levels', { ...pl, users: { [bob.userId]: 100 } })).status, 200);
    // Carol (creator, unlisted) demotes bob, bob cannot kick carol; listing carol is refused.
    assert.equal((await call('POST', `${room(rid)}/kick`, { token: bob.accessToken, body: { user_id: carol.userId } })).status, 403);
    assert.equal((await put(carol, rid, 'm.room.power_levels', { ...pl, users: { [bob.userId]: 10 } })).status, 200);
    assert.equal((await put(carol, rid, 'm.room.power_levels', { ...pl, users: { [carol.userId]: 100 } })).status, 403);
    assert.equal((await put(carol, rid, 'm.room.name', { name: 'by carol' })).status, 200);

    const dm = await create(alice, { room_version: '12', preset: 'trusted_private_chat', invite: [bob.userId], is_direct: true });
    assert.deepEqual((await state(alice, dm, 'm.room.create')).additional_creators, [bob.userId]);
    assert.deepEqual((await state(alice, dm, 'm.room.power_levels')).users, {});
    await join(bob, dm);
    assert.equal((await put(bob, dm, 'm.room.power_levels', { ...(await state(bob, dm, 'm.room.power_levels')), users: { [carol.userId]: 50 } })).status, 200);
  });

  test('a member reads /sync, /messages and /state; @room from the creator notifies', async () => {
    const rid = await create(alice, { room_version: '12', preset: 'public_chat', topic: 'hashes' });
    const since = (await call('GET', `${C}/sync?timeout=0`, { token: bob.accessToken })).body.next_batch;
    await join(bob, rid);
    await send(alice, rid, 'hello v12');
    const mention = await call('PUT', `${room(rid)}/send/m.room.message/m1`, { token: alice.accessToken, body: { msgtype: 'm.text', body: '@room look', 'm.mentions': { room: true } } });
    assert.equal(mention.status, 200);

    const initial = (await call('GET', `${C}/sync?timeout=0`, { token: bob.accessToken })).body;
    const joined = initial.rooms.join[rid];
    assert.ok(joined, 'the room is in the initial sync');
    const stateTypes = [...joined.state.events, ...joined.timeline.events].map((e: { type: string }) => e.type);
    assert.ok(stateTypes.includes('m.room.create') && stateTypes.includes('m.room.topic'));
    assert.ok(joined.timeline.events.some((e: { content: { body?: string } }) => e.content.body === 'hello v12'));
    assert.equal(joined.unread_notifications.highlight_count, 1, 'a creator (infinite power) may notify @room');

    const incr = (await call('GET', `${C}/sync?timeout=0&since=${encodeURIComponent(since)}`, { token: bob.accessToken })).body;
    assert.ok(incr.rooms.join[rid].timeline.events.some((e: { content: { body?: string } }) => e.content.body === 'hello v12'));

    const page = (await call('GET', `${room(rid)}/messages?dir=b&limit=50`, { token: bob.accessToken })).body;
    const types = page.chunk.map((e: { type: string }) => e.type);
    assert.equal(types[types.length - 1], 'm.room.create', 'history pages back to the create event');
    assert.ok(page.chunk.every((e: { room_id: string }) => e.room_id === rid));
    const all = (await call('GET', `${room(rid)}/state`, { token: bob.accessToken })).body as Array<{ type: string; state_key: string; content: Record<string, unknown> }>;
    assert.equal(all.find((e) => e.type === 'm.room.member' && e.state_key === bob.userId)?.content.membership, 'join');
    assert.equal((await call('GET', `${room(rid)}/joined_members`, { token: bob.accessToken })).body.joined[alice.userId] !== undefined, true);

    // The admin API's room details.
    const admin = await registerUser(base);
    await hs.db.raw('UPDATE users SET is_admin = true WHERE user_id = ?', [admin.userId]);
    const details = await call('GET', `/_synapse/admin/v1/rooms/${encodeURIComponent(rid)}`, { token: admin.accessToken });
    assert.equal(details.status, 200, JSON.stringify(details.body));
    assert.equal(details.body.room_id, rid);
    assert.equal(details.body.version, '12');
    assert.equal(details.body.creator, alice.userId);
    assert.equal(details.body.joined_local_members, 2);
  });

  test('upgrades: v10 → v12 → v12 (with an additional creator) → v11, members following the tombstones', async () => {
    const v10 = await create(alice, { preset: 'public_chat', name: 'old', power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 50 } } });
    await join(bob, v10);
    const up = async (who: Credentials, rid: string, body: Record<string, unknown>) => {
      const res = await call('POST', `${room(rid)}/upgrade`, { token: who.accessToken, body });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body.replacement_room as string;
    };
    const first = await up(alice, v10, { new_version: '12', additional_creators: ['@ignored:localhost'] });
    assert.match(first, /^![A-Za-z0-9_-]{43}$/);
    assert.equal((await state(alice, v10, 'm.room.tombstone')).replacement_room, first);
    const c1 = await state(alice, first, 'm.room.create');
    assert.equal(c1.room_version, '12');
    assert.equal(c1.predecessor.room_id, v10);
    assert.deepEqual(c1.additional_creators, ['@ignored:localhost']);
    const pl1 = await state(alice, first, 'm.room.power_levels');
    assert.deepEqual(pl1.users, { [bob.userId]: 50 }, 'the upgrader (now a creator) is not listed; others keep their levels');
    assert.equal((await state(alice, first, 'm.room.name')).name, 'old');
    // Bob follows the tombstone and talks in the new room.
    await join(bob, first);
    await send(bob, first, 'in the v12 room');

    // Bad additional_creators on an upgrade to v12: refused, nothing changes.
    const bad = await call('POST', `${room(first)}/upgrade`, { token: alice.accessToken, body: { new_version: '12', additional_creators: 'nope' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, 'M_BAD_JSON');
    assert.equal(await state(alice, first, 'm.room.tombstone'), undefined);

    const second = await up(alice, first, { new_version: '12', additional_creators: [bob.userId] });
    assert.equal((await state(alice, first, 'm.room.tombstone')).replacement_room, second);
    const c2 = await state(alice, second, 'm.room.create');
    assert.deepEqual(c2.additional_creators, [bob.userId], 'creators are not carried over, only the ones named');
    assert.equal(c2.predecessor.room_id, first);
    assert.deepEqual((await state(alice, second, 'm.room.power_levels')).users, {}, 'neither creator is listed');
    await join(bob, second);
    assert.equal((await put(bob, second, 'm.room.topic', { topic: 'bob is a creator' })).status, 200);
    // The old v12 room: ordinary users may no longer talk.
    const oldPl = await state(alice, first, 'm.room.power_levels');
    assert.ok(oldPl.events_default >= 50 && oldPl.invite >= 50);

    // Out of v12 again: the creator keeps the top level of a room without creator power.
    const third = await up(alice, second, { new_version: '11' });
    assert.equal((await state(alice, third, 'm.room.create')).room_version, '11');
    assert.match(third, /^![A-Za-z0-9_-]+:localhost$/);
    const pl3 = await state(alice, third, 'm.room.power_levels');
    assert.equal(pl3.users[alice.userId], 100, JSON.stringify(pl3));
    assert.ok(pl3.users[alice.userId] >= pl3.events['m.room.tombstone']);
    assert.equal(pl3.users[bob.userId], undefined, 'bob was a creator of the v12 room only');
    assert.equal((await put(alice, third, 'm.room.topic', { topic: 'still in charge' })).status, 200);
  });

  test('a matrix-js-sdk client joins and chats in a v12 room', async () => {
    const rid = await create(alice, { room_version: '12', preset: 'public_chat' });
    client = await makeClient(base, carol);
    await client.joinRoom(rid);
    await send(alice, rid, 'hi from alice');
    await waitForMessage(client, rid, (e) => e.getContent().body === 'hi from alice');
    await client.sendTextMessage(rid, 'hi from the sdk');
    const page = (await call('GET', `${room(rid)}/messages?dir=b&limit=10`, { token: alice.accessToken })).body;
    assert.ok(page.chunk.some((e: { sender: string; content: { body?: string } }) => e.sender === carol.userId && e.content.body === 'hi from the sdk'));
    assert.equal(client.getRoom(rid)?.getVersion(), '12');
    client.stopClient();
    client = undefined;
  });

  test('a remote v12 room persists through the DAG: the implied create event authorises, a listed creator is rejected', async () => {
    const remote = remoteServer('remote.test', '12');
    const ra = '@alice:remote.test';
    const rb = '@bob:remote.test';
    const unsignedCreate = { auth_events: [], content: { room_version: '12' }, depth: 1, origin_server_ts: Date.now(), prev_events: [], sender: ra, state_key: '', type: 'm.room.create' };
    const { event, eventId } = finalizeEvent(unsignedCreate, remote.name, remote.key, V12);
    const createPdu = { ...event, event_id: eventId } as unknown as PDU;
    const rid = computeRoomId(event, V12);
    const ev = (type: string, sender: string, content: Record<string, unknown>, prev: PDU[], auth: PDU[], stateKey?: string) =>
      remote.event({ roomId: rid, type, sender, content, prev, auth, stateKey });
    const aliceJoin = ev('m.room.member', ra, { membership: 'join' }, [createPdu], [], ra);
    const power = ev('m.room.power_levels', ra, { users: { [rb]: 100 } }, [aliceJoin], [aliceJoin], '');
    const rules = ev('m.room.join_rules', ra, { join_rule: 'public' }, [power], [power, aliceJoin], '');
    const bobJoin = ev('m.room.member', rb, { membership: 'join' }, [rules], [power, rules], rb);
    // Bob (100) kicking the creator, and listing her in the power levels: both denied by the auth rules.
    const kick = ev('m.room.member', rb, { membership: 'leave' }, [bobJoin], [power, bobJoin, aliceJoin], ra);
    const listed = ev('m.room.power_levels', rb, { users: { [rb]: 100, [ra]: 0 } }, [bobJoin], [power, bobJoin], '');
    const results = await hs.engine.persistAuthorised(rid, [createPdu, aliceJoin, power, rules, bobJoin, kick, listed]);
    const outcome = new Map(results.map((r) => [r.eventId, r.outcome]));
    for (const e of [createPdu, aliceJoin, power, rules, bobJoin]) assert.equal(outcome.get(e.event_id!), 'accepted', e.type);
    assert.equal(outcome.get(kick.event_id!), 'rejected');
    assert.equal(outcome.get(listed.event_id!), 'rejected');
    const meta = (await hs.db.raw('SELECT room_version FROM rooms WHERE room_id = ?', [rid])).rows[0];
    assert.equal(meta.room_version, '12');
  });

  for (const version of ['1', '2']) {
    test(`room version ${version}: server-assigned event IDs, events cite [id, hashes] pairs, the room works end to end`, async () => {
      const rid = await create(alice, { room_version: version, preset: 'public_chat', name: `v${version}` });
      assert.equal((await state(alice, rid, 'm.room.create')).room_version, version);
      assert.equal((await state(alice, rid, 'm.room.create')).creator, alice.userId);
      await join(bob, rid);
      const msg = await send(bob, rid, `hello v${version}`);
      assert.match(msg, /^\$[A-Za-z0-9]{18}:localhost$/);
      const stored = JSON.parse((await hs.db.raw('SELECT json FROM events WHERE event_id = ?', [msg])).rows[0].json);
      assert.equal(stored.event_id, msg, 'the event ID is part of the signed event');
      for (const refs of [stored.prev_events, stored.auth_events]) {
        assert.ok(refs.length > 0 && refs.every((r: unknown) => Array.isArray(r) && typeof r[0] === 'string' && typeof r[1].sha256 === 'string'), JSON.stringify(refs));
      }
      const prev = JSON.parse((await hs.db.raw('SELECT json FROM events WHERE event_id = ?', [stored.prev_events[0][0]])).rows[0].json);
      assert.equal(stored.prev_events[0][1].sha256, prev.hashes.sha256);
      // State, power, redaction and kicks go through the auth rules of the version.
      assert.equal((await put(bob, rid, 'm.room.name', { name: 'no' })).status, 403);
      assert.equal((await put(alice, rid, 'm.room.topic', { topic: `v${version} topic` })).status, 200);
      const redact = await call('PUT', `${room(rid)}/redact/${encodeURIComponent(msg)}/r1`, { token: alice.accessToken, body: { reason: 'x' } });
      assert.equal(redact.status, 200, JSON.stringify(redact.body));
      const page = (await call('GET', `${room(rid)}/messages?dir=b&limit=50`, { token: bob.accessToken })).body;
      const redacted = page.chunk.find((e: { event_id: string }) => e.event_id === msg);
      assert.deepEqual(redacted.content, {}, 'the message is redacted');
      assert.equal(page.chunk[page.chunk.length - 1].type, 'm.room.create');
      const synced = (await call('GET', `${C}/sync?timeout=0`, { token: bob.accessToken })).body.rooms.join[rid];
      assert.ok(synced, 'the room is in bob\'s sync');
      assert.equal((await call('POST', `${room(rid)}/kick`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
      assert.equal((await state(alice, rid, 'm.room.member', bob.userId)).membership, 'leave');
      // And out of it by an upgrade.
      const up = await call('POST', `${room(rid)}/upgrade`, { token: alice.accessToken, body: { new_version: '12' } });
      assert.equal(up.status, 200, JSON.stringify(up.body));
      assert.equal((await state(alice, rid, 'm.room.tombstone')).replacement_room, up.body.replacement_room);
    });
  }

  test('bad additional_creators or a listed creator: 400/403 and no room', async () => {
    const before = (await joinedRooms(alice)).length;
    const cases: unknown[] = ['@x:localhost', [1], ['not a user'], [alice.userId, { id: 1 }], null];
    for (const additional_creators of cases) {
      const res = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { room_version: '12', creation_content: { additional_creators } } });
      assert.equal(res.status, 400, JSON.stringify(additional_creators));
      assert.ok(['M_BAD_JSON', 'M_INVALID_PARAM'].includes(res.body.errcode), JSON.stringify(res.body));
    }
    const listed = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { room_version: '12', power_level_content_override: { users: { [alice.userId]: 100 } } } });
    assert.ok(listed.status === 400 || listed.status === 403, JSON.stringify(listed.body));
    assert.equal((await joinedRooms(alice)).length, before);
    const count = (await hs.db.raw("SELECT count(*)::int AS n FROM rooms WHERE room_version = '12'")).rows[0].n;
    const res = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { room_version: '12', creation_content: { additional_creators: 'x' } } });
    assert.equal(res.status, 400);
    assert.equal((await hs.db.raw("SELECT count(*)::int AS n FROM rooms WHERE room_version = '12'")).rows[0].n, count);
  });
});
