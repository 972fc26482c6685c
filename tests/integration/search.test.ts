// Server-side search over raw HTTP: matching, ordering, paging, context, state, groups, history
// visibility, left rooms, redactions and bad requests.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('search', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let roomId: string;
  const ids: Record<string, string> = {};
  const { call, room, create, send } = roomApi(() => server.baseUrl);
  const search = async (who: Credentials, criteria: Record<string, unknown>, nextBatch?: string) => {
    const qs = nextBatch ? `?next_batch=${encodeURIComponent(nextBatch)}` : '';
    const res = await call('POST', `${C}/search${qs}`, { token: who.accessToken, body: { search_categories: { room_events: criteria } } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.search_categories.room_events;
  };
  const resultIds = (r: { results: Array<{ result: { event_id: string } }> }) => r.results.map((x) => x.result.event_id);

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
    roomId = await create(alice, { preset: 'private_chat', name: 'Planetary Defence', topic: 'Watching the skies' });
    ids.men = await send(alice, roomId, 'The chances of anything coming from Mars are a million to one, martians and men');
    ids.fox = await send(alice, roomId, 'the quick brown fox jumps over the lazy dog');
    ids.invasion = await send(alice, roomId, 'Martian invasion reported in Woking');
    ids.cylinder = await send(alice, roomId, 'A cylinder fell on Horsell Common');
  });
  after(() => server?.stop());

  test('finds words by prefix, case-insensitively, with rank, count and highlights', async () => {
    const r = await search(alice, { search_term: 'martian' });
    assert.deepEqual(new Set(resultIds(r)), new Set([ids.men, ids.invasion]));
    assert.equal(r.count, 2);
    for (const x of r.results) {
      assert.equal(typeof x.rank, 'number');
      assert.ok(x.rank > 0);
      assert.equal(x.result.room_id, roomId);
      assert.equal(x.result.type, 'm.room.message');
      assert.equal(x.context, undefined, 'no context unless asked');
    }
    assert.deepEqual(new Set(r.highlights), new Set(['martians', 'Martian']));
    assert.equal(r.next_batch, undefined);
    const none = await search(alice, { search_term: 'zeppelin' });
    assert.deepEqual(none.results, []);
    assert.equal(none.count, 0);
  });

  test('phrases, or and negation', async () => {
    assert.deepEqual(resultIds(await search(alice, { search_term: '"quick brown"' })), [ids.fox]);
    assert.deepEqual(resultIds(await search(alice, { search_term: '"brown quick"' })), []);
    assert.deepEqual(new Set(resultIds(await search(alice, { search_term: 'fox or cylinder' }))), new Set([ids.fox, ids.cylinder]));
    assert.deepEqual(resultIds(await search(alice, { search_term: 'martian -woking' })), [ids.men]);
    assert.deepEqual(resultIds(await search(alice, { search_term: 'martian woking' })), [ids.invasion]);
  });

  test('keys choose what is searched: room names and topics too', async () => {
    const byName = await search(alice, { search_term: 'planetary' });
    assert.equal(byName.results.length, 1);
    assert.equal(byName.results[0].result.type, 'm.room.name');
    assert.deepEqual((await search(alice, { search_term: 'planetary', keys: ['content.body'] })).results, []);
    const byTopic = await search(alice, { search_term: 'skies', keys: ['content.topic'] });
    assert.equal(byTopic.results[0].result.type, 'm.room.topic');
  });

  test('recent order pages through everything with next_batch, newest first', async () => {
    const seen: string[] = [];
    let next: string | undefined;
    let pages = 0;
    do {
      const r = await search(alice, { search_term: 'the', keys: ['content.body'], order_by: 'recent', filter: { limit: 1 } }, next);
      assert.ok(r.results.length <= 1);
      seen.push(...resultIds(r));
      next = r.next_batch;
      pages++;
    } while (next && pages < 10);
    assert.deepEqual(seen, [ids.fox, ids.men], 'newest first, each once');
  });

  test('rank order pages too, and the filter applies', async () => {
    const first = await search(alice, { search_term: 'martian', filter: { limit: 1 } });
    assert.equal(first.results.length, 1);
    assert.ok(first.next_batch);
    const second = await search(alice, { search_term: 'martian', filter: { limit: 1 } }, first.next_batch);
    assert.equal(second.results.length, 1);
    assert.notEqual(second.results[0].result.event_id, first.results[0].result.event_id);
    assert.ok(second.results[0].rank <= first.results[0].rank);
    assert.deepEqual((await search(alice, { search_term: 'martian', filter: { senders: [bob.userId] } })).results, []);
    assert.deepEqual((await search(alice, { search_term: 'martian', filter: { not_rooms: [roomId] } })).results, []);
    assert.deepEqual((await search(alice, { search_term: 'martian', filter: { types: ['m.room.topic'] } })).results, []);
  });

  test('a group next_batch keeps paging inside its room, in either ordering', async () => {
    const other = await create(alice, { preset: 'private_chat' });
    const o1 = await send(alice, other, 'martian tripods advancing');
    const o2 = await send(alice, other, 'more martian tripods');
    for (const order_by of ['rank', 'recent']) {
      const criteria = { search_term: 'martian', order_by, filter: { limit: 1 }, groupings: { group_by: [{ key: 'room_id' }] } };
      const first = await search(alice, criteria);
      assert.equal(first.results.length, 1);
      const seen = new Map<string, string[]>([[roomId, []], [other, []]]);
      seen.get(first.results[0].result.room_id)!.push(first.results[0].result.event_id);
      const groupRoom = first.results[0].result.room_id as string;
      let next: string | undefined = first.groups.room_id[groupRoom].next_batch;
      assert.ok(next, order_by);
      for (let i = 0; next && i < 10; i++) {
        const page = await search(alice, criteria, next);
        for (const x of page.results) {
          assert.equal(x.result.room_id, groupRoom, `${order_by}: stays in the group's room`);
          seen.get(groupRoom)!.push(x.result.event_id);
        }
        next = page.next_batch;
      }
      const expected = groupRoom === other ? [o1, o2] : [ids.men, ids.invasion];
      assert.deepEqual(new Set(seen.get(groupRoom)), new Set(expected), order_by);
      assert.equal(seen.get(groupRoom)!.length, 2, `${order_by}: each once`);
    }
    const mixed = await search(alice, { search_term: 'martian', order_by: 'rank', filter: { limit: 1 } });
    const wrong = await call('POST', `${C}/search?next_batch=${encodeURIComponent(mixed.next_batch)}`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: 'martian', order_by: 'recent' } } } });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.errcode, 'M_INVALID_PARAM');
    await call('POST', `${room(other)}/leave`, { token: alice.accessToken });
    await call('POST', `${room(other)}/forget`, { token: alice.accessToken });
  });

  test('event context, profiles, current state and groups', async () => {
    const r = await search(alice, {
      search_term: 'quick',
      event_context: { before_limit: 1, after_limit: 1, include_profile: true },
      include_state: true,
      groupings: { group_by: [{ key: 'room_id' }, { key: 'sender' }] },
    });
    assert.equal(r.results.length, 1);
    const ctx = r.results[0].context;
    assert.deepEqual(ctx.events_before.map((e: { event_id: string }) => e.event_id), [ids.men]);
    assert.deepEqual(ctx.events_after.map((e: { event_id: string }) => e.event_id), [ids.invasion]);
    assert.equal(typeof ctx.start, 'string');
    assert.equal(typeof ctx.end, 'string');
    assert.ok(alice.userId in ctx.profile_info);
    // The tokens work with /messages: paging back from end starts at the context's last event.
    const back = await call('GET', `${room(roomId)}/messages?dir=b&limit=1&from=${encodeURIComponent(ctx.end)}`, { token: alice.accessToken });
    assert.equal(back.body.chunk[0].event_id, ids.invasion);
    const fwd = await call('GET', `${room(roomId)}/messages?dir=f&limit=1&from=${encodeURIComponent(ctx.start)}`, { token: alice.accessToken });
    assert.equal(fwd.body.chunk[0].event_id, ids.men);
    const state = r.state[roomId] as Array<{ type: string }>;
    assert.ok(state.some((e) => e.type === 'm.room.create'));
    assert.deepEqual(r.groups.room_id[roomId].results, [ids.fox]);
    assert.deepEqual(r.groups.sender[alice.userId].results, [ids.fox]);
  });

  test('only rooms the user is in, up to leaving, and only what history visibility allows', async () => {
    assert.deepEqual((await search(bob, { search_term: 'martian' })).results, [], 'not in the room');
    const joinedOnly = await create(alice, { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }] });
    const early = await send(alice, joinedOnly, 'aardvark before bob');
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(joinedOnly)}`, { token: bob.accessToken })).status, 200);
    const during = await send(alice, joinedOnly, 'aardvark while bob is here');
    assert.equal((await call('POST', `${room(joinedOnly)}/leave`, { token: bob.accessToken })).status, 200);
    await send(alice, joinedOnly, 'aardvark after bob left');
    assert.deepEqual(resultIds(await search(bob, { search_term: 'aardvark' })), [during]);
    assert.equal((await search(alice, { search_term: 'aardvark' })).results.length, 3);
    assert.ok(resultIds(await search(alice, { search_term: 'aardvark' })).includes(early));
  });

  test('redacted events are not found', async () => {
    const rid = await create(alice, { preset: 'private_chat' });
    const ev = await send(alice, rid, 'ephemeral xylophone');
    assert.equal((await search(alice, { search_term: 'xylophone' })).results.length, 1);
    assert.equal((await call('PUT', `${room(rid)}/redact/${encodeURIComponent(ev)}/${Math.random()}`, { token: alice.accessToken, body: {} })).status, 200);
    assert.deepEqual((await search(alice, { search_term: 'xylophone' })).results, []);
  });

  test('no room_events category asks for nothing', async () => {
    const res = await call('POST', `${C}/search`, { token: alice.accessToken, body: { search_categories: {} } });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { search_categories: {} });
  });

  test('bad requests', async () => {
    const cases: Array<[unknown, string, string]> = [
      [{}, '', 'M_MISSING_PARAM'],
      [{ search_categories: { room_events: {} } }, '', 'M_MISSING_PARAM'],
      [{ search_categories: { room_events: { search_term: 5 } } }, '', 'M_BAD_JSON'],
      [{ search_categories: { room_events: { search_term: 'x', order_by: 'relevance' } } }, '', 'M_BAD_JSON'],
      [{ search_categories: { room_events: { search_term: 'x', keys: ['content.url'] } } }, '', 'M_BAD_JSON'],
      [{ search_categories: { room_events: { search_term: 'x', groupings: { group_by: [{ key: 'type' }] } } } }, '', 'M_BAD_JSON'],
      [{ search_categories: { room_events: { search_term: 'x', event_context: { before_limit: -1 } } } }, '', 'M_BAD_JSON'],
      [{ search_categories: { room_events: { search_term: 'x' } } }, '?next_batch=bogus', 'M_INVALID_PARAM'],
    ];
    for (const [body, qs, errcode] of cases) {
      const res = await call('POST', `${C}/search${qs}`, { token: alice.accessToken, body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.errcode, errcode, JSON.stringify(body));
    }
    assert.equal((await call('POST', `${C}/search`, { body: { search_categories: {} } })).status, 401);
  });
});
