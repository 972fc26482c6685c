// Relations and threads over raw HTTP (client-server v1): children of an event by type, paging in
// both directions, recursion, access, and the thread list with participation and paging.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const V1 = '/_matrix/client/v1';

describe('relations and threads', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let carol: Credentials;
  let roomId: string;
  let root: string;
  const ev: Record<string, string> = {};
  const { call, room } = roomApi(() => server.baseUrl);
  const rel = (rid: string, id: string, rest = '') => `${V1}/rooms/${encodeURIComponent(rid)}/relations/${encodeURIComponent(id)}${rest}`;
  const send = async (who: Credentials, rid: string, type: string, content: Record<string, unknown>) => {
    const res = await call('PUT', `${room(rid)}/send/${type}/${Math.random()}`, { token: who.accessToken, body: content });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.event_id as string;
  };
  const thread = (rootId: string, body: string) => ({ msgtype: 'm.text', body, 'm.relates_to': { rel_type: 'm.thread', event_id: rootId } });
  const get = async (who: Credentials, path: string) => {
    const res = await call('GET', path, { token: who.accessToken });
    assert.equal(res.status, 200, `${path}: ${JSON.stringify(res.body)}`);
    return res.body;
  };
  const chunkIds = (b: { chunk: Array<{ event_id: string }> }) => b.chunk.map((e) => e.event_id);

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
    carol = await registerUser(server.baseUrl);
    const res = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } });
    roomId = res.body.room_id;
    await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    root = await send(alice, roomId, 'm.room.message', { msgtype: 'm.text', body: 'root' });
    ev.t1 = await send(alice, roomId, 'm.room.message', thread(root, 'one'));
    ev.r1 = await send(bob, roomId, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: root, key: '👍' } });
    ev.t2 = await send(bob, roomId, 'm.room.message', thread(root, 'two'));
    ev.edit = await send(alice, roomId, 'm.room.message', { msgtype: 'm.text', body: '* root!', 'm.new_content': { msgtype: 'm.text', body: 'root!' }, 'm.relates_to': { rel_type: 'm.replace', event_id: root } });
    ev.t3 = await send(alice, roomId, 'm.room.message', thread(root, 'three'));
    ev.deep = await send(bob, roomId, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: ev.t1, key: '🎉' } });
  });
  after(() => server?.stop());

  test('all children newest first, filtered by relation type and event type', async () => {
    const all = await get(alice, rel(roomId, root));
    assert.deepEqual(chunkIds(all), [ev.t3, ev.edit, ev.t2, ev.r1, ev.t1]);
    assert.equal(all.next_batch, undefined);
    assert.equal(all.prev_batch, undefined);
    assert.equal(all.recursion_depth, undefined);
    assert.equal(all.chunk[0].room_id, roomId);
    assert.deepEqual(chunkIds(await get(alice, rel(roomId, root, '/m.thread'))), [ev.t3, ev.t2, ev.t1]);
    assert.deepEqual(chunkIds(await get(alice, rel(roomId, root, '/m.annotation/m.reaction'))), [ev.r1]);
    assert.deepEqual(chunkIds(await get(alice, rel(roomId, root, '/m.annotation/m.room.message'))), []);
    assert.deepEqual(chunkIds(await get(alice, rel(roomId, root, '/org.example.none'))), []);
    assert.deepEqual(chunkIds(await get(alice, `${rel(roomId, root)}?dir=f`)), [ev.t1, ev.r1, ev.t2, ev.edit, ev.t3]);
  });

  test('paging with next_batch, prev_batch and to, both directions', async () => {
    const p1 = await get(alice, `${rel(roomId, root)}?limit=2`);
    assert.deepEqual(chunkIds(p1), [ev.t3, ev.edit]);
    assert.ok(p1.next_batch);
    const p2 = await get(alice, `${rel(roomId, root)}?limit=2&from=${encodeURIComponent(p1.next_batch)}`);
    assert.deepEqual(chunkIds(p2), [ev.t2, ev.r1]);
    assert.equal(p2.prev_batch, p1.next_batch);
    const p3 = await get(alice, `${rel(roomId, root)}?limit=2&from=${encodeURIComponent(p2.next_batch)}`);
    assert.deepEqual(chunkIds(p3), [ev.t1]);
    assert.equal(p3.next_batch, undefined);
    // from page 1, to page 2: the range between them.
    const range = await get(alice, `${rel(roomId, root)}?from=${encodeURIComponent(p1.next_batch)}&to=${encodeURIComponent(p2.next_batch)}`);
    assert.deepEqual(chunkIds(range), [ev.t2, ev.r1]);
    const f1 = await get(alice, `${rel(roomId, root)}?dir=f&limit=3`);
    assert.deepEqual(chunkIds(f1), [ev.t1, ev.r1, ev.t2]);
    const f2 = await get(alice, `${rel(roomId, root)}?dir=f&limit=3&from=${encodeURIComponent(f1.next_batch)}`);
    assert.deepEqual(chunkIds(f2), [ev.edit, ev.t3]);
  });

  test('recurse follows relations of relations', async () => {
    const deep = await get(alice, `${rel(roomId, root, '/m.annotation')}?recurse=true`);
    assert.deepEqual(chunkIds(deep), [ev.deep, ev.r1]);
    assert.equal(deep.recursion_depth, 3);
    const flat = await get(alice, `${rel(roomId, root, '/m.annotation')}?recurse=false`);
    assert.deepEqual(chunkIds(flat), [ev.r1]);
    assert.equal(flat.recursion_depth, 1);
  });

  test('redacted children no longer relate', async () => {
    const rid = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
    const parent = await send(alice, rid, 'm.room.message', { msgtype: 'm.text', body: 'p' });
    const child = await send(alice, rid, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: parent, key: 'x' } });
    assert.deepEqual(chunkIds(await get(alice, rel(rid, parent))), [child]);
    await call('PUT', `${room(rid)}/redact/${encodeURIComponent(child)}/${Math.random()}`, { token: alice.accessToken, body: {} });
    assert.deepEqual(chunkIds(await get(alice, rel(rid, parent))), []);
  });

  test('unknown, foreign and invisible parents are 404; bad parameters are 400', async () => {
    const notFound = [
      [alice, rel(roomId, '$nope')],
      [carol, rel(roomId, root)],
      [alice, rel('!unknown:localhost', root)],
    ] as const;
    for (const [who, path] of notFound) {
      const res = await call('GET', path, { token: who.accessToken });
      assert.equal(res.status, 404, path);
      assert.equal(res.body.errcode, 'M_NOT_FOUND');
    }
    const other = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
    assert.equal((await call('GET', rel(other, root), { token: alice.accessToken })).status, 404, 'event of another room');
    for (const qs of ['dir=x', 'limit=-1', 'limit=abc', 'from=garbage', 'to=garbage', 'recurse=yes']) {
      const res = await call('GET', `${rel(roomId, root)}?${qs}`, { token: alice.accessToken });
      assert.equal(res.status, 400, qs);
      assert.equal(res.body.errcode, 'M_INVALID_PARAM', qs);
    }
    assert.equal((await call('GET', rel(roomId, root))).status, 401);
    assert.equal((await call('GET', `${C}/rooms/${encodeURIComponent(roomId)}/relations/${encodeURIComponent(root)}`, { token: alice.accessToken })).status, 404, 'v1 only');
  });

  test('threads: roots ordered by latest reply, participation, paging, bundled aggregations', async () => {
    const rid = (await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { preset: 'public_chat' } })).body.room_id;
    await call('POST', `${C}/join/${encodeURIComponent(rid)}`, { token: bob.accessToken });
    const a = await send(alice, rid, 'm.room.message', { msgtype: 'm.text', body: 'thread A' });
    const b = await send(bob, rid, 'm.room.message', { msgtype: 'm.text', body: 'thread B' });
    const c = await send(alice, rid, 'm.room.message', { msgtype: 'm.text', body: 'thread C' });
    await send(alice, rid, 'm.room.message', thread(a, 'a1'));
    await send(alice, rid, 'm.room.message', thread(c, 'c1'));
    await send(alice, rid, 'm.room.message', thread(b, 'b1'));
    await send(bob, rid, 'm.room.message', thread(a, 'a2'));
    const threads = `${V1}/rooms/${encodeURIComponent(rid)}/threads`;

    const all = await get(alice, threads);
    assert.deepEqual(chunkIds(all), [a, b, c]);
    assert.equal(all.next_batch, undefined);
    const agg = all.chunk[0].unsigned['m.relations']['m.thread'];
    assert.equal(agg.count, 2);
    assert.equal(agg.latest_event.content.body, 'a2');

    // Bob started B and replied in A; he never touched C.
    assert.deepEqual(chunkIds(await get(bob, `${threads}?include=participated`)), [a, b]);
    assert.deepEqual(chunkIds(await get(alice, `${threads}?include=participated`)), [a, b, c]);

    const p1 = await get(alice, `${threads}?limit=2`);
    assert.deepEqual(chunkIds(p1), [a, b]);
    assert.ok(p1.next_batch);
    const p2 = await get(alice, `${threads}?limit=2&from=${encodeURIComponent(p1.next_batch)}`);
    assert.deepEqual(chunkIds(p2), [c]);
    assert.equal(p2.next_batch, undefined);

    const outsider = await call('GET', threads, { token: carol.accessToken });
    assert.equal(outsider.status, 403);
    assert.equal(outsider.body.errcode, 'M_FORBIDDEN');
    for (const qs of ['include=some', 'limit=0', 'limit=x', 'from=nonsense']) {
      const res = await call('GET', `${threads}?${qs}`, { token: alice.accessToken });
      assert.equal(res.status, 400, qs);
      assert.equal(res.body.errcode, 'M_INVALID_PARAM', qs);
    }
  });
});
