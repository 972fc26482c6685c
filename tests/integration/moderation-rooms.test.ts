// Rooms admin (issue 9, mod9): Synapse's room list (paging, ordering, search), details, members,
// state, messages, block (a blocked room cannot be joined), delete v2 (members moved to a new room,
// block, purge: no rows left, gone from every member's sync) with status polling. Every endpoint:
// 403 without the permission (nothing changes), 404 for an unknown room, 400 naming the field,
// one audit entry per action.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import { auditEntries, eventually, userWithRole } from '../helpers/moderation.ts';

const C = '/_matrix/client/v3';
const A = '/_synapse/admin';
let server: TestServer;
let db: pg.Client;
let base: string;
let admin: Credentials;
let support: Credentials;
let alice: Credentials;
let bob: Credentials;
const rooms: string[] = [];

const get = (path: string, who: Credentials) => api(base, 'GET', path, { token: who.accessToken });
const send = (method: string, path: string, who: Credentials, body?: unknown) => api(base, method, path, { token: who.accessToken, body });
const enc = encodeURIComponent;

before(async () => {
  server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } });
  base = server.baseUrl;
  db = await connectDatabase(server);
  admin = await userWithRole(base, db, 'admin');
  support = await userWithRole(base, db, 'support');
  alice = await registerUser(base);
  bob = await registerUser(base);
  for (const [i, name] of ['Cherry', 'apple', 'Banana'].entries()) {
    const r = await send('POST', `${C}/createRoom`, alice, { name, preset: 'public_chat', ...(i === 0 ? { room_alias_name: 'cherry' } : {}) });
    assert.equal(r.status, 200);
    rooms.push(r.body.room_id);
  }
  // bob joins the second room: two members there.
  assert.equal((await send('POST', `${C}/join/${enc(rooms[1]!)}`, bob, {})).status, 200);
});

after(async () => {
  await db?.end();
  await server?.stop();
});

describe('room list and details', () => {
  test('lists every room, ordered by name by default, paged with from/limit and next_batch', async () => {
    const all = await get(`${A}/v1/rooms`, admin);
    assert.equal(all.status, 200);
    assert.equal(all.body.total_rooms, 3);
    assert.deepEqual(all.body.rooms.map((r: { name: string }) => r.name), ['Banana', 'Cherry', 'apple']);
    const first = all.body.rooms[1];
    assert.equal(first.room_id, rooms[0]);
    assert.equal(first.canonical_alias, `#cherry:${server.serverName}`);
    assert.equal(first.joined_members, 1);
    assert.equal(first.joined_local_members, 1);
    assert.equal(first.creator, alice.userId);
    assert.equal(first.join_rules, 'public');
    assert.equal(first.public, false);
    assert.equal(typeof first.state_events, 'number');
    const page = await get(`${A}/v1/rooms?limit=2`, admin);
    assert.equal(page.body.rooms.length, 2);
    assert.equal(page.body.next_batch, 2);
    const rest = await get(`${A}/v1/rooms?limit=2&from=2`, admin);
    assert.equal(rest.body.rooms.length, 1);
    assert.equal(rest.body.next_batch, undefined);
    assert.equal(rest.body.prev_batch, 0);
  });

  test('orders by joined_members backwards and searches name, alias and id', async () => {
    const byMembers = await get(`${A}/v1/rooms?order_by=joined_members&dir=b`, admin);
    assert.equal(byMembers.body.rooms[0].room_id, rooms[1]);
    assert.equal(byMembers.body.rooms[0].joined_members, 2);
    const search = await get(`${A}/v1/rooms?search_term=CHER`, admin);
    assert.deepEqual(search.body.rooms.map((r: { room_id: string }) => r.room_id), [rooms[0]]);
    assert.equal(search.body.total_rooms, 1);
    const byId = await get(`${A}/v1/rooms?search_term=${enc(rooms[2]!.slice(1, 8))}`, admin);
    assert.ok(byId.body.rooms.some((r: { room_id: string }) => r.room_id === rooms[2]));
  });

  test('bad parameters answer 400 naming them', async () => {
    for (const [q, field] of [['order_by=size', 'order_by'], ['dir=x', 'dir'], ['limit=-1', 'limit'], ['from=abc', 'from']]) {
      const r = await get(`${A}/v1/rooms?${q}`, admin);
      assert.equal(r.status, 400, q);
      assert.equal(r.body.errcode, 'M_INVALID_PARAM');
      assert.match(r.body.error, new RegExp(field!));
    }
  });

  test('details, members, state and messages of a room; 404 for an unknown room', async () => {
    const d = await get(`${A}/v1/rooms/${enc(rooms[1]!)}`, admin);
    assert.equal(d.status, 200);
    assert.equal(d.body.name, 'apple');
    assert.equal(d.body.joined_members, 2);
    const m = await get(`${A}/v1/rooms/${enc(rooms[1]!)}/members`, admin);
    assert.deepEqual(m.body.members.sort(), [alice.userId, bob.userId].sort());
    assert.equal(m.body.total, 2);
    const s = await get(`${A}/v1/rooms/${enc(rooms[1]!)}/state`, admin);
    assert.ok(s.body.state.some((e: { type: string }) => e.type === 'm.room.create'));
    await send('PUT', `${C}/rooms/${enc(rooms[1]!)}/send/m.room.message/t1`, alice, { msgtype: 'm.text', body: 'hello admins' });
    const msgs = await get(`${A}/v1/rooms/${enc(rooms[1]!)}/messages?limit=2`, admin);
    assert.equal(msgs.status, 200);
    assert.equal(msgs.body.chunk[0].content.body, 'hello admins');
    assert.equal(msgs.body.chunk.length, 2);
    assert.match(msgs.body.end, /^s\d+$/);
    const older = await get(`${A}/v1/rooms/${enc(rooms[1]!)}/messages?limit=2&from=${msgs.body.end}`, admin);
    assert.notEqual(older.body.chunk[0].event_id, msgs.body.chunk[0].event_id);
    const unknown = `!nope:${server.serverName}`;
    for (const p of ['', '/members', '/state', '/messages']) {
      const r = await get(`${A}/v1/rooms/${enc(unknown)}${p}`, admin);
      assert.equal(r.status, 404, p);
      assert.equal(r.body.errcode, 'M_NOT_FOUND');
    }
    assert.equal((await get(`${A}/v1/rooms/not-a-room`, admin)).status, 400);
  });

  test('a user without rooms.read gets 403 naming the permission; support may read', async () => {
    const r = await get(`${A}/v1/rooms`, alice);
    assert.equal(r.status, 403);
    assert.equal(r.body.errcode, 'M_FORBIDDEN');
    assert.match(r.body.error, /rooms\.read/);
    assert.equal((await get(`${A}/v1/rooms/${enc(rooms[0]!)}`, support)).status, 200);
    assert.equal((await api(base, 'GET', `${A}/v1/rooms`)).status, 401);
  });
});

