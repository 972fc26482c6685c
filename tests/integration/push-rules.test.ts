// Push rules over raw HTTP: the default rule set, adding/moving/removing rules, enabled and
// actions, the errors of each bad request, and m.push_rules reaching /sync.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('push rules', () => {
  let server: TestServer;
  let alice: Credentials;
  const call = (method: string, path: string, opts: Parameters<typeof api>[3] = {}) => api(server.baseUrl, method, path, { token: alice.accessToken, ...opts });
  const rule = (kind: string, id: string) => `${C}/pushrules/global/${kind}/${encodeURIComponent(id)}`;
  const ids = async (kind: string) => ((await call('GET', `${C}/pushrules/`)).body.global[kind] as Array<{ rule_id: string }>).map((r) => r.rule_id);

  before(async () => {
    server = await startServer();
    alice = await registerUser(server.baseUrl);
  });
  after(() => server?.stop());

  test('the default rule set, in the spec order, with the user filled in', async () => {
    const res = await call('GET', `${C}/pushrules/`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const g = res.body.global;
    assert.deepEqual(g.override.map((r: { rule_id: string }) => r.rule_id), [
      '.m.rule.master', '.m.rule.suppress_notices', '.m.rule.invite_for_me', '.m.rule.member_event',
      '.m.rule.is_user_mention', '.m.rule.contains_display_name', '.m.rule.is_room_mention', '.m.rule.roomnotif',
      '.m.rule.tombstone', '.m.rule.reaction', '.m.rule.room.server_acl', '.m.rule.suppress_edits',
    ]);
    assert.deepEqual(g.underride.map((r: { rule_id: string }) => r.rule_id), [
      '.m.rule.call', '.m.rule.encrypted_room_one_to_one', '.m.rule.room_one_to_one', '.m.rule.message', '.m.rule.encrypted',
    ]);
    assert.deepEqual(g.room, []);
    assert.deepEqual(g.sender, []);
    const master = g.override[0];
    assert.deepEqual(master, { rule_id: '.m.rule.master', default: true, enabled: false, conditions: [], actions: [] });
    const invite = g.override.find((r: { rule_id: string }) => r.rule_id === '.m.rule.invite_for_me');
    assert.deepEqual(invite.conditions[2], { kind: 'event_match', key: 'state_key', pattern: alice.userId });
    const mention = g.override.find((r: { rule_id: string }) => r.rule_id === '.m.rule.is_user_mention');
    assert.deepEqual(mention.conditions, [{ kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: alice.userId }]);
    const localpart = alice.userId.slice(1, alice.userId.indexOf(':'));
    assert.deepEqual(g.content, [{ rule_id: '.m.rule.contains_user_name', default: true, enabled: true, pattern: localpart, actions: ['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }] }]);
    const global = await call('GET', `${C}/pushrules/global/`);
    assert.deepEqual(global.body, g);
    const underride = await call('GET', `${C}/pushrules/global/underride/`);
    assert.deepEqual(underride.body, g.underride, 'one kind, as Synapse serves it');
    assert.equal((await api(server.baseUrl, 'GET', `${C}/pushrules/`)).status, 401);
  });

  test('a single rule, its enabled flag and actions', async () => {
    const res = await call('GET', rule('override', '.m.rule.suppress_notices'));
    assert.equal(res.status, 200);
    assert.equal(res.body.rule_id, '.m.rule.suppress_notices');
    assert.deepEqual((await call('GET', `${rule('override', '.m.rule.master')}/enabled`)).body, { enabled: false });
    assert.deepEqual((await call('GET', `${rule('underride', '.m.rule.message')}/actions`)).body, { actions: ['notify'] });
    const missing = await call('GET', rule('override', 'nope'));
    assert.equal(missing.status, 404);
    assert.equal(missing.body.errcode, 'M_NOT_FOUND');
    const badKind = await call('GET', rule('sideways', 'nope'));
    assert.equal(badKind.status, 400);
    assert.equal(badKind.body.errcode, 'M_INVALID_PARAM');
  });

  test('server-default rules can be disabled and their actions changed, but not deleted or replaced', async () => {
    assert.equal((await call('PUT', `${rule('override', '.m.rule.master')}/enabled`, { body: { enabled: true } })).status, 200);
    assert.deepEqual((await call('GET', `${rule('override', '.m.rule.master')}/enabled`)).body, { enabled: true });
    assert.equal((await call('PUT', `${rule('underride', '.m.rule.message')}/actions`, { body: { actions: ['notify', 'dont_notify', { set_tweak: 'sound', value: 'bing' }] } })).status, 200);
    assert.deepEqual((await call('GET', `${rule('underride', '.m.rule.message')}/actions`)).body, { actions: ['notify', { set_tweak: 'sound', value: 'bing' }] }, 'historical actions are stripped');

    const del = await call('DELETE', rule('override', '.m.rule.master'));
    assert.equal(del.status, 400);
    assert.equal(del.body.errcode, 'M_INVALID_PARAM');
    const put = await call('PUT', rule('override', '.m.rule.mine'), { body: { actions: [] } });
    assert.equal(put.status, 400);
    assert.equal(put.body.errcode, 'M_INVALID_PARAM');
    const unknown = await call('PUT', `${rule('override', '.m.rule.unknown')}/enabled`, { body: { enabled: false } });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, 'M_NOT_FOUND');
    // The default rule is still there, still enabled (none of the refused requests changed it).
    assert.equal((await call('GET', rule('override', '.m.rule.master'))).body.enabled, true);
    assert.equal((await call('PUT', `${rule('override', '.m.rule.master')}/enabled`, { body: { enabled: false } })).status, 200);
  });

  test('user rules: created enabled, most important first, placed with before/after, updated', async () => {
    const body = (word: string) => ({ pattern: word, actions: ['notify'] });
    assert.equal((await call('PUT', rule('content', 'cake'), { body: body('cake') })).status, 200);
    assert.equal((await call('PUT', rule('content', 'pie'), { body: body('pie') })).status, 200);
    assert.deepEqual(await ids('content'), ['pie', 'cake', '.m.rule.contains_user_name']);
    assert.equal((await call('PUT', `${rule('content', 'tart')}?after=pie`, { body: body('tart') })).status, 200);
    assert.deepEqual(await ids('content'), ['pie', 'tart', 'cake', '.m.rule.contains_user_name']);
    assert.equal((await call('PUT', `${rule('content', 'scone')}?before=cake&after=pie`, { body: body('scone') })).status, 200);
    assert.deepEqual(await ids('content'), ['pie', 'tart', 'scone', 'cake', '.m.rule.contains_user_name'], 'before wins');
    const r = (await call('GET', rule('content', 'tart'))).body;
    assert.deepEqual(r, { rule_id: 'tart', default: false, enabled: true, pattern: 'tart', actions: ['notify'] });

    // Disabled stays disabled across an update.
    await call('PUT', `${rule('content', 'cake')}/enabled`, { body: { enabled: false } });
    assert.equal((await call('PUT', rule('content', 'cake'), { body: { pattern: 'cake*lie', actions: [] } })).status, 200);
    const cake = (await call('GET', rule('content', 'cake'))).body;
    assert.equal(cake.enabled, false);
    assert.equal(cake.pattern, 'cake*lie');
    assert.deepEqual(await ids('content'), ['cake', 'pie', 'tart', 'scone', '.m.rule.contains_user_name'], 'an update without before/after moves the rule first, as in Synapse');

    // Override rules come after the master rule; conditions are optional.
    assert.equal((await call('PUT', rule('override', 'beer'), { body: { conditions: [{ kind: 'event_match', key: 'content.body', pattern: 'beer' }, { kind: 'room_member_count', is: '<=10' }], actions: ['notify'] } })).status, 200);
    assert.equal((await call('PUT', rule('override', 'all'), { body: { actions: [] } })).status, 200);
    assert.deepEqual((await ids('override')).slice(0, 4), ['.m.rule.master', 'all', 'beer', '.m.rule.suppress_notices']);
    assert.deepEqual((await call('GET', rule('override', 'all'))).body.conditions, []);

    // Room and sender rules.
    const roomId = '!abc:localhost';
    assert.equal((await call('PUT', rule('room', roomId), { body: { actions: [] } })).status, 200);
    assert.deepEqual((await call('GET', rule('room', roomId))).body, { rule_id: roomId, default: false, enabled: true, actions: [] });
    assert.equal((await call('PUT', rule('sender', '@spam:localhost'), { body: { actions: [] } })).status, 200);
    assert.deepEqual(await ids('sender'), ['@spam:localhost']);

    assert.equal((await call('DELETE', rule('content', 'tart'))).status, 200);
    assert.deepEqual(await ids('content'), ['cake', 'pie', 'scone', '.m.rule.contains_user_name']);
    const gone = await call('DELETE', rule('content', 'tart'));
    assert.equal(gone.status, 404);
    assert.equal(gone.body.errcode, 'M_NOT_FOUND');
  });

  test('bad requests get their errcode and change nothing', async () => {
    const before = (await call('GET', `${C}/pushrules/`)).body;
    const cases: Array<[string, string, unknown, number, string]> = [
      ['PUT', rule('content', 'x'), { actions: ['notify'] }, 400, 'M_MISSING_PARAM'], // content without pattern
      ['PUT', rule('content', 'x'), { pattern: 'x' }, 400, 'M_MISSING_PARAM'], // no actions
      ['PUT', rule('content', 'x'), { pattern: 7, actions: [] }, 400, 'M_BAD_JSON'],
      ['PUT', rule('override', 'x'), { actions: ['explode'] }, 400, 'M_BAD_JSON'],
      ['PUT', rule('override', 'x'), { actions: 'notify' }, 400, 'M_BAD_JSON'],
      ['PUT', rule('override', 'x'), { actions: [], conditions: [{ key: 'type' }] }, 400, 'M_MISSING_PARAM'],
      ['PUT', rule('override', 'x'), { actions: [], conditions: [{ kind: 'event_match', key: 'type' }] }, 400, 'M_MISSING_PARAM'],
      ['PUT', rule('override', 'x'), { actions: [], conditions: 'all' }, 400, 'M_BAD_JSON'],
      ['PUT', rule('override', 'x'), { actions: [], conditions: [{ kind: 'room_member_count', is: 'lots' }] }, 400, 'M_BAD_JSON'],
      ['PUT', `${rule('content', 'x')}?before=nope`, { pattern: 'x', actions: [] }, 400, 'M_UNKNOWN'],
      ['PUT', `${rule('content', 'x')}?after=.m.rule.contains_user_name`, { pattern: 'x', actions: [] }, 400, 'M_UNKNOWN'],
      ['PUT', rule('nonsense', 'x'), { actions: [] }, 400, 'M_INVALID_PARAM'],
      ['PUT', rule('content', 'a/b'), { pattern: 'x', actions: [] }, 400, 'M_INVALID_PARAM'],
      ['PUT', `${rule('content', 'cake')}/enabled`, { enabled: 'yes' }, 400, 'M_BAD_JSON'],
      ['PUT', `${rule('content', 'cake')}/enabled`, {}, 400, 'M_MISSING_PARAM'],
      ['PUT', `${rule('content', 'cake')}/actions`, {}, 400, 'M_MISSING_PARAM'],
      ['PUT', `${rule('content', 'cake')}/actions`, { actions: [42] }, 400, 'M_BAD_JSON'],
      ['PUT', `${rule('content', 'nope')}/actions`, { actions: [] }, 404, 'M_NOT_FOUND'],
      ['DELETE', rule('nonsense', 'x'), undefined, 400, 'M_INVALID_PARAM'],
    ];
    for (const [method, path, body, status, errcode] of cases) {
      const res = await call(method, path, { body });
      assert.equal(res.status, status, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errcode, errcode, `${method} ${path} ${JSON.stringify(body)}`);
    }
    const notJson = await call('PUT', rule('content', 'x'), { rawBody: '{', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.equal(notJson.body.errcode, 'M_NOT_JSON');
    assert.deepEqual((await call('GET', `${C}/pushrules/`)).body, before);
  });

  test('push rules are the m.push_rules account data, in /sync and refused through the account data API', async () => {
    const bob = await registerUser(server.baseUrl);
    const sync = await api(server.baseUrl, 'GET', `${C}/sync`, { token: bob.accessToken });
    assert.equal(sync.status, 200);
    const ev = sync.body.account_data.events.find((e: { type: string }) => e.type === 'm.push_rules');
    assert.ok(ev, 'a new account has m.push_rules in its first sync');
    assert.equal(ev.content.global.override[0].rule_id, '.m.rule.master');

    const put = await api(server.baseUrl, 'PUT', `${C}/pushrules/global/sender/${encodeURIComponent('@x:localhost')}`, { token: bob.accessToken, body: { actions: [] } });
    assert.equal(put.status, 200);
    const next = await api(server.baseUrl, 'GET', `${C}/sync?since=${encodeURIComponent(sync.body.next_batch)}&timeout=0`, { token: bob.accessToken });
    const changed = next.body.account_data?.events?.find((e: { type: string }) => e.type === 'm.push_rules');
    assert.ok(changed, 'the change reaches the next sync');
    assert.deepEqual(changed.content.global.sender.map((r: { rule_id: string }) => r.rule_id), ['@x:localhost']);

    const direct = await api(server.baseUrl, 'PUT', `${C}/user/${encodeURIComponent(bob.userId)}/account_data/m.push_rules`, { token: bob.accessToken, body: { global: {} } });
    assert.equal(direct.status, 405);
    assert.equal(direct.body.errcode, 'M_BAD_JSON');
    const stored = await api(server.baseUrl, 'GET', `${C}/user/${encodeURIComponent(bob.userId)}/account_data/m.push_rules`, { token: bob.accessToken });
    assert.deepEqual(stored.body.global.sender.map((r: { rule_id: string }) => r.rule_id), ['@x:localhost']);
  });

  test('concurrent edits of one user are all kept', async () => {
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => call('PUT', rule('sender', `@c${i}:localhost`), { body: { actions: [] } })));
    for (const r of results) assert.equal(r.status, 200);
    const senders = await ids('sender');
    for (let i = 0; i < 8; i++) assert.ok(senders.includes(`@c${i}:localhost`), `@c${i} kept`);
  });
});
