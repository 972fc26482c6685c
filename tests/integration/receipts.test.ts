// Receipts and read markers: POST /rooms/{roomId}/receipt/…, /read_markers, m.receipt in /sync —
// public receipts reach the room's members and nobody else, private ones only their user; threaded
// receipts; bad input changes nothing. Run once in process and once with Redis.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomEvent, type MatrixEvent } from 'matrix-js-sdk';
import { startServer, type TestServer } from '../helpers/server.ts';
import { makeClient, registerUser, roomApi, stopClients, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

for (const mode of ['in-process', 'redis'] as const) {
  describe(`receipts (${mode})`, () => {
    let server: TestServer;
    let alice: Credentials;
    let bob: Credentials;
    let carol: Credentials;
    const { call, room, create, send } = roomApi(() => server.baseUrl);

    const sync = async (who: Credentials, since?: string, timeout = 0) => {
      const res = await call('GET', `${C}/sync?timeout=${timeout}${since ? `&since=${since}` : ''}`, { token: who.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };
    const receiptsIn = (body: any, roomId: string) => (body.rooms?.join?.[roomId]?.ephemeral?.events ?? []).filter((e: any) => e.type === 'm.receipt');
    /** Long-polls until the predicate holds on a response (or fails after a few seconds). */
    const syncUntil = async (who: Credentials, since: string, pred: (body: any) => boolean) => {
      const end = Date.now() + 8000;
      let token = since;
      while (Date.now() < end) {
        const body = await sync(who, token, 1000);
        if (pred(body)) return body;
        token = body.next_batch;
      }
      throw new Error('condition not met in /sync');
    };
    const receipt = (who: Credentials, roomId: string, type: string, eventId: string, body: unknown = {}) =>
      call('POST', `${room(roomId)}/receipt/${encodeURIComponent(type)}/${encodeURIComponent(eventId)}`, { token: who.accessToken, body });
    const joinedRoom = async () => {
      const roomId = await create(alice, { preset: 'public_chat' });
      assert.equal((await call('POST', `${room(roomId)}/join`, { token: bob.accessToken })).status, 200);
      return roomId;
    };

    before(async () => {
      server = await startServer(mode === 'redis' ? { redis: true } : {});
      [alice, bob, carol] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl), registerUser(server.baseUrl)]);
    });
    after(async () => {
      stopClients();
      await server?.stop();
    });

    test('a read receipt reaches the other member through /sync and never a non-member', async () => {
      const roomId = await joinedRoom();
      const eventId = await send(alice, roomId, 'read me');
      const aliceBase = (await sync(alice)).next_batch;
      const bobBase = (await sync(bob)).next_batch;
      const carolBase = (await sync(carol)).next_batch;
      assert.equal((await receipt(bob, roomId, 'm.read', eventId)).status, 200);
      // Alice (a member) sees it.
      const seen = await syncUntil(alice, aliceBase, (b) => receiptsIn(b, roomId).length > 0);
      const content = receiptsIn(seen, roomId)[0].content;
      assert.ok(content[eventId]['m.read'][bob.userId].ts > 0);
      // Bob's own incremental sync has it too.
      const own = await syncUntil(bob, bobBase, (b) => receiptsIn(b, roomId).length > 0);
      assert.ok(receiptsIn(own, roomId)[0].content[eventId]['m.read'][bob.userId]);
      // Carol, not in the room, never gets the room or the receipt.
      const c = await sync(carol, carolBase, 300);
      assert.equal(c.rooms.join[roomId], undefined);
      assert.ok(!JSON.stringify(await sync(carol)).includes(eventId));
      // An initial sync of a member carries the latest receipts.
      const initial = await sync(alice);
      assert.ok(receiptsIn(initial, roomId).some((e: any) => e.content[eventId]?.['m.read']?.[bob.userId]));
    });

    test('a private receipt stays private: only its user sees it', async () => {
      const roomId = await joinedRoom();
      const eventId = await send(alice, roomId, 'secret read');
      const aliceBase = (await sync(alice)).next_batch;
      const bobBase = (await sync(bob)).next_batch;
      assert.equal((await receipt(bob, roomId, 'm.read.private', eventId)).status, 200);
      const own = await syncUntil(bob, bobBase, (b) => receiptsIn(b, roomId).length > 0);
      assert.ok(receiptsIn(own, roomId)[0].content[eventId]['m.read.private'][bob.userId]);
      const other = await sync(alice, aliceBase, 500);
      assert.equal(receiptsIn(other, roomId).length, 0, 'no receipt for the other member');
      const initial = await sync(alice);
      assert.ok(!JSON.stringify(receiptsIn(initial, roomId)).includes('m.read.private'), 'not in an initial sync either');
      assert.ok(JSON.stringify(receiptsIn(await sync(bob), roomId)).includes('m.read.private'), 'the owner sees it in an initial sync');
    });

    test('threaded receipts carry thread_id; a receipt only moves forward', async () => {
      const roomId = await joinedRoom();
      const root = await send(alice, roomId, 'root');
      const reply = (await call('PUT', `${room(roomId)}/send/m.room.message/t${Math.random()}`, {
        token: alice.accessToken, body: { msgtype: 'm.text', body: 'in thread', 'm.relates_to': { rel_type: 'm.thread', event_id: root } },
      })).body.event_id;
      const later = await send(alice, roomId, 'main later');
      const aliceBase = (await sync(alice)).next_batch;
      assert.equal((await receipt(bob, roomId, 'm.read', reply, { thread_id: root })).status, 200);
      assert.equal((await receipt(bob, roomId, 'm.read', later, { thread_id: 'main' })).status, 200);
      const got = await syncUntil(alice, aliceBase, (b) => {
        const all = JSON.stringify(receiptsIn(b, roomId));
        return all.includes(reply) && all.includes(later);
      });
      const merged = Object.assign({}, ...receiptsIn(got, roomId).map((e: any) => e.content));
      assert.equal(merged[reply]['m.read'][bob.userId].thread_id, root);
      assert.equal(merged[later]['m.read'][bob.userId].thread_id, 'main');

      // Unthreaded: at `later`, then at the older `root`: accepted, but it stays at `later`.
      assert.equal((await receipt(bob, roomId, 'm.read', later)).status, 200);
      const base = (await sync(alice)).next_batch;
      assert.equal((await receipt(bob, roomId, 'm.read', root)).status, 200);
      const after = await sync(alice, base, 500);
      assert.ok(!JSON.stringify(receiptsIn(after, roomId)).includes(root), 'an older receipt does not move it back');
      const initial = Object.assign({}, ...receiptsIn(await sync(alice), roomId).map((e: any) => e.content));
      assert.ok(initial[later]['m.read'][bob.userId]);
    });

    test('read markers: m.fully_read as room account data, m.read as a receipt', async () => {
      const roomId = await joinedRoom();
      const e1 = await send(alice, roomId, 'one');
      const e2 = await send(alice, roomId, 'two');
      const aliceBase = (await sync(alice)).next_batch;
      const res = await call('POST', `${room(roomId)}/read_markers`, { token: bob.accessToken, body: { 'm.fully_read': e1, 'm.read': e2 } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const bobSync = await sync(bob);
      const ad = bobSync.rooms.join[roomId].account_data.events.find((e: any) => e.type === 'm.fully_read');
      assert.equal(ad?.content.event_id, e1);
      const got = await syncUntil(alice, aliceBase, (b) => JSON.stringify(receiptsIn(b, roomId)).includes(e2));
      assert.ok(receiptsIn(got, roomId)[0].content[e2]['m.read'][bob.userId]);
      const fr = await call('GET', `${C}/user/${encodeURIComponent(bob.userId)}/rooms/${encodeURIComponent(roomId)}/account_data/m.fully_read`, { token: bob.accessToken });
      assert.equal(fr.body.event_id, e1);
      // m.fully_read through the receipt endpoint moves the marker too.
      assert.equal((await receipt(bob, roomId, 'm.fully_read', e2)).status, 200);
      const fr2 = await call('GET', `${C}/user/${encodeURIComponent(bob.userId)}/rooms/${encodeURIComponent(roomId)}/account_data/m.fully_read`, { token: bob.accessToken });
      assert.equal(fr2.body.event_id, e2);
    });

    test('bad input gets the right error and changes nothing', async () => {
      const roomId = await joinedRoom();
      const other = await create(alice, {});
      const elsewhere = await send(alice, other, 'elsewhere');
      const root = await send(alice, roomId, 'root');
      const aliceBase = (await sync(alice)).next_batch;
      const expect = async (res: Promise<{ status: number; body: any }>, status: number, errcode: string) => {
        const r = await res;
        assert.equal(r.status, status, JSON.stringify(r.body));
        assert.equal(r.body.errcode, errcode);
      };
      await expect(receipt(bob, roomId, 'm.unknown', root), 400, 'M_INVALID_PARAM');
      await expect(receipt(bob, roomId, 'm.read', elsewhere), 404, 'M_NOT_FOUND');
      await expect(receipt(bob, roomId, 'm.read', '$nope:localhost'), 404, 'M_NOT_FOUND');
      await expect(receipt(carol, roomId, 'm.read', root), 403, 'M_FORBIDDEN');
      await expect(receipt(bob, roomId, 'm.read', root, { thread_id: '' }), 400, 'M_INVALID_PARAM');
      await expect(receipt(bob, roomId, 'm.read', root, { thread_id: 42 }), 400, 'M_INVALID_PARAM');
      await expect(receipt(bob, roomId, 'm.read', root, { thread_id: '$other:localhost' }), 400, 'M_INVALID_PARAM');
      await expect(receipt(bob, roomId, 'm.fully_read', root, { thread_id: 'main' }), 400, 'M_INVALID_PARAM');
      await expect(receipt(bob, '!nowhere:localhost', 'm.read', root), 403, 'M_FORBIDDEN');
      await expect(call('POST', `${room(roomId)}/read_markers`, { token: bob.accessToken, body: { 'm.read': root, 'm.fully_read': elsewhere } }), 404, 'M_NOT_FOUND');
      await expect(call('POST', `${room(roomId)}/read_markers`, { token: bob.accessToken, body: { 'm.read': 7 } }), 400, 'M_BAD_JSON');
      await expect(call('POST', `${room(roomId)}/read_markers`, { token: carol.accessToken, body: { 'm.read': root } }), 403, 'M_FORBIDDEN');
      const res = await sync(alice, aliceBase, 500);
      assert.equal(receiptsIn(res, roomId).length, 0, 'no receipt was stored');
      const fr = await call('GET', `${C}/user/${encodeURIComponent(bob.userId)}/rooms/${encodeURIComponent(roomId)}/account_data/m.fully_read`, { token: bob.accessToken });
      assert.equal(fr.status, 404, 'no read marker was stored');
    });

    test('matrix-js-sdk sees receipts through RoomEvent.Receipt', async () => {
      const roomId = await joinedRoom();
      const eventId = await send(alice, roomId, 'sdk');
      const client = await makeClient(server.baseUrl, alice);
      const seen = new Promise<MatrixEvent>((resolve) => {
        client.on(RoomEvent.Receipt, (event: MatrixEvent) => {
          if (event.getContent()[eventId]?.['m.read']?.[bob.userId]) resolve(event);
        });
      });
      assert.equal((await receipt(bob, roomId, 'm.read', eventId)).status, 200);
      await Promise.race([seen, new Promise((_, reject) => setTimeout(() => reject(new Error('no RoomEvent.Receipt')), 8000))]);
      const r = client.getRoom(roomId)!;
      assert.equal(r.getEventReadUpTo(bob.userId), eventId);
      client.stopClient();
    });
  });
}
