// Push rule evaluation (homeserver/push/evaluator.ts) against the spec's examples
// (client-server-api/modules/push.md, "Conditions") and the v1.19 default rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileCondition, compileRuleset, evaluate, EvalEvent, highlights, notifies, splitPath, type MemberContext, type RoomContext } from '../../homeserver/push/evaluator.ts';
import { defaultRules, normalize, putRule, type PushCondition } from '../../homeserver/push/rules.ts';

const ME = '@alice:example.org';
const room = (over: Partial<RoomContext> = {}): RoomContext => ({ memberCount: 5, senderPower: 0, powerLevels: { users: {}, notifications: { room: 50 } }, ...over });
const member: MemberContext = { userId: ME, displayName: 'Alice Liddell' };

function cond(c: PushCondition, event: Record<string, unknown>, r = room(), m = member): boolean {
  return compileCondition(c)(new EvalEvent(event), r, m);
}

function actionsFor(event: Record<string, unknown>, r = room(), rules = defaultRules(ME)) {
  return evaluate(compileRuleset(rules), new EvalEvent(event), r, member);
}

const msg = (content: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: 'm.room.message', sender: '@bob:example.org', room_id: '!r:example.org', event_id: '$e', content, ...extra,
});

test('event_match: the spec example (content.topic, lunc?*)', () => {
  const c = { kind: 'event_match', key: 'content.topic', pattern: 'lunc?*' };
  const ev = (topic: unknown) => ({ type: 'm.room.topic', state_key: '', content: { topic } });
  assert.equal(cond(c, ev('Lunch plans')), true);
  assert.equal(cond(c, ev('LUNCH')), true);
  assert.equal(cond(c, ev(' lunch')), false);
  assert.equal(cond(c, ev('lunc')), false);
  assert.equal(cond(c, ev(null)), false);
  assert.equal(cond({ kind: 'event_match', key: 'content.nothing', pattern: '*' }, ev('x')), false, 'absent property never matches, even *');
});

test('event_match on content.body matches at word boundaries (spec example ex*ple)', () => {
  const c = { kind: 'event_match', key: 'content.body', pattern: 'ex*ple' };
  assert.equal(cond(c, msg({ body: 'An example event.' })), true);
  assert.equal(cond(c, msg({ body: 'exple' })), true);
  assert.equal(cond(c, msg({ body: 'An exciting triple-whammy' })), true);
  assert.equal(cond(c, msg({ body: 'Anexample' })), false);
  assert.equal(cond({ kind: 'event_match', key: 'content.body', pattern: 'cake' }, msg({ body: 'cakes are nice' })), false);
  assert.equal(cond({ kind: 'event_match', key: 'content.body', pattern: 'cake' }, msg({ body: 'Cake!' })), true);
});

test('event_property_is: exact scalar match, no casting (spec example m.federate)', () => {
  const c = { kind: 'event_property_is', key: 'content.m\\.federate', value: true };
  const ev = (v: unknown) => ({ type: 'm.room.create', state_key: '', content: { 'm.federate': v } });
  assert.equal(cond(c, ev(true)), true);
  assert.equal(cond(c, ev('true')), false);
  assert.equal(cond(c, ev(1)), false);
  assert.equal(cond({ kind: 'event_property_is', key: 'content.x', value: null }, { content: { x: null } }), true);
  assert.equal(cond({ kind: 'event_property_is', key: 'content.x', value: null }, { content: {} }), false);
});

test('event_property_contains: exact array member (spec example alt_aliases)', () => {
  const c = { kind: 'event_property_contains', key: 'content.alt_aliases', value: '#myroom:example.com' };
  assert.equal(cond(c, { content: { alt_aliases: ['#somewhere:example.org', '#myroom:example.com'] } }), true);
  assert.equal(cond(c, { content: { alt_aliases: [':example.com'] } }), false);
  assert.equal(cond(c, { content: { alt_aliases: '#myroom:example.com' } }), false, 'not an array');
});

test('dot-separated paths: escaped dots and backslashes', () => {
  assert.deepEqual(splitPath('content.m\\.mentions.user_ids'), ['content', 'm.mentions', 'user_ids']);
  assert.deepEqual(splitPath('content.a\\\\b'), ['content', 'a\\b']);
});

test('room_member_count with each operator', () => {
  const at = (is: string, n: number) => cond({ kind: 'room_member_count', is }, msg({ body: 'x' }), room({ memberCount: n }));
  assert.equal(at('2', 2), true);
  assert.equal(at('==2', 3), false);
  assert.equal(at('<3', 2), true);
  assert.equal(at('<3', 3), false);
  assert.equal(at('>3', 4), true);
  assert.equal(at('<=3', 3), true);
  assert.equal(at('>=3', 2), false);
  assert.equal(at('~3', 3), false, 'a malformed comparison never matches');
});

