// Moderation's pure parts (issue 9, mod9): ban ranges, policy globs, and the invite-spam rules with
// the refusal mode (the integration test runs the server in drop mode).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr } from '../../homeserver/moderation/ip-bans.ts';
import { globToRegExp } from '../../homeserver/moderation/policy-lists.ts';
import { InviteGuard, type InviteRules } from '../../homeserver/moderation/invite-guard.ts';
import { MatrixError } from '../../homeserver/http/errors.ts';

test('parseCidr normalises addresses and blocks, refuses the rest', () => {
  assert.equal(parseCidr('192.0.2.1')?.cidr, '192.0.2.1/32');
  assert.equal(parseCidr('10.0.0.0/8')?.cidr, '10.0.0.0/8');
  assert.equal(parseCidr('::ffff:192.0.2.7')?.cidr, '192.0.2.7/32');
  assert.equal(parseCidr('2001:DB8::/32')?.cidr, '2001:db8::/32');
  for (const bad of ['', 'x', '10.0.0.0/33', '2001:db8::/129', '10.0.0.0/8/1', '10.0.0.0/a', '300.1.1.1']) assert.equal(parseCidr(bad), undefined, bad);
});

test('policy globs: * and ? anchored, everything else literal', () => {
  assert.ok(globToRegExp('@spam*:example.org').test('@spammer:example.org'));
  assert.ok(!globToRegExp('@spam*:example.org').test('@spammer:example.org.evil'));
  assert.ok(globToRegExp('*.evil.com').test('a.evil.com'));
  assert.ok(!globToRegExp('*.evil.com').test('evilxcom'));
  assert.ok(globToRegExp('@u?:hs').test('@u1:hs'));
  assert.ok(!globToRegExp('@u?:hs').test('@u12:hs'));
  assert.ok(globToRegExp('a+b(c)[d]').test('a+b(c)[d]'));
});

function guard(rules: Partial<InviteRules>, o: { ageMs?: number; shared?: boolean; exempt?: boolean; taken?: boolean } = {}) {
  const store = { takeInvite: async () => o.taken ?? true };
  const reader = { sharingARoom: async (_u: string, c: string[]) => new Set(o.shared ? c : []) };
  return new InviteGuard({ minAccountAgeHours: 0, requireSharedRoom: false, action: 'refuse', maxPerDay: 0, ...rules },
    store as never, reader as never, async () => Date.now() - (o.ageMs ?? 0), async () => o.exempt ?? false);
}

const refused = (err: unknown) => err instanceof MatrixError && err.status === 403 && /Invite refused/.test(err.message);

test('invite rules: young and stranger invites refused (or dropped), exempt users pass, the daily cap is 429', async () => {
  await assert.rejects(guard({ minAccountAgeHours: 1 }, { ageMs: 60_000 }).check('@a:hs', '@b:hs'), refused);
  assert.equal(await guard({ minAccountAgeHours: 1 }, { ageMs: 2 * 3_600_000 }).check('@a:hs', '@b:hs'), 'allow');
  await assert.rejects(guard({ requireSharedRoom: true }).check('@a:hs', '@b:hs'), refused);
  assert.equal(await guard({ requireSharedRoom: true }, { shared: true }).check('@a:hs', '@b:hs'), 'allow');
  assert.equal(await guard({ requireSharedRoom: true, action: 'drop' }).check('@a:hs', '@b:hs'), 'drop');
  assert.equal(await guard({ requireSharedRoom: true, minAccountAgeHours: 1 }, { exempt: true }).check('@a:hs', '@b:hs'), 'allow');
  await assert.rejects(guard({ maxPerDay: 3 }, { taken: false }).check('@a:hs', '@b:hs'), (e: unknown) => e instanceof MatrixError && e.status === 429 && e.errcode === 'M_LIMIT_EXCEEDED');
  assert.equal(await guard({}).check('@a:hs', '@b:hs'), 'allow');
});
