// Who may redact through which endpoint: PUT /redact and PUT /send/m.room.redaction (room version
// 11 carries `redacts` in content) pass the same power check, and an allowed redaction is applied.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

describe('redaction power through /send and /redact', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let mod: Credentials;
  const rooms: Record<string, string> = {};
  const { call, room, create, send } = roomApi(() => server.baseUrl);
  const sendRedaction = (who: Credentials, roomId: string, content: Record<string, unknown>, txn = String(Math.random())) =>
    call('PUT', `${room(roomId)}/send/m.room.redaction/${txn}`, { token: who.accessToken, body: content });
  const event = async (roomId: string, id: string) => {
    const res = await call('GET', `${room(roomId)}/event/${encodeURIComponent(id)}`, { token: alice.accessToken });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };

  before(async () => {
    server = await startServer();
    [alice, bob, mod] = await Promise.all([registerUser(server.baseUrl), registerUser(server.baseUrl), registerUser(server.baseUrl)]);
    for (const v of ['10', '11']) {
      rooms[v] = await create(alice, { preset: 'public_chat', room_version: v, power_level_content_override: { users: { [alice.userId]: 100, [mod.userId]: 50 } } });
      for (const u of [bob, mod]) assert.equal((await call('POST', `${room(rooms[v]!)}/join`, { token: u.accessToken, body: {} })).status, 200);
    }
  });
  after(() => server?.stop());

  for (const v of ['10', '11']) {
    test(`v${v}: a member with power 0 cannot redact another's message through /send (403), and it stays`, async () => {
      const rid = rooms[v]!;
      const victim = await send(alice, rid, 'important announcement');
      const res = await sendRedaction(bob, rid, { redacts: victim });
      assert.equal(res.status, 403, JSON.stringify(res.body));
      assert.equal(res.body.errcode, 'M_FORBIDDEN');
      const ev = await event(rid, victim);
      assert.equal(ev.content.body, 'important announcement');
      assert.equal(ev.unsigned?.redacted_because, undefined);
      // PUT /redact says the same.
      const viaRedact = await call('PUT', `${room(rid)}/redact/${encodeURIComponent(victim)}/${Math.random()}`, { token: bob.accessToken, body: {} });
      assert.equal(viaRedact.status, 403);
    });

    test(`v${v}: own messages, and a moderator at the redact level, redact through /send; the server applies it`, async () => {
      const rid = rooms[v]!;
      const own = await send(bob, rid, 'typo');
      const txn = `t${Math.random()}`;
      const r1 = await sendRedaction(bob, rid, { redacts: own, reason: 'oops' }, txn);
      assert.equal(r1.status, 200, JSON.stringify(r1.body));
      const again = await sendRedaction(bob, rid, { redacts: own, reason: 'oops' }, txn);
      assert.equal(again.body.event_id, r1.body.event_id, 'a retried transaction answers the same event');
      const ev = await event(rid, own);
      assert.deepEqual(ev.content, {});
      assert.equal(ev.unsigned.redacted_because.event_id, r1.body.event_id);
      const redaction = await event(rid, r1.body.event_id);
      assert.equal(redaction.redacts, own);
      assert.equal(redaction.content.reason, 'oops');

      const hers = await send(alice, rid, 'spam?');
      const r2 = await sendRedaction(mod, rid, { redacts: hers });
      assert.equal(r2.status, 200, JSON.stringify(r2.body));
      assert.deepEqual((await event(rid, hers)).content, {});
    });
  }

  test('v11: /send m.room.redaction without content.redacts is refused with 400 M_BAD_JSON', async () => {
    for (const content of [{}, { redacts: 5 }]) {
      const res = await sendRedaction(bob, rooms['11']!, content);
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.errcode, 'M_BAD_JSON');
    }
  });
});
