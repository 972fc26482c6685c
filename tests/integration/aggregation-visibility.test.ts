// Bundled aggregations (unsigned.m.relations) follow history visibility too: an event the user may
// see must not carry, as its thread summary or its latest edit, an event the user may not see.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

describe('bundled aggregations respect history visibility', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let roomId: string;
  let root: string;
  let reply: string;
  const { call, room, create, send } = roomApi(() => server.baseUrl);
  const relation = (who: Credentials, content: Record<string, unknown>) =>
    call('PUT', `${room(roomId)}/send/m.room.message/${Math.random()}`, { token: who.accessToken, body: content });

  before(async () => {
    server = await startServer();
    [alice, bob] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl)]);
    roomId = await create(alice, { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'joined' } }] });
    assert.equal((await call('POST', `${room(roomId)}/join`, { token: bob.accessToken, body: {} })).status, 200);
    root = await send(alice, roomId, 'the root, seen by bob');
    const visibleReply = await relation(alice, { msgtype: 'm.text', body: 'a reply bob saw', 'm.relates_to': { rel_type: 'm.thread', event_id: root } });
    assert.equal(visibleReply.status, 200);
    assert.equal((await call('POST', `${room(roomId)}/leave`, { token: bob.accessToken, body: {} })).status, 200);
    // After bob left, in a `joined` room: neither of these is bob's to read.
    const secret = await relation(alice, { msgtype: 'm.text', body: 'a reply after bob left', 'm.relates_to': { rel_type: 'm.thread', event_id: root } });
    assert.equal(secret.status, 200);
    reply = secret.body.event_id;
    const edit = await relation(alice, { msgtype: 'm.text', body: '* edited', 'm.new_content': { msgtype: 'm.text', body: 'edited after bob left' }, 'm.relates_to': { rel_type: 'm.replace', event_id: root } });
    assert.equal(edit.status, 200);
  });
  after(() => server?.stop());

  test('a member who left sees the thread as it was while joined, and no later edit', async () => {
    const res = await call('GET', `${room(roomId)}/event/${encodeURIComponent(root)}`, { token: bob.accessToken });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const rel = res.body.unsigned?.['m.relations'] ?? {};
    assert.equal(rel['m.thread']?.count, 1, JSON.stringify(rel));
    assert.notEqual(rel['m.thread']?.latest_event?.event_id, reply);
    assert.equal(rel['m.thread']?.latest_event?.content?.body, 'a reply bob saw');
    assert.equal(rel['m.replace'], undefined, 'an edit made after leaving is not bundled');
    assert.doesNotMatch(JSON.stringify(res.body), /after bob left/);
  });

  test('the same through /messages and /context', async () => {
    const messages = await call('GET', `${room(roomId)}/messages?dir=b&limit=50`, { token: bob.accessToken });
    assert.equal(messages.status, 200);
    assert.doesNotMatch(JSON.stringify(messages.body), /after bob left/);
    const context = await call('GET', `${room(roomId)}/context/${encodeURIComponent(root)}`, { token: bob.accessToken });
    assert.equal(context.status, 200);
    assert.doesNotMatch(JSON.stringify(context.body), /after bob left/);
  });

  test('a joined member still gets the whole aggregation', async () => {
    const res = await call('GET', `${room(roomId)}/event/${encodeURIComponent(root)}`, { token: alice.accessToken });
    const rel = res.body.unsigned?.['m.relations'];
    assert.equal(rel['m.thread'].count, 2);
    assert.equal(rel['m.thread'].latest_event.event_id, reply);
    assert.equal(rel['m.replace'].content['m.new_content'].body, 'edited after bob left');
  });
});