describe('block', () => {
  test('a blocked room cannot be joined; unblocked it can; one audit entry each; 403 without rooms.moderate changes nothing', async () => {
    const room = rooms[2]!;
    const denied = await send('PUT', `${A}/v1/rooms/${enc(room)}/block`, support, { block: true });
    assert.equal(denied.status, 403);
    assert.match(denied.body.error, /rooms\.moderate/);
    assert.deepEqual((await get(`${A}/v1/rooms/${enc(room)}/block`, admin)).body, { block: false });
    const bad = await send('PUT', `${A}/v1/rooms/${enc(room)}/block`, admin, { block: 'yes' });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /block/);
    assert.equal((await send('PUT', `${A}/v1/rooms/${enc(room)}/block`, admin, { block: true })).status, 200);
    assert.deepEqual((await get(`${A}/v1/rooms/${enc(room)}/block`, admin)).body, { block: true, user_id: admin.userId });
    const join = await send('POST', `${C}/join/${enc(room)}`, bob, {});
    assert.equal(join.status, 403);
    assert.match(join.body.error, /blocked/);
    const viaState = await send('PUT', `${C}/rooms/${enc(room)}/state/m.room.member/${enc(bob.userId)}`, bob, { membership: 'join' });
    assert.equal(viaState.status, 403);
    const invite = await send('POST', `${C}/rooms/${enc(room)}/invite`, alice, { user_id: bob.userId });
    assert.equal(invite.status, 403);
    assert.match(invite.body.error, /blocked/);
    const entries = await auditEntries(db, 'room.block', room);
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.actor, admin.userId);
    assert.equal(entries[0]!.outcome, 'ok');
    assert.ok(entries[0]!.ip);
    assert.equal((await send('PUT', `${A}/v1/rooms/${enc(room)}/block`, admin, { block: false })).status, 200);
    assert.equal((await send('POST', `${C}/join/${enc(room)}`, bob, {})).status, 200);
    assert.equal((await auditEntries(db, 'room.unblock', room)).length, 1);
  });
});

