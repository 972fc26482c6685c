// Notifications: push rules evaluated for every member, unread_notifications and
// unread_thread_notifications in /sync (mentions, display names, DMs, keywords; highlight vs
// notify), cleared by the user's receipt; GET /notifications; matrix-js-sdk's unread counts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NotificationCountType } from 'matrix-js-sdk';
import { startServer, type TestServer } from '../helpers/server.ts';
import { makeClient, registerUser, roomApi, stopClients, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';

const C = '/_matrix/client/v3';

for (const mode of ['in-process', 'redis'] as const) {
  describe(`notifications (${mode})`, () => {
    let server: TestServer;
    let alice: Credentials;
    let bob: Credentials;
    const { call, room, create, send } = roomApi(() => server.baseUrl);

    const sync = async (who: Credentials, query = '') => {
      const res = await call('GET', `${C}/sync?timeout=0${query}`, { token: who.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };
    const counts = async (who: Credentials, roomId: string, filter?: unknown) => {
      const body = await sync(who, filter ? `&filter=${encodeURIComponent(JSON.stringify(filter))}` : '');
      return body.rooms.join[roomId];
    };
    const sendContent = async (who: Credentials, roomId: string, content: Record<string, unknown>) => {
      const res = await call('PUT', `${room(roomId)}/send/m.room.message/${Math.random()}`, { token: who.accessToken, body: { msgtype: 'm.text', ...content } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body.event_id as string;
    };
    const receipt = (who: Credentials, roomId: string, eventId: string, body: unknown = {}) =>
      call('POST', `${room(roomId)}/receipt/m.read/${encodeURIComponent(eventId)}`, { token: who.accessToken, body });
    /** A public room with alice, bob and a third member (so that it is not a DM). */
    const groupRoom = async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      const third = await registerUser(server.baseUrl);
      for (const who of [bob, third]) assert.equal((await call('POST', `${room(roomId)}/join`, { token: who.accessToken })).status, 200);
      return roomId;
    };

    before(async () => {
      server = await startServer(mode === 'redis' ? { redis: true } : {});
      [alice, bob] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl)]);
      const res = await call('PUT', `${C}/profile/${encodeURIComponent(bob.userId)}/displayname`, { token: bob.accessToken, body: { displayname: 'Bobby Tables' } });
      assert.equal(res.status, 200);
    });
    after(async () => {
      stopClients();
      await server?.stop();
    });

    test('messages notify, mentions highlight, own events never count; a receipt clears', async () => {
      const roomId = await groupRoom();
      await send(alice, roomId, 'hello all');
      await sendContent(alice, roomId, { body: 'hey you', 'm.mentions': { user_ids: [bob.userId] } });
      await sendContent(alice, roomId, { body: 'ping Bobby Tables!' });
      const last = await send(alice, roomId, 'plain again');
      await send(bob, roomId, 'my own message');
      const r = await counts(bob, roomId);
      assert.deepEqual(r.unread_notifications, { notification_count: 4, highlight_count: 2 });
      assert.deepEqual((await counts(alice, roomId)).unread_notifications, { notification_count: 1, highlight_count: 0 }, "alice counts only bob's message");

      // A long-polling sync woken by a new message already carries the new count.
      const base = (await sync(bob)).next_batch;
      const poll = call('GET', `${C}/sync?timeout=10000&since=${base}`, { token: bob.accessToken });
      await new Promise((res) => setTimeout(res, 200));
      await send(alice, roomId, 'one more');
      const woken = (await poll).body.rooms.join[roomId];
      assert.deepEqual(woken.unread_notifications, { notification_count: 5, highlight_count: 2 });

      // Bob reads up to `last`: what is after it still counts.
      assert.equal((await receipt(bob, roomId, last)).status, 200);
      assert.deepEqual((await counts(bob, roomId)).unread_notifications, { notification_count: 1, highlight_count: 0 });
      // An incremental sync after the receipt carries the new counts (the room is in it for the receipt).
      const later = (await sync(bob, `&since=${base}`)).rooms.join[roomId];
      assert.deepEqual(later.unread_notifications, { notification_count: 1, highlight_count: 0 });
    });

    test('a DM notifies; a private receipt clears it too', async () => {
      const roomId = await create(alice, { preset: 'trusted_private_chat', is_direct: true, invite: [bob.userId] });
      assert.equal((await call('POST', `${room(roomId)}/join`, { token: bob.accessToken })).status, 200);
      const e = await send(alice, roomId, 'psst');
      const r = await counts(bob, roomId);
      assert.deepEqual(r.unread_notifications, { notification_count: 1, highlight_count: 0 });
      const res = await call('POST', `${room(roomId)}/receipt/m.read.private/${encodeURIComponent(e)}`, { token: bob.accessToken, body: {} });
      assert.equal(res.status, 200);
      assert.deepEqual((await counts(bob, roomId)).unread_notifications, { notification_count: 0, highlight_count: 0 });
    });

    test('a keyword rule (content rule) highlights; suppressed notices do not count', async () => {
      const roomId = await groupRoom();
      const put = await call('PUT', `${C}/pushrules/global/content/cakes`, {
        token: bob.accessToken, body: { pattern: 'cake*', actions: ['notify', { set_tweak: 'highlight' }] },
      });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      await send(alice, roomId, 'there are Cakes in the kitchen');
      await send(alice, roomId, 'pancakes are not cakes? no: pancake');
      await sendContent(alice, roomId, { msgtype: 'm.notice', body: 'a bot says cake' });
      const r = await counts(bob, roomId);
      // The second message matches too ("cakes" is a word in it); the notice matches nothing that notifies.
      assert.deepEqual(r.unread_notifications, { notification_count: 2, highlight_count: 2 });
      await call('DELETE', `${C}/pushrules/global/content/cakes`, { token: bob.accessToken });
      await send(alice, roomId, 'cake again');
      assert.deepEqual((await counts(bob, roomId)).unread_notifications, { notification_count: 3, highlight_count: 2 }, 'the rule is gone at once');
    });

    test('per-thread counts with unread_thread_notifications; a threaded receipt clears one thread', async () => {
      const roomId = await groupRoom();
      const root = await send(alice, roomId, 'root');
      const inThread = (body: string) => sendContent(alice, roomId, { body, 'm.relates_to': { rel_type: 'm.thread', event_id: root } });
      await inThread('t1');
      const t2 = await inThread('t2');
      await send(alice, roomId, 'main two');
      const filter = { room: { timeline: { unread_thread_notifications: true } } };
      const r = await counts(bob, roomId, filter);
      assert.deepEqual(r.unread_notifications, { notification_count: 2, highlight_count: 0 });
      assert.deepEqual(r.unread_thread_notifications, { [root]: { notification_count: 2, highlight_count: 0 } });
      const folded = await counts(bob, roomId);
      assert.deepEqual(folded.unread_notifications, { notification_count: 4, highlight_count: 0 });
      assert.equal(folded.unread_thread_notifications, undefined);
      assert.equal((await receipt(bob, roomId, t2, { thread_id: root })).status, 200);
      const after = await counts(bob, roomId, filter);
      assert.deepEqual(after.unread_notifications, { notification_count: 2, highlight_count: 0 }, 'the main timeline is still unread');
      assert.deepEqual(after.unread_thread_notifications, {});
    });

    test('a later member counts only what comes after their join; a muted room counts nothing', async () => {
      const roomId = await groupRoom();
      await send(alice, roomId, 'before dave');
      const dave = await registerUser(server.baseUrl);
      assert.equal((await call('POST', `${room(roomId)}/join`, { token: dave.accessToken })).status, 200);
      // Bob mutes the room (a room rule without actions): his own rows say "not notified".
      const mute = await call('PUT', `${C}/pushrules/global/room/${encodeURIComponent(roomId)}`, { token: bob.accessToken, body: { actions: [] } });
      assert.equal(mute.status, 200, JSON.stringify(mute.body));
      await send(alice, roomId, 'after dave');
      assert.deepEqual((await counts(dave, roomId)).unread_notifications, { notification_count: 1, highlight_count: 0 });
      assert.deepEqual((await counts(bob, roomId)).unread_notifications, { notification_count: 1, highlight_count: 0 }, 'only the message before the mute');
      const list = await call('GET', `${C}/notifications`, { token: dave.accessToken });
      assert.deepEqual(list.body.notifications.map((n: any) => n.event.content.body), ['after dave']);
      // After leaving, new messages are not the leaver's notifications.
      assert.equal((await call('POST', `${room(roomId)}/leave`, { token: dave.accessToken, body: {} })).status, 200);
      await send(alice, roomId, 'after dave left');
      const after = await call('GET', `${C}/notifications`, { token: dave.accessToken });
      assert.deepEqual(after.body.notifications.map((n: any) => n.event.content.body), ['after dave']);
      await call('DELETE', `${C}/pushrules/global/room/${encodeURIComponent(roomId)}`, { token: bob.accessToken });
    });

    test('GET /notifications: newest first, read flags, only=highlight, pagination', async () => {
      const roomId = await groupRoom();
      const a = await send(alice, roomId, 'n1');
      const b = await sendContent(alice, roomId, { body: 'n2', 'm.mentions': { user_ids: [bob.userId] } });
      const c = await send(alice, roomId, 'n3');
      assert.equal((await receipt(bob, roomId, a)).status, 200);
      const all = await call('GET', `${C}/notifications?limit=2`, { token: bob.accessToken });
      assert.equal(all.status, 200, JSON.stringify(all.body));
      assert.deepEqual(all.body.notifications.map((n: any) => n.event.event_id), [c, b]);
      assert.equal(all.body.notifications[0].read, false);
      assert.equal(all.body.notifications[0].room_id, roomId);
      assert.ok(all.body.notifications[1].actions.some((x: any) => x.set_tweak === 'highlight'));
      assert.ok(all.body.next_token);
      const more = await call('GET', `${C}/notifications?limit=1&from=${all.body.next_token}`, { token: bob.accessToken });
      assert.deepEqual(more.body.notifications.map((n: any) => [n.event.event_id, n.read]), [[a, true]]);
      const hl = await call('GET', `${C}/notifications?only=highlight`, { token: bob.accessToken });
      assert.ok(hl.body.notifications.length >= 1);
      assert.ok(hl.body.notifications.every((n: any) => n.actions.some((x: any) => x.set_tweak === 'highlight')));
      assert.ok(hl.body.notifications.some((n: any) => n.event.event_id === b));
      const bad = await call('GET', `${C}/notifications?from=abc`, { token: bob.accessToken });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.errcode, 'M_INVALID_PARAM');
      const badLimit = await call('GET', `${C}/notifications?limit=-1`, { token: bob.accessToken });
      assert.equal(badLimit.status, 400);
    });

    test('an invite notifies the invitee', async () => {
      const roomId = await create(alice, {});
      assert.equal((await call('POST', `${room(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } })).status, 200);
      const deadline = Date.now() + 5000;
      for (;;) {
        const res = await call('GET', `${C}/notifications`, { token: bob.accessToken });
        if (res.body.notifications.some((n: any) => n.room_id === roomId && n.event.type === 'm.room.member')) break;
        assert.ok(Date.now() < deadline, 'no notification for the invite');
        await new Promise((r) => setTimeout(r, 100));
      }
    });

    test('what a dead worker left unevaluated is evaluated again (push_progress takeover)', async () => {
      const roomId = await groupRoom();
      const eventId = await send(alice, roomId, 'lost in a crash');
      assert.deepEqual((await counts(bob, roomId)).unread_notifications, { notification_count: 1, highlight_count: 0 });
      // As if a worker had committed the event and died before evaluating it: its actions are not
      // there, and its progress row (no heartbeat any more) says it had evaluated up to before it.
      const db = await connectDatabase(server);
      try {
        const pos = Number((await db.query('SELECT stream_pos FROM events WHERE event_id = $1', [eventId])).rows[0].stream_pos);
        await db.query('DELETE FROM push_events WHERE stream_pos = $1', [pos]);
        await db.query('DELETE FROM event_push_actions WHERE stream_pos = $1', [pos]);
        assert.deepEqual((await counts(bob, roomId)).unread_notifications, { notification_count: 0, highlight_count: 0 });
        await db.query("INSERT INTO push_progress (instance, upto, heartbeat_ts) VALUES ('dead-worker', $1, 0)", [pos - 1]);
      } finally {
        await db.end();
      }
      const deadline = Date.now() + 10_000;
      for (;;) {
        const r = (await counts(bob, roomId)).unread_notifications;
        if (r.notification_count === 1) break;
        assert.ok(Date.now() < deadline, 'the live worker took over and evaluated the event again');
        await new Promise((res) => setTimeout(res, 200));
      }
    });

    test('matrix-js-sdk shows the unread counts (room.getUnreadNotificationCount)', async () => {
      const roomId = await groupRoom();
      const client = await makeClient(server.baseUrl, bob);
      await sendContent(alice, roomId, { body: 'sdk hi', 'm.mentions': { user_ids: [bob.userId] } });
      await send(alice, roomId, 'sdk two');
      const deadline = Date.now() + 8000;
      for (;;) {
        const r = client.getRoom(roomId);
        if (r && r.getUnreadNotificationCount(NotificationCountType.Total) === 2 && r.getUnreadNotificationCount(NotificationCountType.Highlight) === 1) break;
        assert.ok(Date.now() < deadline, `sdk counts: ${r?.getUnreadNotificationCount(NotificationCountType.Total)}/${r?.getUnreadNotificationCount(NotificationCountType.Highlight)}`);
        await new Promise((res) => setTimeout(res, 100));
      }
      client.stopClient();
    });
  });
}
