// Room upgrades over raw HTTP: permission and version checks, the replacement room's create event
// and copied state, bans, aliases, directory, the old room's tombstone and power levels, and the
// members' tags, DM marks and push rules following the room.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, type Credentials, roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('room upgrades', () => {
  let server: TestServer;
  let alice: Credentials;
  let bob: Credentials;
  let carol: Credentials;
  const { call, room, create } = roomApi(() => server.baseUrl);
  const state = async (who: Credentials, rid: string, type: string, key = '') => {
    const res = await call('GET', `${room(rid)}/state/${type}/${encodeURIComponent(key)}`, { token: who.accessToken });
    return res.status === 200 ? res.body : undefined;
  };
  const upgrade = (who: Credentials, rid: string, body: unknown) => call('POST', `${room(rid)}/upgrade`, { token: who.accessToken, body });
  const stateEvents = async (who: Credentials, rid: string) => (await call('GET', `${room(rid)}/state`, { token: who.accessToken })).body as Array<{ type: string; state_key: string; content: Record<string, unknown> }>;

  before(async () => {
    server = await startServer({ env: { AUTO_JOIN_ROOMS: '' } });
    alice = await registerUser(server.baseUrl);
    bob = await registerUser(server.baseUrl);
    carol = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test('bad requests are refused and change nothing', async () => {
    const rid = await create(alice, { preset: 'public_chat' });
    await call('POST', `${C}/join/${encodeURIComponent(rid)}`, { token: bob.accessToken });
    const before = await stateEvents(alice, rid);
    const cases: Array<[Credentials, string, unknown, number, string]> = [
      [alice, rid, { new_version: '99' }, 400, 'M_UNSUPPORTED_ROOM_VERSION'],
      [alice, rid, { new_version: '13' }, 400, 'M_UNSUPPORTED_ROOM_VERSION'],
      [alice, rid, {}, 400, 'M_MISSING_PARAM'],
      [alice, rid, { new_version: 11 }, 400, 'M_BAD_JSON'],
      [bob, rid, { new_version: '11' }, 403, 'M_FORBIDDEN'],
      [carol, rid, { new_version: '11' }, 403, 'M_FORBIDDEN'],
      [alice, '!unknown:localhost', { new_version: '11' }, 404, 'M_NOT_FOUND'],
      [alice, 'garbage', { new_version: '11' }, 400, 'M_INVALID_PARAM'],
    ];
    for (const [who, target, body, status, errcode] of cases) {
      const res = await upgrade(who, target, body);
      assert.equal(res.status, status, `${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errcode, errcode, JSON.stringify(body));
    }
    assert.deepEqual((await stateEvents(alice, rid)).map((e) => e.type).sort(), before.map((e) => e.type).sort());
    assert.equal(await state(alice, rid, 'm.room.tombstone'), undefined);
    assert.equal((await call('POST', `${room(rid)}/upgrade`, { body: { new_version: '11' } })).status, 401);
  });

  test('the replacement room carries the state, aliases, bans and members’ settings over', async () => {
    const old = await create(alice, {
      visibility: 'public', preset: 'public_chat', room_alias_name: 'upgrade-me', name: 'Old name', topic: 'Old topic',
      power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 50 } },
      initial_state: [
        { type: 'm.room.avatar', content: { url: 'mxc://localhost/pic' } },
        { type: 'm.room.guest_access', content: { guest_access: 'forbidden' } },
        { type: 'm.room.server_acl', content: { allow: ['*'], deny: ['evil.example'], allow_ip_literals: false } },
        { type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } },
        { type: 'org.example.custom', content: { stays: true } },
      ],
    });
    await call('POST', `${C}/join/${encodeURIComponent(old)}`, { token: bob.accessToken });
    await call('POST', `${room(old)}/ban`, { token: alice.accessToken, body: { user_id: carol.userId, reason: 'spam' } });
    await call('PUT', `${C}/user/${encodeURIComponent(alice.userId)}/rooms/${encodeURIComponent(old)}/tags/u.work`, { token: alice.accessToken, body: { order: 0.5 } });
    await call('PUT', `${C}/user/${encodeURIComponent(bob.userId)}/account_data/m.direct`, { token: bob.accessToken, body: { [alice.userId]: [old] } });
    await call('PUT', `${C}/pushrules/global/room/${encodeURIComponent(old)}`, { token: alice.accessToken, body: { actions: [] } });
    const oldPl = await state(alice, old, 'm.room.power_levels');

    const res = await upgrade(alice, old, { new_version: '11' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const neu = res.body.replacement_room as string;
    assert.match(neu, /^!.+:localhost$/);
    assert.notEqual(neu, old);

    const createEv = await call('GET', `${room(neu)}/state/m.room.create/?format=event`, { token: alice.accessToken });
    assert.equal(createEv.body.content.room_version, '11');
    assert.equal(createEv.body.content.predecessor.room_id, old);
    assert.match(createEv.body.content.predecessor.event_id, /^\$/);
    assert.equal(createEv.body.content.creator, undefined, 'v11 has no creator');
    assert.equal(createEv.body.sender, alice.userId);

    assert.equal((await state(alice, neu, 'm.room.name')).name, 'Old name');
    assert.equal((await state(alice, neu, 'm.room.topic')).topic, 'Old topic');
    assert.equal((await state(alice, neu, 'm.room.avatar')).url, 'mxc://localhost/pic');
    assert.equal((await state(alice, neu, 'm.room.join_rules')).join_rule, 'public');
    assert.equal((await state(alice, neu, 'm.room.history_visibility')).history_visibility, 'shared');
    assert.equal((await state(alice, neu, 'm.room.guest_access')).guest_access, 'forbidden');
    assert.deepEqual((await state(alice, neu, 'm.room.server_acl')).deny, ['evil.example']);
    assert.equal((await state(alice, neu, 'm.room.encryption')).algorithm, 'm.megolm.v1.aes-sha2');
    assert.equal(await state(alice, neu, 'org.example.custom'), undefined, 'only the transferable state');
    assert.deepEqual(await state(alice, neu, 'm.room.power_levels'), oldPl);
    assert.equal((await state(alice, neu, 'm.room.member', carol.userId)).membership, 'ban');
    assert.equal((await state(alice, neu, 'm.room.member', alice.userId)).membership, 'join');
    assert.equal(await state(alice, neu, 'm.room.member', bob.userId), undefined, 'members are not moved');

    // Aliases and the directory entry move.
    const resolved = await call('GET', `${C}/directory/room/${encodeURIComponent('#upgrade-me:localhost')}`);
    assert.equal(resolved.body.room_id, neu);
    assert.equal((await state(alice, neu, 'm.room.canonical_alias')).alias, '#upgrade-me:localhost');
    assert.equal((await state(alice, old, 'm.room.canonical_alias')).alias, undefined);
    assert.equal((await call('GET', `${C}/directory/list/room/${encodeURIComponent(neu)}`)).body.visibility, 'public');
    assert.equal((await call('GET', `${C}/directory/list/room/${encodeURIComponent(old)}`)).body.visibility, 'private');

    // The old room is tombstoned and ordinary members are silenced.
    const tomb = await call('GET', `${room(old)}/state/m.room.tombstone/?format=event`, { token: alice.accessToken });
    assert.deepEqual(tomb.body.content, { body: 'This room has been replaced', replacement_room: neu });
    assert.equal(tomb.body.sender, alice.userId);
    const restricted = await state(alice, old, 'm.room.power_levels');
    assert.equal(restricted.events_default, 50);
    assert.equal(restricted.invite, 50);
    const silenced = await call('PUT', `${room(old)}/send/m.room.message/${Math.random()}`, { token: carol.accessToken, body: { msgtype: 'm.text', body: 'hi' } });
    assert.equal(silenced.status, 403);
    // Bob (level 50) may still talk in the old room; a new member at level 0 may not.
    await call('PUT', `${room(old)}/send/m.room.message/${Math.random()}`, { token: bob.accessToken, body: { msgtype: 'm.text', body: 'moving' } });

    // Members' settings follow the room.
    const tags = await call('GET', `${C}/user/${encodeURIComponent(alice.userId)}/rooms/${encodeURIComponent(neu)}/tags`, { token: alice.accessToken });
    assert.deepEqual(tags.body.tags, { 'u.work': { order: 0.5 } });
    const direct = await call('GET', `${C}/user/${encodeURIComponent(bob.userId)}/account_data/m.direct`, { token: bob.accessToken });
    assert.deepEqual(direct.body[alice.userId], [old, neu]);
    const pushRule = await call('GET', `${C}/pushrules/global/room/${encodeURIComponent(neu)}`, { token: alice.accessToken });
    assert.equal(pushRule.status, 200);
    assert.deepEqual(pushRule.body.actions, []);

    // Bob can follow the tombstone.
    assert.equal((await call('POST', `${C}/join/${encodeURIComponent(neu)}`, { token: bob.accessToken })).status, 200);
  });

  test('an upgrader below the needed level is raised while copying, then put back', async () => {
    const rid = await create(alice, {
      preset: 'public_chat',
      power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 60 }, events: { 'm.room.tombstone': 60, 'm.room.server_acl': 100, 'm.room.power_levels': 100 } },
    });
    await call('POST', `${C}/join/${encodeURIComponent(rid)}`, { token: bob.accessToken });
    const res = await upgrade(bob, rid, { new_version: '10' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const neu = res.body.replacement_room;
    const pl = await state(bob, neu, 'm.room.power_levels');
    assert.equal(pl.users[bob.userId], 60, 'back to his old level');
    assert.equal(pl.users[alice.userId], 100);
    const createEv = await call('GET', `${room(neu)}/state/m.room.create/?format=event`, { token: bob.accessToken });
    assert.equal(createEv.body.content.creator, bob.userId, 'v10 names the creator');
    assert.equal(createEv.body.content.room_version, '10');
    // Bob could not change the old room's power levels (they need 100): the upgrade still succeeds.
    assert.equal((await state(bob, rid, 'm.room.tombstone')).replacement_room, neu);
    assert.equal((await state(bob, rid, 'm.room.power_levels')).events_default, 0);
  });

  test('a space stays a space, with its children', async () => {
    const space = await create(alice, { preset: 'public_chat', creation_content: { type: 'm.space' } });
    const child = await create(alice, { preset: 'public_chat' });
    await call('PUT', `${room(space)}/state/m.space.child/${encodeURIComponent(child)}`, { token: alice.accessToken, body: { via: ['localhost'] } });
    const gone = await create(alice, { preset: 'public_chat' });
    await call('PUT', `${room(space)}/state/m.space.child/${encodeURIComponent(gone)}`, { token: alice.accessToken, body: {} });
    const res = await upgrade(alice, space, { new_version: '11' });
    assert.equal(res.status, 200);
    const neu = res.body.replacement_room;
    const createEv = await call('GET', `${room(neu)}/state/m.room.create/?format=event`, { token: alice.accessToken });
    assert.equal(createEv.body.content.type, 'm.space');
    const children = (await stateEvents(alice, neu)).filter((e) => e.type === 'm.space.child');
    assert.deepEqual(children.map((e) => e.state_key), [child]);
  });
});