test('sender_notification_permission compares with notifications.<key> (default 50)', () => {
  const c = { kind: 'sender_notification_permission', key: 'room' };
  assert.equal(cond(c, msg({}), room({ senderPower: 50 })), true);
  assert.equal(cond(c, msg({}), room({ senderPower: 49 })), false);
  assert.equal(cond(c, msg({}), room({ senderPower: 10, powerLevels: { notifications: { room: 10 } } })), true);
  assert.equal(cond(c, msg({}), room({ senderPower: 10, powerLevels: {} })), false);
});

test('contains_display_name: the display name as a word, case-insensitively', () => {
  const c = { kind: 'contains_display_name' };
  assert.equal(cond(c, msg({ body: 'hi alice liddell!' })), true);
  assert.equal(cond(c, msg({ body: 'hi alice' })), false);
  assert.equal(cond(c, msg({ body: 'hi Alice Liddell' }), room(), { userId: ME, displayName: undefined }), false);
  assert.equal(cond(c, msg({ body: 'a.b' }), room(), { userId: ME, displayName: 'a.b' }), true, 'regex characters are literal');
  assert.equal(cond(c, msg({ body: 'axb' }), room(), { userId: ME, displayName: 'a.b' }), false);
});

test('unknown condition kinds never match', () => {
  assert.equal(cond({ kind: 'org.example.custom' }, msg({ body: 'x' })), false);
});

test('default rules: a plain message notifies without highlight; a DM notifies with sound', () => {
  const plain = actionsFor(msg({ msgtype: 'm.text', body: 'hello' }));
  assert.equal(plain?.ruleId, '.m.rule.message');
  assert.ok(notifies(plain!.actions) && !highlights(plain!.actions));
  const dm = actionsFor(msg({ msgtype: 'm.text', body: 'hello' }), room({ memberCount: 2 }));
  assert.equal(dm?.ruleId, '.m.rule.room_one_to_one');
  const enc = actionsFor({ type: 'm.room.encrypted', sender: '@bob:example.org', content: {} }, room({ memberCount: 2 }));
  assert.equal(enc?.ruleId, '.m.rule.encrypted_room_one_to_one');
  assert.equal(actionsFor({ type: 'm.room.encrypted', sender: '@bob:example.org', content: {} })?.ruleId, '.m.rule.encrypted');
});

test('default rules: mentions highlight (m.mentions user_ids, room with permission)', () => {
  const mention = actionsFor(msg({ body: 'hey', 'm.mentions': { user_ids: [ME] } }));
  assert.equal(mention?.ruleId, '.m.rule.is_user_mention');
  assert.ok(highlights(mention!.actions));
  const roomMention = actionsFor(msg({ body: 'hey', 'm.mentions': { room: true } }), room({ senderPower: 100 }));
  assert.equal(roomMention?.ruleId, '.m.rule.is_room_mention');
  const noPower = actionsFor(msg({ body: 'hey', 'm.mentions': { room: true } }), room({ senderPower: 0 }));
  assert.equal(noPower?.ruleId, '.m.rule.message');
});

test('legacy body mention rules apply only without m.mentions', () => {
  const legacy = actionsFor(msg({ body: 'Alice Liddell: look' }));
  assert.equal(legacy?.ruleId, '.m.rule.contains_display_name');
  const intentional = actionsFor(msg({ body: 'Alice Liddell: look', 'm.mentions': {} }));
  assert.equal(intentional?.ruleId, '.m.rule.message', 'an event with m.mentions is judged by it alone');
  assert.equal(actionsFor(msg({ body: 'hi alice' }))?.ruleId, '.m.rule.contains_user_name');
});

test('default rules: suppressions, invites, tombstones, calls', () => {
  assert.deepEqual(actionsFor(msg({ msgtype: 'm.notice', body: 'bot' }))?.actions, []);
  assert.deepEqual(actionsFor({ type: 'm.reaction', sender: '@bob:example.org', content: {} })?.actions, []);
  assert.deepEqual(actionsFor({ type: 'm.room.server_acl', state_key: '', sender: '@bob:example.org', content: {} })?.actions, []);
  assert.deepEqual(actionsFor(msg({ body: '* x', 'm.relates_to': { rel_type: 'm.replace', event_id: '$o' } }))?.actions, []);
  const invite = actionsFor({ type: 'm.room.member', state_key: ME, sender: '@bob:example.org', content: { membership: 'invite' } });
  assert.equal(invite?.ruleId, '.m.rule.invite_for_me');
  assert.ok(notifies(invite!.actions));
  assert.equal(actionsFor({ type: 'm.room.member', state_key: '@carol:example.org', sender: '@bob:example.org', content: { membership: 'join' } })?.ruleId, '.m.rule.member_event');
  const tomb = actionsFor({ type: 'm.room.tombstone', state_key: '', sender: '@bob:example.org', content: {} });
  assert.equal(tomb?.ruleId, '.m.rule.tombstone');
  assert.ok(highlights(tomb!.actions));
  assert.equal(actionsFor({ type: 'm.room.tombstone', state_key: 'x', sender: '@bob:example.org', content: {} }), undefined, 'no implicit state_key');
  assert.equal(actionsFor({ type: 'm.call.invite', sender: '@bob:example.org', content: {} })?.ruleId, '.m.rule.call');
  assert.equal(actionsFor({ type: 'm.room.topic', state_key: '', sender: '@bob:example.org', content: {} }), undefined, 'no rule: no notification');
});

