// The published room directory and room summaries over raw HTTP: which rooms are listed, their
// fields, ordering, paging both ways, filters, access rules and bad requests.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const V1 = '/_matrix/client/v1';

describe('room directory', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let carol: Credentials;
  const rooms: Record<string, string> = {};
  const { call, create } = roomApi(() => server.baseUrl);
  const join = async (who: Credentials, rid: string) => assert.equal((await call('POST', `${C}/join/${encodeURIComponent(rid)}`, { token: who.accessToken })).status, 200);
  const listed = async (qs = '') => {
    const res = await call('GET', `${C}/publicRooms${qs}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const ids = (b: { chunk: Array<{ room_id: string }> }) => b.chunk.map((r) => r.room_id);

  before(async () => {
    // No auto-created global room: the directory holds exactly the rooms made here.
    server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } });
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
    carol = await registerUser(server.baseUrl);
    rooms.big = await create(alice, {
      visibility: 'public', preset: 'public_chat', name: 'Big Room', topic: 'Lots of people', room_alias_name: 'big',
      initial_state: [{ type: 'm.room.avatar', content: { url: 'mxc://localhost/avatar' } }],
    });
    await join(bob, rooms.big);
    await join(carol, rooms.big);
    rooms.medium = await create(alice, { visibility: 'public', preset: 'public_chat', name: 'Medium', topic: 'cheese and wine' });
    await join(bob, rooms.medium);
    rooms.space = await create(alice, { visibility: 'public', preset: 'public_chat', name: 'A Space', creation_content: { type: 'm.space' } });
    rooms.readable = await create(bob, {
      visibility: 'public', preset: 'private_chat', name: 'Readable',
      initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'world_readable' } }],
    });
    rooms.invite = await create(bob, { visibility: 'public', preset: 'private_chat', name: 'Invite only' });
    rooms.unpublished = await create(alice, { preset: 'public_chat', name: 'Unlisted' });
    rooms.empty = await create(carol, { visibility: 'public', preset: 'public_chat', name: 'Abandoned' });
    assert.equal((await call('POST', `${C}/rooms/${encodeURIComponent(rooms.empty)}/leave`, { token: carol.accessToken })).status, 200);
  });
  after(() => server?.stop());

  test('lists published rooms anyone may join or read, largest first, with their details', async () => {
    const b = await listed();
    const expected = [rooms.big, rooms.medium];
    const ones = [rooms.space, rooms.readable].sort().reverse();
    assert.deepEqual(ids(b), [...expected, ...ones]);
    assert.equal(b.total_room_count_estimate, 4);
    assert.equal(b.next_batch, undefined);
    assert.equal(b.prev_batch, undefined);
    assert.deepEqual(b.chunk[0], {
      room_id: rooms.big, name: 'Big Room', topic: 'Lots of people', canonical_alias: '#big:localhost', num_joined_members: 3,
      avatar_url: 'mxc://localhost/avatar', world_readable: false, guest_can_join: false, join_rule: 'public',
    });
    const space = b.chunk.find((r: { room_id: string }) => r.room_id === rooms.space);
    assert.equal(space.room_type, 'm.space');
    const readable = b.chunk.find((r: { room_id: string }) => r.room_id === rooms.readable);
    assert.equal(readable.world_readable, true);
    assert.equal(readable.join_rule, 'invite');
    assert.equal(readable.guest_can_join, true);
  });

  test('publishing and unpublishing changes the listing', async () => {
    assert.equal((await call('PUT', `${C}/directory/list/room/${encodeURIComponent(rooms.unpublished)}`, { token: alice.accessToken, body: { visibility: 'public' } })).status, 200);
    assert.ok(ids(await listed()).includes(rooms.unpublished));
    assert.equal((await call('PUT', `${C}/directory/list/room/${encodeURIComponent(rooms.unpublished)}`, { token: alice.accessToken, body: { visibility: 'private' } })).status, 200);
    assert.ok(!ids(await listed()).includes(rooms.unpublished));
  });

  test('pages forward with next_batch and back with prev_batch', async () => {
    const all = ids(await listed());
    const forward: string[] = [];
    const tokens: Array<string | undefined> = [undefined];
    let page = await listed('?limit=1');
    assert.equal(page.prev_batch, undefined);
    for (;;) {
      forward.push(...ids(page));
      if (!page.next_batch) break;
      tokens.push(page.next_batch);
      page = await listed(`?limit=1&since=${encodeURIComponent(page.next_batch)}`);
      assert.ok(page.prev_batch);
    }
    assert.deepEqual(forward, all);
    // From the last page, prev_batch walks back to the start.
    const backward: string[] = [...ids(page)];
    while (page.prev_batch) {
      page = await listed(`?limit=1&since=${encodeURIComponent(page.prev_batch)}`);
      backward.unshift(...ids(page));
      assert.ok(page.next_batch);
    }
    assert.deepEqual(backward, all);
    const two = await listed('?limit=2');
    assert.deepEqual(ids(two), all.slice(0, 2));
    const rest = await listed(`?limit=2&since=${encodeURIComponent(two.next_batch)}`);
    assert.deepEqual(ids(rest), all.slice(2, 4));
  });

  test('POST filters by search term and room type', async () => {
    const post = async (body: Record<string, unknown>) => {
      const res = await call('POST', `${C}/publicRooms`, { token: bob.accessToken, body });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };
    assert.deepEqual(ids(await post({ filter: { generic_search_term: 'CHEESE' } })), [rooms.medium]);
    assert.deepEqual(ids(await post({ filter: { generic_search_term: '#big:' } })), [rooms.big]);
    assert.deepEqual(ids(await post({ filter: { room_types: ['m.space'] } })), [rooms.space]);
    const plain = await post({ filter: { room_types: [null] } });
    assert.ok(!ids(plain).includes(rooms.space));
    assert.equal(plain.total_room_count_estimate, 3);
    assert.deepEqual(ids(await post({ limit: 1 })), [rooms.big]);
    assert.deepEqual(ids(await post({ include_all_networks: true })).length, 4);
    const bridged = await post({ third_party_instance_id: 'irc|freenode' });
    assert.deepEqual(bridged.chunk, []);
  });

  test('bad requests', async () => {
    const get = [
      ['?limit=abc', 400, 'M_INVALID_PARAM'],
      ['?limit=-1', 400, 'M_INVALID_PARAM'],
      ['?since=bogus', 400, 'M_INVALID_PARAM'],
      ['?server=bad%20name', 400, 'M_INVALID_PARAM'],
      ['?server=elsewhere.example', 502, 'M_UNKNOWN'],
    ] as const;
    for (const [qs, status, errcode] of get) {
      const res = await call('GET', `${C}/publicRooms${qs}`);
      assert.equal(res.status, status, qs);
      assert.equal(res.body.errcode, errcode, qs);
    }
    assert.equal((await call('POST', `${C}/publicRooms`, { body: {} })).status, 401);
    const post = [
      [{ limit: 'ten' }, 'M_BAD_JSON'],
      [{ filter: { room_types: [1] } }, 'M_BAD_JSON'],
      [{ include_all_networks: true, third_party_instance_id: 'irc|freenode' }, 'M_INVALID_PARAM'],
      [{ third_party_instance_id: 'irc' }, 'M_INVALID_PARAM'],
    ] as const;
    for (const [body, errcode] of post) {
      const res = await call('POST', `${C}/publicRooms`, { token: bob.accessToken, body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.errcode, errcode, JSON.stringify(body));
    }
  });

  test('room summaries: public to anyone, private to members only', async () => {
    const summary = (id: string, who?: Credentials) => call('GET', `${V1}/room_summary/${encodeURIComponent(id)}`, { token: who?.accessToken });
    const anon = await summary(rooms.big);
    assert.equal(anon.status, 200, JSON.stringify(anon.body));
    assert.equal(anon.body.name, 'Big Room');
    assert.equal(anon.body.num_joined_members, 3);
    assert.equal(anon.body.room_version, '10');
    assert.equal(anon.body.membership, undefined);
    const byAlias = await summary('#big:localhost', carol);
    assert.equal(byAlias.body.room_id, rooms.big);
    assert.equal(byAlias.body.membership, 'join');

    const secret = await create(alice, { preset: 'private_chat', name: 'Secret', initial_state: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    const mine = await summary(secret, alice);
    assert.equal(mine.status, 200);
    assert.equal(mine.body.encryption, 'm.megolm.v1.aes-sha2');
    assert.equal(mine.body.membership, 'join');
    assert.equal(mine.body.join_rule, 'invite');
    for (const who of [undefined, carol]) {
      const res = await summary(secret, who);
      assert.equal(res.status, 404);
      assert.equal(res.body.errcode, 'M_NOT_FOUND');
    }
    assert.equal((await call('POST', `${C}/rooms/${encodeURIComponent(secret)}/invite`, { token: alice.accessToken, body: { user_id: carol.userId } })).status, 200);
    assert.equal((await summary(secret, carol)).body.membership, 'invite');
    // Another room's members may see a restricted room that lets them in.
    const restricted = await create(alice, {
      room_version: '10', preset: 'private_chat', name: 'Members of Big',
      initial_state: [{ type: 'm.room.join_rules', content: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: rooms.big }] } }],
    });
    const viaBig = await summary(restricted, bob);
    assert.equal(viaBig.status, 200);
    assert.deepEqual(viaBig.body.allowed_room_ids, [rooms.big]);
    assert.equal(viaBig.body.membership, 'leave');
    assert.equal((await summary(restricted)).status, 404);

    assert.equal((await summary('!unknown:localhost', alice)).status, 404);
    assert.equal((await summary('#unknown:localhost', alice)).status, 404);
    const bad = await summary('not-a-room', alice);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, 'M_INVALID_PARAM');
  });
});
