// /sync over raw HTTP: initial and incremental, long-poll, limited timelines, sections, filters.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('sync', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  const { call } = roomApi(() => server.baseUrl);
  const sync = async (who: Credentials, query = '') => {
    const res = await call('GET', `${C}/sync?${query}`, { token: who.accessToken });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const send = async (who: Credentials, roomId: string, body: string) =>
    (await call('PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${Math.random()}`, { token: who.accessToken, body: { msgtype: 'm.text', body } })).body.event_id as string;
  const bodies = (section: any) => (section?.timeline?.events ?? []).filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);

  before(async () => {
    // Room sync alone: presence would answer long-polls too (that is presence.test.ts).
    server = await startServer({ env: { PRESENCE: 'off' } });
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test('initial sync has the joined rooms with state and timeline; incremental only what is new', async () => {
    const roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { name: 'S1' } })).body.room_id;
    await send(alice, roomId, 'one');
    const first = await sync(alice);
    assert.match(first.next_batch, /^s\d+/);
    const r = first.rooms.join[roomId];
    assert.ok(r, 'room in join section');
    assert.deepEqual(bodies(r), ['one']);
    const everything = [...r.state.events, ...r.timeline.events];
    assert.ok(everything.some((e: any) => e.type === 'm.room.name' && e.content.name === 'S1'));
    assert.ok(everything.every((e: any) => e.room_id === undefined), 'sync events omit room_id');
    await send(alice, roomId, 'two');
    const next = await sync(alice, `since=${first.next_batch}`);
    assert.deepEqual(bodies(next.rooms.join[roomId]), ['two']);
    assert.equal(next.rooms.join[roomId].timeline.limited, false);
    const none = await sync(alice, `since=${next.next_batch}`);
    assert.equal(none.rooms.join[roomId], undefined);
    const own = next.rooms.join[roomId].timeline.events.find((e: any) => e.content.body === 'two');
    assert.ok(own.unsigned.transaction_id, 'the sending device sees its transaction id');
  });

  test('a long-poll returns as soon as another user sends, and times out when nothing happens', async () => {
    const roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } })).body.room_id;
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    const base = await sync(bob);
    const started = Date.now();
    const poll = sync(bob, `since=${base.next_batch}&timeout=20000`);
    await new Promise((r) => setTimeout(r, 300));
    const eventId = await send(alice, roomId, 'wake up');
    const res = await poll;
    const waited = Date.now() - started;
    assert.ok(res.rooms.join[roomId].timeline.events.some((e: any) => e.event_id === eventId));
    assert.ok(waited < 5000, `returned promptly (${waited} ms)`);
    const t0 = Date.now();
    const idle = await sync(bob, `since=${res.next_batch}&timeout=700`);
    assert.ok(Date.now() - t0 >= 600, 'waited for the timeout');
    assert.deepEqual(idle.rooms.join, {});
  });

  test('limited timeline with prev_batch that /messages continues from', async () => {
    const roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
    const base = await sync(alice);
    for (let i = 0; i < 8; i++) await send(alice, roomId, `n${i}`);
    const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 3 } } }));
    const res = await sync(alice, `since=${base.next_batch}&filter=${filter}`);
    const r = res.rooms.join[roomId];
    assert.equal(r.timeline.limited, true);
    assert.deepEqual(bodies(r), ['n5', 'n6', 'n7']);
    const more = await call('GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=3&from=${r.timeline.prev_batch}`, { token: alice.accessToken });
    assert.deepEqual(more.body.chunk.map((e: any) => e.content.body), ['n4', 'n3', 'n2']);
  });

  test('invite, join and leave sections', async () => {
    const base = await sync(bob);
    const roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { name: 'Secret', invite: [bob.userId] } })).body.room_id;
    const invited = await sync(bob, `since=${base.next_batch}`);
    const inv = invited.rooms.invite[roomId];
    assert.ok(inv, 'invite section');
    const types = inv.invite_state.events.map((e: any) => e.type);
    assert.ok(types.includes('m.room.name') && types.includes('m.room.member') && types.includes('m.room.create'));
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    const joined = await sync(bob, `since=${invited.next_batch}`);
    const j = joined.rooms.join[roomId];
    assert.ok(j, 'join section after joining');
    assert.ok([...j.state.events, ...j.timeline.events].some((e: any) => e.type === 'm.room.name'), 'full state for a newly joined room');
    assert.ok(j.summary['m.joined_member_count'] === 2);
    await call('POST', `${C}/rooms/${encodeURIComponent(roomId)}/leave`, { token: bob.accessToken });
    const left = await sync(bob, `since=${joined.next_batch}`);
    assert.ok(left.rooms.leave[roomId], 'leave section');
    assert.ok(left.rooms.leave[roomId].timeline.events.some((e: any) => e.type === 'm.room.member' && e.content.membership === 'leave'));
    assert.equal(left.rooms.join[roomId], undefined);
  });

  test('account data, global and per room, arrives in sync', async () => {
    const roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
    const base = await sync(alice);
    const u = encodeURIComponent(alice.userId);
    assert.equal((await call('PUT', `${C}/user/${u}/account_data/m.direct`, { token: alice.accessToken, body: { [bob.userId]: [roomId] } })).status, 200);
    assert.equal((await call('PUT', `${C}/user/${u}/rooms/${encodeURIComponent(roomId)}/tags/u.work`, { token: alice.accessToken, body: { order: 0.5 } })).status, 200);
    const res = await sync(alice, `since=${base.next_batch}`);
    assert.deepEqual(res.account_data.events.find((e: any) => e.type === 'm.direct').content, { [bob.userId]: [roomId] });
    const tag = res.rooms.join[roomId].account_data.events.find((e: any) => e.type === 'm.tag');
    assert.deepEqual(tag.content, { tags: { 'u.work': { order: 0.5 } } });
    assert.deepEqual((await call('GET', `${C}/user/${u}/account_data/m.direct`, { token: alice.accessToken })).body, { [bob.userId]: [roomId] });
    assert.equal((await call('GET', `${C}/user/${encodeURIComponent(bob.userId)}/account_data/m.direct`, { token: alice.accessToken })).status, 403);
  });

  test('filters: upload and use by id; lazy_load_members; full_state', async () => {
    const roomId = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } })).body.room_id;
    const carol = await registerUser(server.baseUrl);
    for (const u of [bob, carol]) await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: u.accessToken });
    for (let i = 0; i < 5; i++) await send(alice, roomId, `lazy ${i}`);
    const u = encodeURIComponent(carol.userId);
    const body = { room: { state: { lazy_load_members: true }, timeline: { limit: 5 } } };
    const up = await call('POST', `${C}/user/${u}/filter`, { token: carol.accessToken, body });
    assert.equal(up.status, 200);
    assert.equal((await call('GET', `${C}/user/${u}/filter/${up.body.filter_id}`, { token: carol.accessToken })).body.room.timeline.limit, 5);
    const bad = await call('POST', `${C}/user/${u}/filter`, { token: carol.accessToken, body: { room: { timeline: { limit: 'ten' } } } });
    assert.equal(bad.status, 400);
    const res = await sync(carol, `filter=${up.body.filter_id}`);
    const members = res.rooms.join[roomId].state.events.filter((e: any) => e.type === 'm.room.member').map((e: any) => e.state_key);
    assert.ok(members.includes(alice.userId) || res.rooms.join[roomId].timeline.events.some((e: any) => e.type === 'm.room.member' && e.state_key === alice.userId));
    assert.ok(!members.includes(bob.userId), 'members who did not speak are not loaded');
    const full = await sync(carol, `since=${res.next_batch}&full_state=true`);
    const fr = full.rooms.join[roomId];
    const fullMembers = [...fr.state.events, ...fr.timeline.events].filter((e: any) => e.type === 'm.room.member').map((e: any) => e.state_key);
    assert.ok(fullMembers.includes(bob.userId) && fullMembers.includes(alice.userId));
    assert.equal((await call('GET', `${C}/sync?since=garbage`, { token: carol.accessToken })).status, 400);
  });
});