describe('delete v2', () => {
  test('403 without rooms.delete (room intact), 404 unknown room, 400 for a bad body', async () => {
    const denied = await send('DELETE', `${A}/v2/rooms/${enc(rooms[1]!)}`, support, {});
    assert.equal(denied.status, 403);
    assert.match(denied.body.error, /rooms\.delete/);
    assert.equal((await get(`${A}/v1/rooms/${enc(rooms[1]!)}`, admin)).status, 200);
    const unknown = await send('DELETE', `${A}/v2/rooms/${enc(`!gone:${server.serverName}`)}`, admin, {});
    assert.equal(unknown.status, 404);
    for (const [body, field] of [[{ purge: 'yes' }, 'purge'], [{ new_room_user_id: 'nobody' }, 'new_room_user_id'], [{ block: 1 }, 'block']] as const) {
      const r = await send('DELETE', `${A}/v2/rooms/${enc(rooms[1]!)}`, admin, body);
      assert.equal(r.status, 400);
      assert.match(r.body.error, new RegExp(field));
    }
    const s = await get(`${A}/v2/rooms/delete_status/nope`, admin);
    assert.equal(s.status, 404);
  });

  test('moves local members to a new room, blocks and purges: no rows left, gone from sync, status complete', async () => {
    const room = rooms[1]!;
    // bob's sync knows the room before; he has a receipt and a notification there.
    const syncBefore = await get(`${C}/sync`, bob);
    assert.ok(syncBefore.body.rooms.join[room]);
    const last = (await send('PUT', `${C}/rooms/${enc(room)}/send/m.room.message/t2`, alice, { msgtype: 'm.text', body: 'one more' })).body.event_id;
    assert.equal((await send('POST', `${C}/rooms/${enc(room)}/receipt/m.read/${enc(last)}`, bob, {})).status, 200);
    const derived = `SELECT (SELECT count(*) FROM receipts WHERE room_id = $1)::int AS receipts,
      (SELECT count(*) FROM push_events WHERE room_id = $1)::int AS push_events,
      (SELECT count(*) FROM event_push_actions WHERE room_id = $1)::int AS push_actions`;
    await eventually(async () => (await db.query(derived, [room])).rows[0].push_events > 0, 5_000, 'push rows');
    assert.ok((await db.query(derived, [room])).rows[0].receipts > 0);
    const r = await send('DELETE', `${A}/v2/rooms/${enc(room)}`, admin, { block: true, purge: true, new_room_user_id: admin.userId, room_name: 'Gone', message: 'This room was removed' });
    assert.equal(r.status, 200);
    const deleteId = r.body.delete_id as string;
    assert.ok(deleteId);
    const status = await eventually(async () => {
      const s = await get(`${A}/v2/rooms/delete_status/${deleteId}`, admin);
      return s.body.status === 'complete' || s.body.status === 'failed' ? s.body : undefined;
    }, 15_000, 'the deletion');
    assert.equal(status.status, 'complete', JSON.stringify(status));
    assert.deepEqual(status.shutdown_room.kicked_users.sort(), [alice.userId, bob.userId].sort());
    assert.deepEqual(status.shutdown_room.failed_to_kick_users, []);
    const newRoom = status.shutdown_room.new_room_id as string;
    assert.match(newRoom, /^!/);
    const byRoom = await get(`${A}/v2/rooms/${enc(room)}/delete_status`, admin);
    assert.equal(byRoom.body.results[0].delete_id, deleteId);
    // Rows: none left in the engine's tables.
    const left = await db.query(
      `SELECT (SELECT count(*) FROM rooms WHERE room_id = $1)::int AS rooms,
              (SELECT count(*) FROM events e WHERE e.json LIKE '%' || $1 || '%')::int AS events,
              (SELECT count(*) FROM room_aliases WHERE room_id = $1)::int AS aliases`, [room]);
    assert.deepEqual(left.rows[0], { rooms: 0, events: 0, aliases: 0 });
    assert.deepEqual((await db.query(derived, [room])).rows[0], { receipts: 0, push_events: 0, push_actions: 0 });
    // Gone from every member's sync (an initial sync), and the members are in the new room.
    for (const who of [alice, bob]) {
      const s = await get(`${C}/sync`, who);
      assert.equal(s.body.rooms?.join?.[room], undefined);
      assert.equal(s.body.rooms?.leave?.[room], undefined);
      assert.equal(s.body.rooms?.invite?.[room], undefined);
      assert.ok(s.body.rooms.join[newRoom], `${who.userId} is in the new room`);
    }
    assert.equal((await get(`${A}/v1/rooms/${enc(room)}`, admin)).status, 404);
    // Blocked: it cannot be joined again (or re-created by its id).
    assert.deepEqual((await get(`${A}/v1/rooms/${enc(room)}/block`, admin)).body, { block: true, user_id: admin.userId });
    assert.equal((await send('POST', `${C}/join/${enc(room)}`, bob, {})).status, 403);
    const entries = await auditEntries(db, 'room.delete', room);
    assert.equal(entries.length, 1);
    assert.equal((entries[0]!.details as { purge: boolean }).purge, true);
    // The failed attempts before (403 denied by the guard, 400s) wrote no room.delete entry.
  });

  test('v1 delete answers when done; without purge the room stays, empty of local members', async () => {
    const room = rooms[0]!;
    const denied = await send('DELETE', `${A}/v1/rooms/${enc(room)}`, support, { purge: false });
    assert.equal(denied.status, 403);
    const r = await send('DELETE', `${A}/v1/rooms/${enc(room)}`, admin, { purge: false });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.kicked_users, [alice.userId]);
    assert.equal(r.body.new_room_id, null);
    const d = await get(`${A}/v1/rooms/${enc(room)}`, admin);
    assert.equal(d.status, 200);
    assert.equal(d.body.joined_members, 0);
    assert.equal((await auditEntries(db, 'room.delete', room)).length, 1);
  });
});
