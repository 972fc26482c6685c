// Fan-out: many long-polls woken by one send share one read of the room (the recent-events cache),
// and what each gets is still its own: its transaction ids, what history visibility lets it see,
// redactions made after the events were cached.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const LISTENERS = 50;

describe('sync fan-out', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  const { call, room, create, send } = roomApi(() => server.baseUrl);
  const sync = async (who: Credentials, query = '') => {
    const res = await call('GET', `${C}/sync?${query}`, { token: who.accessToken });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const timeline = (body: any, roomId: string): any[] => body.rooms?.join?.[roomId]?.timeline?.events ?? [];
  const bodies = (body: any, roomId: string) => timeline(body, roomId).filter((e) => e.type === 'm.room.message').map((e) => e.content.body);
  /** Database reads of room events the cache made so far (SYNC_CACHE_TRACE lines). */
  const eventReads = () => server.logs().split('\n').filter((l) => l.startsWith('sync-cache read events')).length;
  const registerMany = async (n: number) => {
    const out: Credentials[] = [];
    for (let i = 0; i < n; i += 10) out.push(...(await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => registerUser(server.baseUrl)))));
    return out;
  };
  const join = async (who: Credentials, roomId: string) => {
    const res = await call('POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: who.accessToken, body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };

  before(async () => {
    // Presence off: a presence change would answer the long-polls this file counts.
    server = await startServer({ env: { SYNC_CACHE_TRACE: '1', PRESENCE: 'off' } });
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test(`${LISTENERS} long-polls get one send exactly once, with one shared read of the room`, async () => {
    const roomId = await create(alice, { preset: 'public_chat' });
    const members = await registerMany(LISTENERS - 1);
    for (const m of members) await join(m, roomId);
    const listeners = [alice, ...members];
    const since = await Promise.all(listeners.map(async (u) => (await sync(u, 'timeout=0')).next_batch as string));
    // Everyone waits; the notifier knows nothing happened, so waiting reads nothing.
    const polls = listeners.map((u, i) => sync(u, `since=${encodeURIComponent(since[i]!)}&timeout=20000`));
    await new Promise((r) => setTimeout(r, 300));
    const readsBefore = eventReads();
    const txn = `fanout-${Date.now()}`;
    const sent = await call('PUT', `${room(roomId)}/send/m.room.message/${txn}`, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'to everyone' } });
    assert.equal(sent.status, 200);
    const eventId = sent.body.event_id as string;
    const results = await Promise.all(polls);
    results.forEach((res, i) => {
      const got = timeline(res, roomId).filter((e) => e.event_id === eventId);
      assert.equal(got.length, 1, `listener ${i} gets the event exactly once`);
      assert.equal(got[0].content.body, 'to everyone');
      if (i === 0) assert.equal(got[0].unsigned.transaction_id, txn, 'the sender sees its transaction id');
      else assert.equal(got[0].unsigned?.transaction_id, undefined, `listener ${i} does not see the sender's transaction id`);
    });
    // Each sync reading on its own would make one read per listener. With one worker, the engine
    // hands the cache what it wrote, so none may be needed at all; the trace counts (the syncs
    // before the send read the room).
    const reads = eventReads() - readsBefore;
    assert.ok(readsBefore >= 1, 'the trace counts reads');
    assert.ok(reads <= 3, `${LISTENERS} woken syncs read the room's new events ${reads} times`);
    // And the next incremental sync of each is empty of it (no duplicate).
    const again = await Promise.all(listeners.slice(0, 5).map((u, i) => sync(u, `since=${encodeURIComponent(results[i]!.next_batch)}&timeout=0`)));
    for (const res of again) assert.equal(timeline(res, roomId).filter((e) => e.event_id === eventId).length, 0);
  });

  test('sends racing in several rooms reach every long-poll chain once, in order, with no gap (the engine feeds the cache what it writes)', async () => {
    const members = await registerMany(3);
    const rooms = [await create(alice, { preset: 'public_chat' }), await create(alice, { preset: 'public_chat' })];
    for (const r of rooms) for (const m of members) await join(m, r);
    const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
    const PER_SENDER = 25;
    const senders = [alice, ...members];
    let sending = true;
    // Each member follows its /sync chain while the sends race (a long-poll woken per batch).
    const follow = async (who: Credentials) => {
      const got = new Map<string, string[]>(rooms.map((r) => [r, []]));
      let since = (await sync(who, `filter=${filter}&timeout=0`)).next_batch as string;
      for (let quietRounds = 0; quietRounds < 2;) {
        const res = await sync(who, `filter=${filter}&timeout=${sending ? 5000 : 300}&since=${encodeURIComponent(since)}`);
        since = res.next_batch;
        let any = false;
        for (const r of rooms) {
          assert.notEqual(res.rooms?.join?.[r]?.timeline?.limited, true, 'no gap in the chain');
          const b = bodies(res, r);
          got.get(r)!.push(...b);
          any ||= b.length > 0;
        }
        if (!sending && !any) quietRounds++;
      }
      return got;
    };
    const chains = members.map((m) => follow(m));
    await new Promise((r) => setTimeout(r, 200));
    await Promise.all(senders.map(async (u, i) => {
      for (let n = 0; n < PER_SENDER; n++) await send(u, rooms[(i + n) % 2]!, `race ${i}-${n}`);
    }));
    sending = false;
    const results = await Promise.all(chains);
    for (const r of rooms) {
      const order = (await call('GET', `${C}/rooms/${encodeURIComponent(r)}/messages?dir=f&limit=1000`, { token: alice.accessToken })).body.chunk
        .filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);
      assert.equal(order.length, senders.length * PER_SENDER / 2);
      for (const [i, got] of results.entries()) assert.deepEqual(got.get(r), order, `member ${i} got room ${r}'s sends once each, in the room's order`);
    }
  });

  test('a later joiner gets no history before the join from the cache when visibility is joined; shared shows it', async () => {
    for (const visibility of ['joined', 'shared'] as const) {
      const roomId = await create(alice, { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: visibility } }] });
      await send(alice, roomId, `before-${visibility}-1`);
      await send(alice, roomId, `before-${visibility}-2`);
      // Alice's syncs fill the cache with the room's events.
      const a0 = await sync(alice);
      assert.deepEqual(bodies(a0, roomId), [`before-${visibility}-1`, `before-${visibility}-2`]);
      const carol = await registerUser(server.baseUrl);
      const c0 = await sync(carol);
      await join(carol, roomId);
      await send(alice, roomId, `after-${visibility}`);
      const initial = await sync(carol);
      const incremental = await sync(carol, `since=${encodeURIComponent(c0.next_batch)}`);
      for (const res of [initial, incremental]) {
        if (visibility === 'joined') assert.deepEqual(bodies(res, roomId), [`after-${visibility}`], 'only what was sent after the join');
        else assert.deepEqual(bodies(res, roomId), [`before-${visibility}-1`, `before-${visibility}-2`, `after-${visibility}`], 'shared: the history too');
      }
      // Alice still sees all of it (the rows are shared, the decision is per user).
      assert.deepEqual(bodies(await sync(alice, `since=${encodeURIComponent(a0.next_batch)}`), roomId), [`after-${visibility}`]);
    }
  });

  test('an event redacted after it was cached is served redacted, in timelines and in state', async () => {
    const roomId = await create(alice, { preset: 'public_chat', topic: 'secret topic' });
    await join(bob, roomId);
    const secret = await send(alice, roomId, 'secret words');
    await send(alice, roomId, 'harmless');
    const b0 = await sync(bob);
    assert.ok(timeline(b0, roomId).some((e) => e.event_id === secret && e.content.body === 'secret words'), 'cached unredacted first');
    const topicState = (res: any) => [...(res.rooms.join[roomId].state.events as any[]), ...timeline(res, roomId)].find((e) => e.type === 'm.room.topic');
    assert.equal(topicState(b0).content.topic, 'secret topic');
    const topicId = topicState(b0).event_id as string;
    const redact = async (id: string) => {
      const res = await call('PUT', `${room(roomId)}/redact/${encodeURIComponent(id)}/r${Math.random()}`, { token: alice.accessToken, body: { reason: 'oops' } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    };
    await redact(secret);
    await redact(topicId);
    // Enough new events that the topic falls out of the timeline into the state section.
    for (let i = 0; i < 12; i++) await send(alice, roomId, `filler ${i}`);
    const b1 = await sync(bob, `since=${encodeURIComponent(b0.next_batch)}&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 20 } } }))}`);
    assert.ok(timeline(b1, roomId).some((e) => e.type === 'm.room.redaction' && e.redacts === secret));
    const fresh = await sync(bob, `filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 20 } } }))}`);
    const again = timeline(fresh, roomId).find((e) => e.event_id === secret);
    assert.ok(again, 'the redacted event is still in the timeline');
    assert.deepEqual(again.content, {}, 'served redacted');
    assert.ok(again.unsigned.redacted_because, 'with redacted_because');
    const short = await sync(bob);
    const topic = topicState(short);
    assert.equal(topic.event_id, topicId);
    assert.equal(topic.content.topic, undefined, 'the redacted topic in the state section is redacted');
  });

  test('a timeline filter is applied to cached rows as the database would', async () => {
    const roomId = await create(alice, { preset: 'public_chat' });
    await join(bob, roomId);
    await send(alice, roomId, 'from alice');
    await send(bob, roomId, 'from bob');
    await sync(alice); // the cache holds the room
    const filtered = async (f: object) => bodies(await sync(alice, `filter=${encodeURIComponent(JSON.stringify({ room: { timeline: f } }))}`), roomId);
    assert.deepEqual(await filtered({ senders: [bob.userId] }), ['from bob']);
    assert.deepEqual(await filtered({ not_senders: [bob.userId] }), ['from alice']);
    assert.deepEqual(await filtered({ types: ['m.room.*'], not_types: ['m.room.member'], limit: 1 }), ['from bob']);
    const onlyTypes = timeline(await sync(alice, `filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { types: ['m.room.mem*'] } } }))}`), roomId);
    assert.ok(onlyTypes.length > 0 && onlyTypes.every((e) => e.type === 'm.room.member'));
    // `_` and `%` are literal in a type pattern.
    assert.deepEqual(timeline(await sync(alice, `filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { types: ['m_room_%'] } } }))}`), roomId), []);
  });

  test('member counts and heroes follow joins and leaves through the shared summary', async () => {
    const [carol, dave] = await registerMany(2);
    const roomId = await create(alice, { preset: 'public_chat' });
    await join(bob, roomId);
    await join(carol, roomId);
    const summary = (res: any) => res.rooms.join[roomId]?.summary;
    const c0 = await sync(carol);
    assert.equal(summary(c0)['m.joined_member_count'], 3);
    assert.deepEqual(summary(c0)['m.heroes'], [alice.userId, bob.userId], 'the other members, earliest first');
    // Bob's view of the same cached summary leaves himself out.
    assert.deepEqual(summary(await sync(bob))['m.heroes'], [alice.userId, carol.userId]);
    await join(dave, roomId);
    const c1 = await sync(carol, `since=${encodeURIComponent(c0.next_batch)}`);
    assert.equal(summary(c1)['m.joined_member_count'], 4);
    assert.deepEqual(summary(c1)['m.heroes'], [alice.userId, bob.userId, dave.userId]);
    assert.equal((await call('POST', `${room(roomId)}/leave`, { token: bob.accessToken, body: {} })).status, 200);
    const c2 = await sync(carol, `since=${encodeURIComponent(c1.next_batch)}`);
    assert.equal(summary(c2)['m.joined_member_count'], 3);
    assert.deepEqual(summary(c2)['m.heroes'], [alice.userId, dave.userId]);
    await join(bob, roomId);
  });

  test('lazy loading from the shared state: exactly the timeline senders and oneself, whoever asks', async () => {
    const people = await registerMany(6);
    const roomId = await create(alice, { preset: 'public_chat', name: 'lazy' });
    for (const p of people) await join(p, roomId);
    // The last three messages come from people 0, 1 and 2.
    for (const i of [3, 4, 0, 1, 2]) await send(people[i]!, roomId, `from ${i}`);
    const filter = encodeURIComponent(JSON.stringify({ room: { state: { lazy_load_members: true }, timeline: { limit: 3 } } }));
    for (const reader of [people[5]!, people[0]!, alice]) {
      const res = await sync(reader, `filter=${filter}`);
      const r = res.rooms.join[roomId];
      const members = r.state.events.filter((e: any) => e.type === 'm.room.member').map((e: any) => e.state_key).sort();
      const senders = [...new Set(r.timeline.events.map((e: any) => e.sender))];
      assert.deepEqual(senders.sort(), [people[0]!.userId, people[1]!.userId, people[2]!.userId].sort());
      // The member events of the timeline's senders and of the reader, as of the timeline's start.
      const want = [...new Set([...senders, reader.userId])].sort();
      assert.deepEqual(members, want, `lazy members for ${reader.userId}`);
      assert.ok(r.state.events.some((e: any) => e.type === 'm.room.name'), 'the rest of the state comes too');
      // Without lazy loading, every member.
      const full = (await sync(reader)).rooms.join[roomId];
      const all = new Set([...full.state.events, ...full.timeline.events].filter((e: any) => e.type === 'm.room.member').map((e: any) => e.state_key));
      assert.equal(all.size, 7);
    }
  });

  test("a filter id, once used (and kept parsed), stays its owner's", async () => {
    const up = await call('POST', `${C}/user/${encodeURIComponent(alice.userId)}/filter`, { token: alice.accessToken, body: { room: { timeline: { limit: 1 } } } });
    assert.equal(up.status, 200);
    const id = up.body.filter_id as string;
    for (let i = 0; i < 2; i++) assert.equal((await call('GET', `${C}/sync?filter=${id}`, { token: alice.accessToken })).status, 200);
    const other = await call('GET', `${C}/sync?filter=${id}`, { token: bob.accessToken });
    assert.equal(other.status, 400, 'another user cannot use it');
    assert.equal(other.body.errcode, 'M_INVALID_PARAM');
  });

  test('an initial sync over several rooms reads their states in one statement', async () => {
    const [dave] = await registerMany(1);
    const rooms: string[] = [];
    for (let i = 0; i < 5; i++) {
      const roomId = await create(alice, { preset: 'public_chat', name: `multi ${i}` });
      await send(alice, roomId, `hello ${i}`);
      await join(dave!, roomId);
      rooms.push(roomId);
    }
    const stateReads = () => server.logs().split('\n').filter((l) => l.startsWith('sync-cache read state'));
    const before = stateReads().length;
    const res = await sync(dave!);
    for (const [i, roomId] of rooms.entries()) {
      const r = res.rooms.join[roomId];
      assert.ok([...r.state.events, ...r.timeline.events].some((e: any) => e.type === 'm.room.name' && e.content.name === `multi ${i}`), `room ${i} has its own state`);
    }
    const reads = stateReads().slice(before);
    assert.equal(reads.length, 1, `one statement for the five rooms' states: ${reads.join('; ')}`);
    // Five rooms of ours, and whatever rooms new users join by default.
    assert.ok(Number(/rooms=(\d+)$/.exec(reads[0]!)?.[1]) >= 5, reads[0]);
  });
});
