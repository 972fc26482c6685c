// The admin dashboard (issue 12) in a real browser (Debian's Chromium through playwright-core)
// against a real server with 1,000 accounts: log in, find a user among them, change a role, suspend
// and restore, ban an address, triage a report, create a registration token, see the audit entries,
// watch the dashboard count a message a matrix-js-sdk client sends while it is open; a role's
// missing permission is not offered, and a 403 names the permission. A screenshot of each page at
// desktop (1280×800) and phone (390×844) width goes to test-output/admin-ui/. Issue 12 (userbans12): a
// timed user ban with a reason added on the Bans page, listed with its countdown, lifted.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.ts';
import { repoRoot, startServer, type TestServer } from '../helpers/server.ts';
import { makeClient, rawApi, stopClients } from '../helpers/client.ts';
import { adminCli, audit, createUser, loginToken } from '../helpers/admin.ts';
import { buildApps } from '../../homeserver/webui/build-ui.mjs';
import { SEED_SQL } from '../../bench/admin-users.ts';

const OUT = path.join(repoRoot, 'test-output', 'admin-ui');
const OWNER_PASSWORD = 'owner password 12345';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let server: TestServer;
let base: string;
let browser: Browser;
let page: Page;
let ownerToken: string;

before(async () => {
  await buildApps();
  fs.mkdirSync(OUT, { recursive: true });
  server = await startServer({ embedded: false, env: { AUTO_JOIN_ROOMS: '' } });
  base = server.baseUrl;
  const db = new pg.Client({ connectionString: server.env.DATABASE_URL });
  await db.connect();
  await db.query(SEED_SQL, [1000, Date.now()]);
  // Two of them registered under REGISTRATION_APPROVAL=on and wait in the approval queue.
  await db.query("UPDATE users SET approved = FALSE WHERE user_id IN ('@user8:localhost', '@user9:localhost')");
  await db.end();
  const made = await adminCli(server, ['create-user', 'boss', '--role', 'owner'], `${OWNER_PASSWORD}\n`);
  assert.equal(made.code, 0, made.stderr);
  ownerToken = await loginToken(base, 'boss', OWNER_PASSWORD);
  browser = await launchChromium();
  page = await browser.newPage({ viewport: DESKTOP });
  page.setDefaultTimeout(15_000);
});

after(async () => {
  stopClients();
  await browser?.close();
  await server?.stop();
});

async function shot(name: string): Promise<void> {
  // The action's toasts are dismissed first: the page itself is what the picture is for.
  const close = page.getByRole('button', { name: 'Close message', exact: true });
  for (let i = 0; i < 10 && (await close.count()) > 0; i++) await close.first().click({ timeout: 1000 }).catch(() => {});
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: path.join(OUT, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: path.join(OUT, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(DESKTOP);
}

/** Polls `check` (in this process, through the page's locators) until it holds. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`waited ${timeoutMs} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const textOf = async (testid: string) => (await page.getByTestId(testid).first().textContent({ timeout: 1000 }).catch(() => null)) ?? '';

/** Confirms the open dialog (typing the word it asks for, if any). */
async function confirm(typed?: string): Promise<void> {
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  if (typed) await page.getByTestId('confirm-typed').fill(typed);
  await page.getByTestId('confirm-ok').click();
  await dialog.waitFor({ state: 'hidden' });
}

async function logIn(user: string, password: string): Promise<void> {
  await page.goto(`${base}/admin/`);
  await page.getByLabel('User name or Matrix ID').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Pages' }).waitFor();
}

test('a wrong password gets a clear message; the owner logs in and sees every page', async () => {
  await page.goto(`${base}/admin/`);
  assert.match(await page.title(), /super-server admin/);
  assert.match(await page.getByTestId('server-version').textContent() ?? '', /^v1\.\d+$/);
  await shot('login');
  await page.getByLabel('User name or Matrix ID').fill('boss');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.textContent() ?? '', /Not allowed: .*(password|Invalid)/i);
  // By keyboard alone: the fields in order, Enter submits.
  await page.getByLabel('User name or Matrix ID').fill('');
  await page.getByLabel('User name or Matrix ID').focus();
  await page.keyboard.type('boss');
  await page.keyboard.press('Tab');
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type(OWNER_PASSWORD);
  await page.keyboard.press('Enter');
  await page.getByRole('navigation', { name: 'Pages' }).waitFor();
  const nav = await page.getByRole('navigation', { name: 'Pages' }).getByRole('link').allTextContents();
  assert.deepEqual(nav, ['Dashboard', 'Users', 'Roles', 'Rooms', 'Reports', 'Bans', 'Registration', 'Audit log', 'Server']);
  // A phone: the pages are behind the Menu button.
  await page.setViewportSize(PHONE);
  assert.equal(await page.getByRole('link', { name: 'Audit log' }).isVisible(), false);
  await page.getByRole('button', { name: 'Menu' }).click();
  await page.getByRole('link', { name: 'Audit log' }).click();
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Audit log' }).isVisible(), false, 'the menu closes after a choice');
  await page.setViewportSize(DESKTOP);
});

test('the dashboard counts a message a matrix-js-sdk client sends while it is open', async () => {
  await page.goto(`${base}/admin/#/dashboard`);
  await page.getByTestId('messages-30min').waitFor();
  assert.equal(await page.getByTestId('postgres-health').textContent(), 'up');
  assert.equal(await page.getByTestId('workers').textContent(), '1');
  const before = Number(await page.getByTestId('messages-30min').textContent());
  // 1,000 seeded (every 97th deactivated, not counted) and the owner.
  assert.equal(Number(await page.getByTestId('users-total').textContent()), 1000 - Math.floor(1000 / 97) + 1); // not the server's own account

  const sender = await createUser(base, ownerToken, 'chatter');
  const who = await rawApi(base, 'POST', '/_matrix/client/v3/login', undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'chatter' }, password: sender.password });
  const client = await makeClient(base, { userId: sender.userId, accessToken: who.body.access_token, deviceId: who.body.device_id });
  const { room_id: roomId } = await client.createRoom({ name: 'Dashboard room' });
  await client.sendTextMessage(roomId, 'counted by the dashboard');
  // The page reads the figures every 5 s: the new message shows without a reload.
  await until('the message counted', async () => Number(await textOf('messages-30min')) >= before + 1);
  assert.ok(Number(await page.getByTestId('users-online').textContent()) >= 1);
  await shot('dashboard');
});

