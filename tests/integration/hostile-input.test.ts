// Hostile input answers the spec's error and changes nothing (issue 5, findings 6, 8, 9, 10):
// what canonical JSON cannot encode or PostgreSQL cannot store is refused at the edge, the PDU size
// limits hold, reads survive odd events stored before the edge refused them, createRoom's lists
// are bounded and one alias goes to one room.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, roomApi, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';

const C = '/_matrix/client/v3';
const nested = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;

describe('hostile input', () => {
  let server: TestServer;
  let alice: Credentials & { password: string };
  let roomId: string;
  const { call, room, create, send } = roomApi(() => server.baseUrl);
  const u = (userId: string) => encodeURIComponent(userId);

  /** A request with a body of raw bytes (invalid UTF-8 cannot travel in a JS string). */
  const rawBytes = async (method: string, path: string, token: string, bytes: Uint8Array) => {
    const res = await fetch(server.baseUrl + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: bytes });
    return { status: res.status, body: await res.json() as { errcode?: string; error?: string } };
  };
  function expectError(res: { status: number; body: any }, status: number, errcode: string, what = ''): void {
    assert.equal(res.status, status, `${what}: ${JSON.stringify(res.body)?.slice(0, 300)}`);
    assert.equal(res.body.errcode, errcode, what);
    assert.equal(typeof res.body.error, 'string');
  }
  const messages = async (rid = roomId) => {
    const r = await call('GET', `${room(rid)}/messages?dir=b&limit=1000`, { token: alice.accessToken });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body.chunk as Array<{ type: string; content: Record<string, unknown> }>).filter((e) => e.type === 'm.room.message');
  };
  const joinedRooms = async () => (await call('GET', `${C}/joined_rooms`, { token: alice.accessToken })).body.joined_rooms as string[];

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
    roomId = await create(alice, { name: 'hostile' });
  });
  after(() => server?.stop());

  test('event content: floats, unsafe integers, NUL, lone surrogates, deep nesting, invalid UTF-8 are refused and nothing is stored', async () => {
    const path = (txn: string) => `${room(roomId)}/send/m.room.message/${txn}`;
    const bad: Array<[string, string, string]> = [
      ['float', '{"msgtype":"m.text","body":"x","f":1.5}', 'M_BAD_JSON'],
      ['1.0 written as a float', '{"msgtype":"m.text","body":"x","f":1.0}', 'M_BAD_JSON'],
      ['exponent', '{"msgtype":"m.text","body":"x","f":1e3}', 'M_BAD_JSON'],
      ['integer beyond 2^53-1', '{"msgtype":"m.text","body":"x","n":9007199254740992}', 'M_BAD_JSON'],
      ['negative integer beyond', '{"msgtype":"m.text","body":"x","n":-99999999999999999999}', 'M_BAD_JSON'],
      ['NUL in a string', '{"msgtype":"m.text","body":"a\\u0000b"}', 'M_BAD_JSON'],
      ['NUL in a key', '{"msgtype":"m.text","body":"x","k\\u0000":1}', 'M_BAD_JSON'],
      ['lone surrogate', '{"msgtype":"m.text","body":"\\ud800"}', 'M_BAD_JSON'],
      ['10k-deep nesting', `{"msgtype":"m.text","body":"x","deep":${nested(10_000)}}`, 'M_BAD_JSON'],
      ['not JSON', '{"msgtype":', 'M_NOT_JSON'],
    ];
    for (const [what, text, errcode] of bad) {
      expectError(await call('PUT', path(`bad-${what}`), { token: alice.accessToken, rawBody: text, headers: { 'content-type': 'application/json' } }), 400, errcode, what);
    }
    const invalidUtf8 = Buffer.concat([Buffer.from('{"msgtype":"m.text","body":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]);
    expectError(await rawBytes('PUT', path('bad-utf8'), alice.accessToken, invalidUtf8), 400, 'M_NOT_JSON', 'invalid UTF-8');
    // The same for state events and room creation content.
    expectError(await call('PUT', `${room(roomId)}/state/m.room.topic`, { token: alice.accessToken, rawBody: '{"topic":"t","x":0.5}' }), 400, 'M_BAD_JSON', 'float in state');
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, rawBody: '{"creation_content":{"x":0.5}}' }), 400, 'M_BAD_JSON', 'float in createRoom');
    // Valid UTF-8 and integers at the limit pass.
    const ok = await call('PUT', path('ok-1'), { token: alice.accessToken, body: { msgtype: 'm.text', body: 'héllo 🎉', n: 9007199254740991, m: -9007199254740991 } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const stored = await messages();
    assert.equal(stored.length, 1, 'only the valid message was stored');
    assert.equal(stored[0]!.content.body, 'héllo 🎉');
  });

  test('event type and state key over 255 bytes: 413 M_TOO_LARGE, as Synapse; 255 bytes pass', async () => {
    const before = (await messages()).length;
    const long = 'm.' + 'x'.repeat(254); // 256 bytes
    const longMultibyte = 'é'.repeat(128); // 256 bytes in 128 characters
    expectError(await call('PUT', `${room(roomId)}/send/${long}/t1`, { token: alice.accessToken, body: { body: 'x' } }), 413, 'M_TOO_LARGE', 'type');
    expectError(await call('PUT', `${room(roomId)}/send/${encodeURIComponent(longMultibyte)}/t2`, { token: alice.accessToken, body: { body: 'x' } }), 413, 'M_TOO_LARGE', 'multibyte type');
    expectError(await call('PUT', `${room(roomId)}/state/m.custom/${'k'.repeat(256)}`, { token: alice.accessToken, body: { a: 1 } }), 413, 'M_TOO_LARGE', 'state_key');
    expectError(await call('PUT', `${room(roomId)}/state/${long}/k`, { token: alice.accessToken, body: { a: 1 } }), 413, 'M_TOO_LARGE', 'state type');
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { initial_state: [{ type: 'm.custom', state_key: 'k'.repeat(256), content: {} }] } }), 413, 'M_TOO_LARGE', 'initial_state');
    expectError(await call('PUT', `${room(roomId)}/send/m.room.message/${'t'.repeat(256)}`, { token: alice.accessToken, body: { body: 'x' } }), 400, 'M_INVALID_PARAM', 'transaction id');
    const state = await call('GET', `${room(roomId)}/state`, { token: alice.accessToken });
    assert.ok(!state.body.some((e: { state_key: string; type: string }) => e.state_key.length > 255 || e.type.length > 255));
    assert.equal((await messages()).length, before);
    // Exactly 255 bytes is allowed.
    const ok = await call('PUT', `${room(roomId)}/state/m.custom/${'k'.repeat(255)}`, { token: alice.accessToken, body: { a: 1 } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const okType = await call('PUT', `${room(roomId)}/send/${'m.' + 'y'.repeat(253)}/t3`, { token: alice.accessToken, body: { body: 'x' } });
    assert.equal(okType.status, 200, JSON.stringify(okType.body));
  });

  test('NUL anywhere a client can put it: display name, device name, account-data type, login user, directory term, filters, parameters', async () => {
    const t = alice.accessToken;
    const nul = 'a\u0000b';
    expectError(await call('PUT', `${C}/profile/${u(alice.userId)}/displayname`, { token: t, body: { displayname: nul } }), 400, 'M_BAD_JSON', 'display name');
    expectError(await call('PUT', `${C}/devices/${alice.deviceId}`, { token: t, body: { display_name: nul } }), 400, 'M_BAD_JSON', 'device name');
    expectError(await call('PUT', `${C}/user/${u(alice.userId)}/account_data/a%00b`, { token: t, body: { a: 1 } }), 400, 'M_INVALID_PARAM', 'account-data type');
    expectError(await call('GET', `${C}/user/${u(alice.userId)}/account_data/a%00b`, { token: t }), 400, 'M_INVALID_PARAM', 'account-data type (GET)');
    expectError(await call('PUT', `${C}/user/${u(alice.userId)}/account_data/m.x`, { token: t, body: { [nul]: 1 } }), 400, 'M_BAD_JSON', 'account-data key');
    const longType = Array.from({ length: 5000 }, () => Math.random().toString(36).slice(2, 3)).join('');
    expectError(await call('PUT', `${C}/user/${u(alice.userId)}/account_data/${longType}`, { token: t, body: { a: 1 } }), 400, 'M_INVALID_PARAM', 'account-data type over 255 bytes');
    expectError(await call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: nul }, password: 'x' } }), 400, 'M_BAD_JSON', 'login user');
    expectError(await call('POST', `${C}/user_directory/search`, { token: t, body: { search_term: nul } }), 400, 'M_BAD_JSON', 'user directory term');
    expectError(await call('POST', `${C}/publicRooms`, { token: t, body: { filter: { generic_search_term: nul } } }), 400, 'M_BAD_JSON', 'room directory term');
    expectError(await call('GET', `${C}/publicRooms?since=a%00b`, { token: t }), 400, 'M_INVALID_PARAM', 'query parameter');
    expectError(await call('POST', `${C}/user/${u(alice.userId)}/filter`, { token: t, body: { room: { timeline: { types: [nul] } } } }), 400, 'M_BAD_JSON', 'stored filter');
    const inline = encodeURIComponent('{"room":{"timeline":{"types":["a\\u0000b"]}}}');
    expectError(await call('GET', `${C}/sync?filter=${inline}`, { token: t }), 400, 'M_BAD_JSON', 'inline sync filter');
    const roomFilter = encodeURIComponent('{"types":["a\\u0000b"]}');
    expectError(await call('GET', `${room(roomId)}/messages?limit=5`, { token: t }), 400, 'M_MISSING_PARAM', '/messages without dir (required since v1.19)');
    expectError(await call('GET', `${room(roomId)}/messages?dir=b&filter=${roomFilter}`, { token: t }), 400, 'M_BAD_JSON', 'inline room filter');
    expectError(await call('GET', `${room(roomId)}/messages?dir=b&filter=${encodeURIComponent('{"senders":["\\ud800"]}')}`, { token: t }), 400, 'M_BAD_JSON', 'lone surrogate in a filter');
    // Nothing changed.
    const dev = await call('GET', `${C}/devices/${alice.deviceId}`, { token: t });
    assert.equal(dev.body.display_name, 'test');
    const profile = await call('GET', `${C}/profile/${u(alice.userId)}`, { token: t });
    assert.ok(!String(profile.body.displayname ?? '').includes('\u0000'));
  });

  test('stream tokens and filter ids beyond the database integer range: 400 M_INVALID_PARAM / 404 M_NOT_FOUND', async () => {
    const t = alice.accessToken;
    const huge = '99999999999999999999999';
    expectError(await call('GET', `${C}/sync?since=s${huge}`, { token: t }), 400, 'M_INVALID_PARAM', 'since');
    expectError(await call('GET', `${C}/sync?since=s1_${huge}`, { token: t }), 400, 'M_INVALID_PARAM', 'since part');
    expectError(await call('GET', `${room(roomId)}/messages?from=s${huge}&dir=b`, { token: t }), 400, 'M_INVALID_PARAM', 'from');
    expectError(await call('GET', `${room(roomId)}/messages?from=s1&to=s${huge}&dir=f`, { token: t }), 400, 'M_INVALID_PARAM', 'to');
    expectError(await call('GET', `${room(roomId)}/members?at=s${huge}`, { token: t }), 400, 'M_INVALID_PARAM', 'at');
    expectError(await call('GET', `${C}/sync?filter=${huge}`, { token: t }), 400, 'M_INVALID_PARAM', 'sync filter id');
    expectError(await call('GET', `${C}/sync?filter=9223372036854775808`, { token: t }), 400, 'M_INVALID_PARAM', 'sync filter id 2^63');
    expectError(await call('GET', `${C}/user/${u(alice.userId)}/filter/${huge}`, { token: t }), 404, 'M_NOT_FOUND', 'filter id');
    expectError(await call('GET', `${C}/user/${u(alice.userId)}/filter/9223372036854775807`, { token: t }), 404, 'M_NOT_FOUND', 'filter id 2^63-1');
    // Within range, unknown: the same errors; a real position still works.
    expectError(await call('GET', `${C}/sync?filter=12345678`, { token: t }), 400, 'M_INVALID_PARAM', 'unknown filter id');
    const ok = await call('GET', `${C}/sync?since=s9007199254740991&timeout=0`, { token: t });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test('10k-deep account data and a filter with 70k types are refused with M_BAD_JSON; a float is refused but tag order takes one', async () => {
    const t = alice.accessToken;
    expectError(await call('PUT', `${C}/user/${u(alice.userId)}/account_data/m.deep`, { token: t, rawBody: nested(10_000) }), 400, 'M_BAD_JSON', 'deep account data');
    expectError(await call('GET', `${C}/user/${u(alice.userId)}/account_data/m.deep`, { token: t }), 404, 'M_NOT_FOUND', 'nothing stored');
    const types = Array.from({ length: 70_000 }, (_, i) => `t${i}`);
    expectError(await call('POST', `${C}/user/${u(alice.userId)}/filter`, { token: t, body: { room: { timeline: { types } } } }), 400, 'M_BAD_JSON', '70k types');
    // A thousand types are fine, stored and applied.
    const fine = await call('POST', `${C}/user/${u(alice.userId)}/filter`, { token: t, body: { room: { timeline: { types: types.slice(0, 999).concat('m.room.message') } } } });
    assert.equal(fine.status, 200, JSON.stringify(fine.body));
    const synced = await call('GET', `${C}/sync?filter=${fine.body.filter_id}`, { token: t });
    assert.equal(synced.status, 200, JSON.stringify(synced.body));
    const events = synced.body.rooms.join[roomId].timeline.events as Array<{ type: string }>;
    assert.ok(events.length > 0 && events.every((e) => e.type === 'm.room.message'));
    expectError(await call('PUT', `${C}/user/${u(alice.userId)}/account_data/m.f`, { token: t, rawBody: '{"x":0.5}' }), 400, 'M_BAD_JSON', 'float account data');
    const tag = await call('PUT', `${C}/user/${u(alice.userId)}/rooms/${encodeURIComponent(roomId)}/tags/m.favourite`, { token: t, rawBody: '{"order":0.25}' });
    assert.equal(tag.status, 200, JSON.stringify(tag.body));
    const tags = await call('GET', `${C}/user/${u(alice.userId)}/rooms/${encodeURIComponent(roomId)}/tags`, { token: t });
    assert.deepEqual(tags.body.tags, { 'm.favourite': { order: 0.25 } });
  });

  test('an event stored with NUL or a lone surrogate before the edge refused them does not break /messages or /sync with contains_url', async () => {
    const rid = await create(alice, { name: 'odd' });
    await send(alice, rid, 'plain');
    const withUrl = await call('PUT', `${room(rid)}/send/m.room.message/url1`, { token: alice.accessToken, body: { msgtype: 'm.image', body: 'pic', url: 'mxc://localhost/abc' } });
    assert.equal(withUrl.status, 200);
    const oddNul = await send(alice, rid, 'MARK-NUL');
    const oddSurrogate = await send(alice, rid, 'MARK-SURROGATE');
    // Plant what older versions stored: \u0000 and a lone surrogate escape in the JSON, and rows
    // from before the contains_url column (NULL).
    const db = await connectDatabase(server);
    try {
      await db.query(`UPDATE events SET json = replace(json, 'MARK-NUL', 'a\\u0000b') WHERE event_id = $1`, [oddNul]);
      await db.query(`UPDATE events SET json = replace(json, 'MARK-SURROGATE', '\\ud800') WHERE event_id = $1`, [oddSurrogate]);
      const hasColumn = await db.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'contains_url'");
      if (hasColumn.rows.length) await db.query('UPDATE events SET contains_url = NULL WHERE room_nid = (SELECT room_nid FROM rooms WHERE room_id = $1)', [rid]);
    } finally {
      await db.end();
    }
    for (const containsUrl of [true, false]) {
      const filter = encodeURIComponent(JSON.stringify({ contains_url: containsUrl }));
      const res = await call('GET', `${room(rid)}/messages?dir=b&limit=50&filter=${filter}`, { token: alice.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const bodies = (res.body.chunk as Array<{ type: string; content: { body?: string } }>).filter((e) => e.type === 'm.room.message').map((e) => e.content.body);
      assert.deepEqual(bodies, containsUrl ? ['pic'] : ['\ud800', 'a\u0000b', 'plain']);
      const syncFilter = encodeURIComponent(JSON.stringify({ room: { rooms: [rid], timeline: { contains_url: containsUrl, limit: 50 } } }));
      const synced = await call('GET', `${C}/sync?filter=${syncFilter}`, { token: alice.accessToken });
      assert.equal(synced.status, 200, JSON.stringify(synced.body));
      const timeline = (synced.body.rooms.join[rid].timeline.events as Array<{ type: string; content: { body?: string } }>).filter((e) => e.type === 'm.room.message');
      assert.equal(timeline.length, containsUrl ? 1 : 3);
    }
    // New events carry the column: the filter does not need the JSON at all.
    const fresh = await call('PUT', `${room(rid)}/send/m.room.message/url2`, { token: alice.accessToken, body: { msgtype: 'm.file', body: 'file', url: 'mxc://localhost/def' } });
    assert.equal(fresh.status, 200);
    const res = await call('GET', `${room(rid)}/messages?dir=b&filter=${encodeURIComponent('{"contains_url":true}')}`, { token: alice.accessToken });
    assert.deepEqual(res.body.chunk.map((e: { content: { body: string } }) => e.content.body), ['file', 'pic']);
  });

  test('createRoom: more than 100 invites or 100 initial_state entries is refused and creates nothing', async () => {
    const before = await joinedRooms();
    const invite = Array.from({ length: 101 }, (_, i) => `@nobody${i}:localhost`);
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { invite } }), 400, 'M_BAD_JSON', 'invites');
    const initial_state = Array.from({ length: 101 }, (_, i) => ({ type: 'm.custom', state_key: `k${i}`, content: {} }));
    expectError(await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { initial_state } }), 400, 'M_BAD_JSON', 'initial_state');
    assert.deepEqual(await joinedRooms(), before);
    const ok = await call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { invite: invite.slice(0, 20), initial_state: initial_state.slice(0, 20) } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  test('ten concurrent createRoom with one room_alias_name: one room, nine M_ROOM_IN_USE, no room left pointing elsewhere', async () => {
    const before = await joinedRooms();
    const name = `race${Date.now()}`;
    const results = await Promise.all(Array.from({ length: 10 }, () =>
      call('POST', `${C}/createRoom`, { token: alice.accessToken, body: { room_alias_name: name, name: 'race' } })));
    const won = results.filter((r) => r.status === 200);
    assert.equal(won.length, 1, JSON.stringify(results.map((r) => [r.status, r.body])));
    for (const r of results.filter((x) => x.status !== 200)) expectError(r, 400, 'M_ROOM_IN_USE', 'loser');
    const after = await joinedRooms();
    assert.deepEqual(after.filter((r) => !before.includes(r)), [won[0]!.body.room_id], 'exactly one new room');
    const alias = `#${name}:${server.serverName}`;
    const resolved = await call('GET', `${C}/directory/room/${encodeURIComponent(alias)}`);
    assert.equal(resolved.body.room_id, won[0]!.body.room_id);
    const canonical = await call('GET', `${room(won[0]!.body.room_id)}/state/m.room.canonical_alias`, { token: alice.accessToken });
    assert.equal(canonical.body.alias, alias);
  });
});