test('user rules: keywords (content), room and sender rules, master, disabled rules', () => {
  const rules = normalize(undefined, ME);
  putRule(rules, 'content', 'cake', { actions: ['notify', { set_tweak: 'highlight', value: false }], pattern: 'cake' });
  const kw = actionsFor(msg({ body: 'There is CAKE' }), room(), rules);
  assert.equal(kw?.ruleId, 'cake');
  assert.ok(notifies(kw!.actions) && !highlights(kw!.actions));
  putRule(rules, 'room', '!r:example.org', { actions: [] });
  assert.equal(actionsFor(msg({ body: 'hello' }), room(), rules)?.ruleId, '!r:example.org');
  putRule(rules, 'override', 'vip', { actions: ['notify', { set_tweak: 'highlight' }], conditions: [{ kind: 'event_match', key: 'sender', pattern: '@bob:*' }] });
  assert.equal(actionsFor(msg({ body: 'hello' }), room(), rules)?.ruleId, 'vip');
  rules.override.find((r) => r.rule_id === '.m.rule.master')!.enabled = true;
  assert.deepEqual(actionsFor(msg({ body: 'hello' }), room(), rules)?.actions, [], 'master outranks user overrides');
  const off = normalize(undefined, ME);
  off.underride.find((r) => r.rule_id === '.m.rule.message')!.enabled = false;
  assert.equal(actionsFor(msg({ body: 'hello' }), room(), off), undefined);
});

test('the same compiled rules answer differently per event (memoized per event only)', () => {
  const rules = compileRuleset(defaultRules(ME));
  const a = new EvalEvent(msg({ body: 'x' }));
  const b = new EvalEvent(msg({ msgtype: 'm.notice', body: 'x' }));
  assert.equal(evaluate(rules, a, room(), member)?.ruleId, '.m.rule.message');
  assert.equal(evaluate(rules, b, room(), member)?.ruleId, '.m.rule.suppress_notices');
  assert.equal(evaluate(rules, a, room(), member)?.ruleId, '.m.rule.message');
});

test('templates (rules shared between users) answer exactly as each user\'s own compiled rules', async () => {
  const { templateFor, evaluateTemplate } = await import('../../homeserver/push/evaluator.ts');
  const users = ['@alice:example.org', '@bob:example.org', '@a.b-c:example.org'];
  const custom = normalize(undefined, '@bob:example.org');
  putRule(custom, 'content', 'tea', { actions: ['notify', { set_tweak: 'highlight' }], pattern: 'tea' });
  putRule(custom, 'sender', '@carol:example.org', { actions: [] });
  const rulesOf = (u: string) => (u === '@bob:example.org' ? custom : defaultRules(u));
  assert.equal(templateFor(defaultRules(users[0]!), users[0]!), templateFor(defaultRules(users[2]!), users[2]!), 'default rules share one template');
  const events = [
    msg({ body: 'hello' }),
    msg({ body: 'tea time for alice' }),
    msg({ body: 'ping a.b-c and Bob' }),
    msg({ body: 'Alice Liddell look' }),
    msg({ body: 'x', 'm.mentions': { user_ids: ['@bob:example.org'] } }),
    msg({ body: 'alice', 'm.mentions': {} }),
    msg({ body: 'tea' }, { sender: '@carol:example.org' }),
    msg({ msgtype: 'm.notice', body: 'bob' }),
    { type: 'm.room.member', state_key: '@bob:example.org', sender: '@x:example.org', content: { membership: 'invite' } },
    { type: 'm.room.tombstone', state_key: '', sender: '@x:example.org', content: {} },
  ];
  for (const e of events) {
    for (const memberCount of [2, 5]) {
      const ev1 = new EvalEvent(e);
      const ev2 = new EvalEvent(e);
      for (const u of users) {
        const m = { userId: u, displayName: u === ME ? 'Alice Liddell' : undefined };
        const r = room({ memberCount });
        const want = evaluate(compileRuleset(rulesOf(u)), ev1, r, m);
        const got = evaluateTemplate(templateFor(rulesOf(u), u), ev2, r, m);
        assert.deepEqual(got?.ruleId, want?.ruleId, `${JSON.stringify(e)} for ${u}`);
      }
    }
  }
});