test('find a user among 1,000, change the role, suspend and restore', async () => {
  await page.goto(`${base}/admin/#/users`);
  await page.getByTestId('user-total').waitFor();
  const listed = await rawApi(base, 'GET', '/_synapse/admin/v2/users?limit=1', ownerToken);
  assert.ok(listed.body.total >= 1000 - Math.floor(1000 / 97) + 2, 'the active accounts: seeded, owner, chatter');
  assert.equal(Number(await page.getByTestId('user-total').textContent()), listed.body.total);
  await shot('users');
  await page.getByTestId('user-search').fill('user777');
  await until('one user found', async () => (await textOf('user-total')) === '1');
  await page.getByRole('link', { name: '@user777:localhost' }).click();
  await page.getByRole('heading', { name: /User777 Example/ }).waitFor();

  await page.getByTestId('role-select').selectOption('moderator');
  await page.getByRole('button', { name: 'Change role' }).click();
  await confirm();
  await until('the role shown', async () => (await textOf('user-role')) === 'moderator');
  const role = await rawApi(base, 'GET', `/_super/admin/v1/users/${encodeURIComponent('@user777:localhost')}/role`, ownerToken);
  assert.equal(role.body.role, 'moderator');

  await page.getByRole('button', { name: 'Suspend' }).click();
  // issue 12: the confirmation asks a reason and a duration.
  await page.getByTestId('confirm-reason').fill('flooding the lobby');
  await page.getByTestId('confirm-duration-preset').selectOption('7 days');
  await confirm();
  await page.getByTestId('state-suspended').waitFor();
  const suspended = await rawApi(base, 'GET', `/_matrix/client/v1/admin/suspend/${encodeURIComponent('@user777:localhost')}`, ownerToken);
  assert.equal(suspended.body.suspended, true);
  const why = (await rawApi(base, 'GET', `/_super/admin/v1/users/${encodeURIComponent('@user777:localhost')}/restrictions`, ownerToken)).body.restrictions[0];
  assert.equal(why.reason, 'flooding the lobby');
  assert.ok(Math.abs(why.expires_ts - (Date.now() + 7 * 86_400_000)) < 60_000, 'for 7 days');
  await page.getByTestId('user-restrictions').getByText('flooding the lobby').waitFor();
  await shot('user');
  await page.getByRole('button', { name: 'Restore (unsuspend)' }).click();
  await page.getByTestId('state-suspended').waitFor({ state: 'detached' });
  const restored = await rawApi(base, 'GET', `/_matrix/client/v1/admin/suspend/${encodeURIComponent('@user777:localhost')}`, ownerToken);
  assert.equal(restored.body.suspended, false);
  // Cancelling a confirmation changes nothing.
  await page.getByRole('button', { name: 'Lock' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  const lock = await rawApi(base, 'GET', `/_matrix/client/v1/admin/lock/${encodeURIComponent('@user777:localhost')}`, ownerToken);
  assert.equal(lock.body.locked, false);
});

test('ban an address range with a reason and an expiry; a bad range gets a clear message', async () => {
  await page.goto(`${base}/admin/#/bans`);
  await page.getByTestId('ban-cidr').fill('not-an-address');
  await page.getByRole('button', { name: 'Ban', exact: true }).click();
  await confirm();
  await page.locator('.toast.error').filter({ hasText: /not an IP address or CIDR/ }).waitFor();
  await page.getByTestId('ban-cidr').fill('203.0.113.0/24');
  await page.getByTestId('ban-reason').fill('spam wave');
  await page.getByTestId('ban-hours').fill('24');
  await page.getByRole('button', { name: 'Ban', exact: true }).click();
  await confirm();
  await page.getByRole('cell', { name: '203.0.113.0/24' }).waitFor();
  const bans = await rawApi(base, 'GET', '/_super/admin/v1/bans', ownerToken);
  const ban = bans.body.bans.find((b: any) => b.cidr === '203.0.113.0/24');
  assert.equal(ban.reason, 'spam wave');
  assert.ok(ban.expires_ts > Date.now() + 23 * 3_600_000 && ban.expires_ts < Date.now() + 25 * 3_600_000);
  await shot('bans');
});

// issue 12 (userbans12): user restrictions with reason and expiry beside the IP bans.
test('ban a user for a day with a reason on the Bans page: listed with its countdown, then lifted', async () => {
  const target = '@user42:localhost';
  await page.goto(`${base}/admin/#/bans`);
  await page.getByTestId('restrictions-total').waitFor();
  await page.getByTestId('restrict-user').fill(target);
  await page.getByTestId('restrict-kind').selectOption('ban');
  await page.getByTestId('restrict-reason').fill('raid from a botnet');
  await page.getByTestId('restrict-duration-preset').selectOption('1 day');
  await page.getByRole('button', { name: 'Apply', exact: true }).click();
  await confirm();
  const row = page.getByTestId('restrictions-table').getByRole('row').filter({ hasText: target });
  await row.getByRole('cell', { name: 'raid from a botnet' }).waitFor();
  const text = await row.textContent() ?? '';
  assert.match(text, /banned/);
  assert.match(text, /in 23 h 59 min|in 1 d/, 'the expiry counted down');
  const put = await rawApi(base, 'GET', `/_super/admin/v1/users/${encodeURIComponent(target)}/restrictions`, ownerToken);
  assert.equal(put.body.restrictions.length, 1);
  const r = put.body.restrictions[0];
  assert.deepEqual([r.kind, r.reason, r.logout_devices, r.created_by], ['locked', 'raid from a botnet', true, '@boss:localhost']);
  assert.ok(Math.abs(r.expires_ts - (Date.now() + 86_400_000)) < 60_000, 'a day from now');
  await shot('bans-users');
  await row.getByRole('button', { name: 'Lift' }).click();
  await confirm();
  await row.waitFor({ state: 'detached' });
  const lifted = await rawApi(base, 'GET', `/_super/admin/v1/users/${encodeURIComponent(target)}/restrictions`, ownerToken);
  assert.deepEqual(lifted.body.restrictions, []);
});

test('triage a report: the event in context, dismissed', async () => {
  const spammer = await createUser(base, ownerToken, 'spammer');
  const reporter = await createUser(base, ownerToken, 'reporter');
  const room = await rawApi(base, 'POST', '/_matrix/client/v3/createRoom', spammer.token, { name: 'Reported room', preset: 'public_chat' });
  await rawApi(base, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(room.body.room_id)}`, reporter.token, {});
  const sent = await rawApi(base, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/t1`, spammer.token, { msgtype: 'm.text', body: 'BUY CHEAP PILLS' });
  const reported = await rawApi(base, 'POST', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/report/${encodeURIComponent(sent.body.event_id)}`, reporter.token, { reason: 'spam' });
  assert.equal(reported.status, 200, JSON.stringify(reported.body));

  await page.goto(`${base}/admin/#/reports`);
  await page.getByTestId('report-open').first().click();
  await page.getByRole('blockquote').filter({ hasText: 'BUY CHEAP PILLS' }).waitFor();
  await page.locator('li.highlight').filter({ hasText: 'BUY CHEAP PILLS' }).waitFor(); // among the room's messages
  await shot('reports');
  await page.getByRole('button', { name: 'Dismiss', exact: true }).click();
  await until('the report dismissed', async () => (await textOf('report-state')) === 'dismissed');
  const list = await rawApi(base, 'GET', '/_super/admin/v1/reports?resolved=false', ownerToken);
  assert.equal(list.body.total, 0);
});

test('create a registration token; approve and reject in the approval queue', async () => {
  await page.goto(`${base}/admin/#/registration`);
  await page.getByTestId('token-value').fill('welcome-2026');
  await page.getByTestId('token-uses').fill('5');
  await page.getByRole('button', { name: 'Create token' }).click();
  assert.equal(await page.getByTestId('token-created').textContent(), 'welcome-2026');
  await page.getByRole('cell', { name: 'welcome-2026' }).waitFor();
  const tokens = await rawApi(base, 'GET', '/_synapse/admin/v1/registration_tokens', ownerToken);
  assert.deepEqual(tokens.body.registration_tokens.map((t: any) => [t.token, t.uses_allowed]), [['welcome-2026', 5]]);
  // The approval queue: approve one, reject the other.
  const queue = page.getByRole('list').filter({ hasText: '@user8:localhost' });
  await queue.getByRole('listitem').filter({ hasText: '@user8:localhost' }).getByRole('button', { name: 'Approve' }).click();
  await page.getByRole('listitem').filter({ hasText: '@user8:localhost' }).waitFor({ state: 'detached' });
  await shot('registration');
  await page.getByRole('listitem').filter({ hasText: '@user9:localhost' }).getByRole('button', { name: 'Reject' }).click();
  await confirm();
  await page.getByText('Nobody is waiting').waitFor();
  const user8 = await rawApi(base, 'GET', `/_synapse/admin/v2/users/${encodeURIComponent('@user8:localhost')}`, ownerToken);
  const user9 = await rawApi(base, 'GET', `/_synapse/admin/v2/users/${encodeURIComponent('@user9:localhost')}`, ownerToken);
  assert.deepEqual([user8.body.approved, user8.body.deactivated, user9.body.deactivated], [true, false, true]);
});

test('the audit log shows the actions just taken, filtered', async () => {
  const entries = await audit(base, ownerToken, 'action=role.assign');
  assert.equal(entries[0]?.target, '@user777:localhost');
  await page.goto(`${base}/admin/#/audit`);
  await page.getByTestId('audit-table').waitFor();
  for (const action of ['role.assign', 'user.suspend', 'user.unsuspend', 'ban.add', 'report.resolve', 'registration_token.create']) {
    await page.getByTestId('audit-table').getByRole('cell', { name: action, exact: true }).first().waitFor();
  }
  await page.getByTestId('audit-action').fill('role.assign');
  await page.getByRole('button', { name: 'Filter' }).click();
  await until('only role.assign entries', async () => (await page.getByTestId('audit-table').locator('tbody tr').allTextContents()).every((row) => row.includes('role.assign')));
  await page.getByTestId('audit-table').getByRole('link', { name: '@user777:localhost' }).waitFor();
  await shot('audit');
});

test('roles, rooms and server pages; the configuration summary shows no secret', async () => {
  await page.goto(`${base}/admin/#/roles`);
  await page.getByRole('cell', { name: /moderator/ }).first().waitFor();
  await page.getByRole('link', { name: '@user777:localhost' }).waitFor(); // among the assignments
  await shot('roles');
  await page.goto(`${base}/admin/#/rooms`);
  await page.getByRole('link', { name: 'Reported room' }).click();
  await page.getByRole('heading', { name: 'Reported room' }).waitFor();
  await shot('room');
  // Block, then delete a room with purge, its progress followed to the end.
  const doomed = await rawApi(base, 'POST', '/_matrix/client/v3/createRoom', ownerToken, { name: 'Doomed room' });
  await rawApi(base, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(doomed.body.room_id)}/send/m.room.message/d1`, ownerToken, { msgtype: 'm.text', body: 'soon gone' });
  await page.goto(`${base}/admin/#/rooms/${encodeURIComponent(doomed.body.room_id)}`);
  await page.getByRole('button', { name: 'Block', exact: true }).click();
  await confirm();
  await page.getByRole('button', { name: 'Unblock' }).waitFor();
  assert.equal((await rawApi(base, 'GET', `/_synapse/admin/v1/rooms/${encodeURIComponent(doomed.body.room_id)}/block`, ownerToken)).body.block, true);
  await page.getByRole('button', { name: 'Delete room…' }).click();
  await confirm('delete');
  await until('the deletion complete', async () => /Status: complete/.test(await textOf('delete-progress')), 30_000);
  const gone = await rawApi(base, 'GET', `/_synapse/admin/v1/rooms/${encodeURIComponent(doomed.body.room_id)}/messages?dir=b&limit=10`, ownerToken);
  assert.ok(gone.status === 404 || !gone.body.chunk?.some((e: any) => e.content?.body === 'soon gone'), `purged: ${JSON.stringify(gone.body).slice(0, 200)}`);
  await page.goto(`${base}/admin/#/server`);
  assert.match(await page.getByTestId('server-software').textContent() ?? '', /^super-server \d/);
  const text = await page.locator('main').textContent() ?? '';
  assert.doesNotMatch(text, /postgres:\/\/|redis:\/\//, 'no connection URL (they may hold passwords)');
  assert.match(text, /server_name\s*localhost/);
  await page.getByRole('button', { name: 'Shut down…' }).waitFor(); // offered to the owner; not clicked
  await shot('server');
});

test('a moderator is not offered what the role may not do; a 403 names the missing permission', async () => {
  const mod = await createUser(base, ownerToken, 'moddy');
  const assigned = await rawApi(base, 'PUT', `/_super/admin/v1/users/${encodeURIComponent(mod.userId)}/role`, ownerToken, { role: 'moderator' });
  assert.equal(assigned.status, 200, JSON.stringify(assigned.body));
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('User name or Matrix ID').waitFor();
  await logIn('moddy', mod.password);
  const nav = await page.getByRole('navigation', { name: 'Pages' }).getByRole('link').allTextContents();
  assert.deepEqual(nav, ['Dashboard', 'Users', 'Roles', 'Rooms', 'Reports', 'Bans', 'Registration']);
  await page.goto(`${base}/admin/#/bans`);
  await page.getByRole('heading', { name: 'Users' }).waitFor();
  assert.equal(await page.getByTestId('ban-cidr').count(), 0, 'IP bans need server.manage');
  await page.goto(`${base}/admin/#/users/${encodeURIComponent('@user5:localhost')}`);
  await page.getByRole('button', { name: 'Suspend' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Reset password' }).count(), 0, 'users.write is not offered');
  // The role loses users.ban while the page is open: the next attempt says which permission is missing.
  await rawApi(base, 'PUT', `/_super/admin/v1/users/${encodeURIComponent(mod.userId)}/role`, ownerToken, { role: 'support' });
  await page.getByRole('button', { name: 'Suspend' }).click();
  await confirm();
  const error = page.locator('.toast.error');
  await error.waitFor();
  assert.match(await error.textContent() ?? '', /Not allowed: .*users\.ban/);
  assert.doesNotMatch(await page.locator('body').textContent() ?? '', /at \w+ \(|Error:/, 'no stack trace');
});

test('a failed request says what happened and offers a retry; never a stack trace', async () => {
  // The network drops the request, then a proxy answers 500 with a stack trace: each is a sentence and a Retry.
  await page.route('**/_super/admin/v1/roles', (route) => route.abort('connectionrefused'));
  await page.goto(`${base}/admin/#/roles`);
  const alert = page.getByRole('alert').filter({ hasText: 'Cannot reach the server' });
  await alert.waitFor();
  await page.unroute('**/_super/admin/v1/roles');
  await page.route('**/_super/admin/v1/roles', (route) => route.fulfill({ status: 500, contentType: 'text/plain', body: 'TypeError: boom\n    at handler (/srv/app.js:12:3)' }));
  await alert.getByRole('button', { name: 'Retry' }).click();
  const failed = page.getByRole('alert').filter({ hasText: 'The server failed (HTTP 500)' });
  await failed.waitFor();
  assert.doesNotMatch(await page.locator('body').textContent() ?? '', /TypeError|app\.js/);
  await page.unroute('**/_super/admin/v1/roles');
  await failed.getByRole('button', { name: 'Retry' }).click();
  await page.getByRole('cell', { name: /moderator/ }).first().waitFor();
  assert.equal(await page.locator('main').getByRole('alert').count(), 0, 'the error is gone once the retry worked');
});
