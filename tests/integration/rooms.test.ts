// Rooms over raw HTTP: creation presets, membership, state, redaction, aliases, visibility, reads.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('rooms', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  const { call, room, create, send } = roomApi(() => server.baseUrl);
  const state = async (who: Credentials, roomId: string, type: string, key = '') =>
    call('GET', `${room(roomId)}/state/${type}/${encodeURIComponent(key)}`, { token: who.accessToken });

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test('public_chat preset with alias, name, topic and initial_state', async () => {
    const res = await call('POST', `${C}/createRoom`, {
      token: alice.accessToken,
      body: { preset: 'public_chat', room_alias_name: 'lobby', name: 'Lobby', topic: 'hi', initial_state: [{ type: 'm.room.guest_access', content: { guest_access: 'forbidden' } }] },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.room_alias, '#lobby:localhost');
    const roomId = res.body.room_id;
    assert.equal((await state(alice, roomId, 'm.room.join_rules')).body.join_rule, 'public');
    assert.equal((await state(alice, roomId, 'm.room.name')).body.name, 'Lobby');
    assert.equal((await state(alice, roomId, 'm.room.topic')).body.topic, 'hi');
    assert.equal((await state(alice, roomId, 'm.room.canonical_alias')).body.alias, '#lobby:localhost');
    assert.equal((await state(alice, roomId, 'm.room.guest_access')).body.guest_access, 'forbidden');
    assert.equal((await state(alice, roomId, 'm.room.create')).body.room_version, '10');
    const again = await call('POST', `${C}/createRoom`, { token: bob.accessToken, body: { room_alias_name: 'lobby' } });
    assert.equal(again.status, 400);
    assert.equal(again.body.errcode, 'M_ROOM_IN_USE');
    // Bob joins by alias.
    const joined = await call('POST', `${C}/join/${encodeURIComponent('#lobby:localhost')}`, { token: bob.accessToken });
    assert.equal(joined.body.room_id, roomId);
    const ev = await state(alice, roomId, 'm.room.member', bob.userId);
    assert.equal(ev.body.membership, 'join');
  });

  test('trusted_private_chat gives invitees ops; power_level_content_override applies; v11 rooms', async () => {
    const roomId = await create(alice, { preset: 'trusted_private_chat', invite: [bob.userId], is_direct: true, power_level_content_override: { events_default: 10 } });
    const pl = (await state(alice, roomId, 'm.room.power_levels')).body;
    assert.equal(pl.users[bob.userId], 100);
    assert.equal(pl.events_default, 10);
    const v11 = await create(alice, { room_version: '11' });
    const createEv = await call('GET', `${room(v11)}/state/m.room.create/?format=event`, { token: alice.accessToken });
    assert.equal(createEv.body.content.room_version, '11');
    assert.equal(createEv.body.content.creator, undefined, 'v11 has no creator field');
    await send(alice, v11, 'v11 works');
  });

  test('invite, reject, kick, ban, unban follow the auth rules', async () => {
    const roomId = await create(alice, { preset: 'private_chat' });
    assert.equal((await call('POST', `${room(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
    assert.equal((await call('POST', `${room(roomId)}/leave`, { token: bob.accessToken })).status, 200, 'reject the invite');
    assert.equal((await state(alice, roomId, 'm.room.member', bob.userId)).body.membership, 'leave');
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken })).status, 403);
    await call('POST', `${room(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken })).status, 200);
    assert.equal((await call('POST', `${room(roomId)}/kick`, { token: alice.accessToken, body: { user_id: bob.userId, reason: 'bye' } })).status, 200);
    const kicked = (await state(alice, roomId, 'm.room.member', bob.userId)).body;
    assert.equal(kicked.membership, 'leave');
    assert.equal(kicked.reason, 'bye');
    assert.equal((await call('POST', `${room(roomId)}/ban`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
    assert.equal((await call('POST', `${room(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 403, 'banned users cannot be invited');
    assert.equal((await call('POST', `${room(roomId)}/unban`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
    assert.equal((await state(alice, roomId, 'm.room.member', bob.userId)).body.membership, 'leave');
  });

  test('forget needs leaving first; knock on a knock room', async () => {
    const roomId = await create(alice, { preset: 'public_chat' });
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    assert.equal((await call('POST', `${room(roomId)}/forget`, { token: bob.accessToken })).status, 400);
    await call('POST', `${room(roomId)}/leave`, { token: bob.accessToken });
    assert.equal((await call('POST', `${room(roomId)}/forget`, { token: bob.accessToken })).status, 200);

    const knockRoom = await create(alice, { initial_state: [{ type: 'm.room.join_rules', content: { join_rule: 'knock' } }] });
    const knocked = await call('POST', `${C}/knock/${encodeURIComponent(knockRoom)}`, { token: bob.accessToken, body: { reason: 'let me in' } });
    assert.equal(knocked.status, 200, JSON.stringify(knocked.body));
    assert.equal((await state(alice, knockRoom, 'm.room.member', bob.userId)).body.membership, 'knock');
    const v6 = await create(alice, { room_version: '6' });
    assert.equal((await call('POST', `${C}/knock/${encodeURIComponent(v6)}`, { token: bob.accessToken, body: {} })).status, 403);
  });

  test('state: put, get, format=event with prev_content, same content makes no new event', async () => {
    const roomId = await create(alice, {});
    const first = await call('PUT', `${room(roomId)}/state/m.room.topic`, { token: alice.accessToken, body: { topic: 'one' } });
    const second = await call('PUT', `${room(roomId)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: 'two' } });
    assert.notEqual(first.body.event_id, second.body.event_id);
    const ev = await call('GET', `${room(roomId)}/state/m.room.topic?format=event`, { token: alice.accessToken });
    assert.equal(ev.body.content.topic, 'two');
    assert.equal(ev.body.unsigned.prev_content.topic, 'one');
    const again = await call('PUT', `${room(roomId)}/state/m.room.topic`, { token: alice.accessToken, body: { topic: 'two' } });
    assert.equal(again.body.event_id, second.body.event_id);
    const custom = await call('PUT', `${room(roomId)}/state/org.example.thing/${encodeURIComponent('some key')}`, { token: alice.accessToken, body: { a: 1 } });
    assert.equal(custom.status, 200);
    assert.deepEqual((await state(alice, roomId, 'org.example.thing', 'some key')).body, { a: 1 });
    const all = await call('GET', `${room(roomId)}/state`, { token: alice.accessToken });
    assert.ok(all.body.some((e: { type: string }) => e.type === 'm.room.create'));
    assert.equal(all.body.filter((e: { type: string }) => e.type === 'm.room.topic').length, 1);
    assert.equal((await state(bob, roomId, 'm.room.topic')).status, 403, 'non-members cannot read state');
  });

  test('redaction: own message, then permission checks; redacted content is gone', async () => {
    const roomId = await create(alice, { preset: 'public_chat' });
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    const mine = await send(bob, roomId, 'oops');
    const hers = await send(alice, roomId, 'keep');
    const r1 = await call('PUT', `${room(roomId)}/redact/${encodeURIComponent(mine)}/r1`, { token: bob.accessToken, body: { reason: 'typo' } });
    assert.equal(r1.status, 200);
    const ev = await call('GET', `${room(roomId)}/event/${encodeURIComponent(mine)}`, { token: alice.accessToken });
    assert.deepEqual(ev.body.content, {});
    assert.equal(ev.body.unsigned.redacted_because.event_id, r1.body.event_id);
    const denied = await call('PUT', `${room(roomId)}/redact/${encodeURIComponent(hers)}/r2`, { token: bob.accessToken, body: {} });
    assert.equal(denied.status, 403);
    assert.equal((await call('GET', `${room(roomId)}/event/${encodeURIComponent(hers)}`, { token: alice.accessToken })).body.content.body, 'keep');
    // The admin (creator) can redact anyone's.
    assert.equal((await call('PUT', `${room(roomId)}/redact/${encodeURIComponent(hers)}/r3`, { token: alice.accessToken, body: {} })).status, 200);
  });

  test('history visibility joined: a later member does not see earlier messages', async () => {
    const roomId = await create(alice, { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }] });
    await send(alice, roomId, 'before bob');
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    await send(alice, roomId, 'after bob');
    const msgs = await call('GET', `${room(roomId)}/messages?dir=b&limit=50`, { token: bob.accessToken });
    const bodies = msgs.body.chunk.filter((e: { type: string }) => e.type === 'm.room.message').map((e: { content: { body: string } }) => e.content.body);
    assert.deepEqual(bodies, ['after bob']);
    const shared = await create(alice, { preset: 'public_chat' });
    await send(alice, shared, 'old news');
    await call('POST', `${C}/join/${encodeURIComponent(shared)}`, { token: bob.accessToken });
    const m2 = await call('GET', `${room(shared)}/messages?dir=b&limit=50`, { token: bob.accessToken });
    assert.ok(m2.body.chunk.some((e: { content: { body?: string } }) => e.content.body === 'old news'), 'shared history is visible');
  });

  test('/messages paginates both ways with tokens; /context; /members; /joined_members', async () => {
    const roomId = await create(alice, { preset: 'public_chat' });
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await send(i % 2 ? bob : alice, roomId, `m${i}`));
    const page1 = await call('GET', `${room(roomId)}/messages?dir=b&limit=5`, { token: alice.accessToken });
    assert.deepEqual(page1.body.chunk.map((e: { content: { body: string } }) => e.content.body), ['m11', 'm10', 'm9', 'm8', 'm7']);
    const page2 = await call('GET', `${room(roomId)}/messages?dir=b&limit=5&from=${page1.body.end}`, { token: alice.accessToken });
    assert.deepEqual(page2.body.chunk.map((e: { content: { body: string } }) => e.content.body), ['m6', 'm5', 'm4', 'm3', 'm2']);
    const fwd = await call('GET', `${room(roomId)}/messages?dir=f&limit=3&from=${page2.body.end}`, { token: alice.accessToken });
    assert.deepEqual(fwd.body.chunk.map((e: { content: { body: string } }) => e.content.body), ['m2', 'm3', 'm4']);
    const filtered = await call('GET', `${room(roomId)}/messages?dir=b&limit=50&filter=${encodeURIComponent(JSON.stringify({ senders: [bob.userId], types: ['m.room.message'], lazy_load_members: true }))}`, { token: alice.accessToken });
    assert.equal(filtered.body.chunk.length, 6);
    assert.ok(filtered.body.chunk.every((e: { sender: string }) => e.sender === bob.userId));
    assert.deepEqual(filtered.body.state.map((e: { state_key: string }) => e.state_key), [bob.userId]);
    const ctx = await call('GET', `${room(roomId)}/context/${encodeURIComponent(ids[6]!)}?limit=4`, { token: alice.accessToken });
    assert.equal(ctx.body.event.content.body, 'm6');
    assert.deepEqual(ctx.body.events_before.map((e: { content: { body: string } }) => e.content.body), ['m5', 'm4']);
    assert.deepEqual(ctx.body.events_after.map((e: { content: { body: string } }) => e.content.body), ['m7', 'm8']);
    assert.ok(ctx.body.state.some((e: { type: string }) => e.type === 'm.room.create'));
    const members = await call('GET', `${room(roomId)}/members?membership=join`, { token: alice.accessToken });
    assert.deepEqual(members.body.chunk.map((e: { state_key: string }) => e.state_key).sort(), [alice.userId, bob.userId].sort());
    const joined = await call('GET', `${room(roomId)}/joined_members`, { token: bob.accessToken });
    assert.ok(joined.body.joined[alice.userId]);
    const rooms = await call('GET', `${C}/joined_rooms`, { token: bob.accessToken });
    assert.ok(rooms.body.joined_rooms.includes(roomId));
  });

  test('aliases and the room directory', async () => {
    const roomId = await create(alice, {});
    const alias = '#team-room:localhost';
    assert.equal((await call('PUT', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: alice.accessToken, body: { room_id: roomId } })).status, 200);
    const taken = await call('PUT', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: alice.accessToken, body: { room_id: roomId } });
    assert.equal(taken.status, 409);
    assert.deepEqual((await call('GET', `${C}/directory/room/${encodeURIComponent(alias)}`)).body, { room_id: roomId, servers: ['localhost'] });
    assert.deepEqual((await call('GET', `${room(roomId)}/aliases`, { token: alice.accessToken })).body, { aliases: [alias] });
    assert.equal((await call('DELETE', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: bob.accessToken })).status, 403);
    assert.equal((await call('DELETE', `${C}/directory/room/${encodeURIComponent(alias)}`, { token: alice.accessToken })).status, 200);
    assert.equal((await call('GET', `${C}/directory/room/${encodeURIComponent(alias)}`)).status, 404);
    assert.equal((await call('GET', `${C}/directory/list/room/${encodeURIComponent(roomId)}`)).body.visibility, 'private');
    assert.equal((await call('PUT', `${C}/directory/list/room/${encodeURIComponent(roomId)}`, { token: alice.accessToken, body: { visibility: 'public' } })).status, 200);
    assert.equal((await call('GET', `${C}/directory/list/room/${encodeURIComponent(roomId)}`)).body.visibility, 'public');
    const canonical = await call('PUT', `${room(roomId)}/state/m.room.canonical_alias`, { token: alice.accessToken, body: { alias: '#not-ours:localhost' } });
    assert.equal(canonical.status, 400);
    assert.equal(canonical.body.errcode, 'M_BAD_ALIAS');
  });

  test('transaction ids are scoped by endpoint, as Synapse does', async () => {
    const r1 = await create(alice, {});
    const r2 = await create(alice, {});
    const put = (path: string, body: unknown) => call('PUT', path, { token: alice.accessToken, body });
    const a = await put(`${room(r1)}/send/m.room.message/same`, { msgtype: 'm.text', body: 'one' });
    const b = await put(`${room(r2)}/send/m.room.message/same`, { msgtype: 'm.text', body: 'two' });
    const c = await put(`${room(r1)}/send/org.example.custom/same`, { x: 1 });
    const d = await put(`${room(r1)}/redact/${encodeURIComponent(a.body.event_id)}/same`, {});
    const again = await put(`${room(r1)}/send/m.room.message/same`, { msgtype: 'm.text', body: 'one' });
    assert.equal(new Set([a.body.event_id, b.body.event_id, c.body.event_id, d.body.event_id]).size, 4);
    assert.equal(again.body.event_id, a.body.event_id, 'a retry is still the same request');
    const ev = await call('GET', `${room(r2)}/event/${encodeURIComponent(b.body.event_id)}`, { token: alice.accessToken });
    assert.equal(ev.body.content.body, 'two');
    assert.equal(ev.body.unsigned.transaction_id, 'same', 'the client sees its own txn id');
  });
});
