// The chat app (chat-ui/) in Chromium, three people in separate browser contexts against a real
// server: register through the UI, the global room first, a friend request accepted live, an
// encrypted DM read by the other, typing and read receipts shown, a group of three, an image seen
// by the other, and messages still flowing after the server restarts. Screenshots of each screen at
// desktop (1280×800) and phone (390×844) width go to test-output/chat-ui/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.ts';
import { startServer, repoRoot, type TestServer } from '../helpers/server.ts';
import { buildApps } from '../../homeserver/webui/build-ui.mjs';

const OUT = path.join(repoRoot, 'test-output', 'chat-ui');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
// A 2×2 red PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==', 'base64');

let server: TestServer;
let browser: Browser;
const contexts: BrowserContext[] = [];

before(async () => {
  await buildApps();
  fs.mkdirSync(OUT, { recursive: true });
  server = await startServer({ env: { PRESENCE: 'on' } });
  browser = await launchChromium();
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await server?.stop();
});

interface Person { page: Page; userId: string; name: string }

async function newPage(): Promise<Page> {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  contexts.push(ctx);
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  (page as Page & { errors?: string[] }).errors = errors;
  return page;
}

/** A screenshot of the page at desktop, then phone width (then back to desktop). */
async function shoot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(OUT, `${name}-desktop.png`) });
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(100);
  await page.screenshot({ path: path.join(OUT, `${name}-phone.png`) });
  await page.setViewportSize(DESKTOP);
}

async function register(page: Page, name: string): Promise<Person> {
  await page.goto(server.baseUrl);
  await page.getByRole('heading', { name: 'super-server chat' }).waitFor();
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('User name').fill(name);
  await page.getByLabel('Password').fill('correct horse battery staple');
  await page.getByRole('button', { name: 'Register' }).click();
  // The global room is opened first.
  await page.getByTestId('room-name').filter({ hasText: 'Global' }).waitFor({ timeout: 30_000 });
  return { page, userId: `@${name}:${server.serverName}`, name };
}

async function say(p: Person, text: string): Promise<void> {
  await p.page.locator('#composer').fill(text);
  await p.page.locator('#composer').press('Enter');
}

const message = (p: Person, text: string) => p.page.getByTestId('timeline').getByTestId('body').filter({ hasText: text });

test('three people: register, friends, an encrypted DM, typing and receipts, a group, an image, a server restart', async () => {
  try {
    await threePeople();
  } catch (err) {
    // What each page showed when it failed.
    for (const [i, c] of contexts.entries()) for (const p of c.pages()) await p.screenshot({ path: path.join(OUT, `failed-${i}.png`) }).catch(() => undefined);
    fs.writeFileSync(path.join(OUT, 'failed-server.log'), server.logs());
    throw err;
  }
});

async function threePeople(): Promise<void> {
  const suffix = Math.random().toString(36).slice(2, 7);
  const firstPage = await newPage();
  await firstPage.goto(server.baseUrl);
  await firstPage.getByTestId('server-version').waitFor();
  await shoot(firstPage, '01-sign-in');

  const alice = await register(firstPage, `alice${suffix}`);
  const bob = await register(await newPage(), `bob${suffix}`);
  const carol = await register(await newPage(), `carol${suffix}`);

  // The global room: everyone sees what one says.
  await say(alice, 'hello everyone');
  await message(bob, 'hello everyone').waitFor();
  await message(carol, 'hello everyone').waitFor();
  await shoot(alice.page, '02-global-room');

  // A friend request, accepted live on the other side (the /sync extension).
  await alice.page.getByRole('tab', { name: /Friends/ }).click();
  await alice.page.getByLabel('Add a friend').fill(bob.userId);
  await alice.page.getByRole('button', { name: 'Send request' }).click();
  await alice.page.getByTestId('outgoing').getByText(bob.userId).waitFor();
  await bob.page.getByRole('tab', { name: /Friends/ }).click();
  await bob.page.getByTestId('incoming').getByText(alice.userId).waitFor();
  await shoot(bob.page, '03-friend-request');
  await bob.page.getByTestId('incoming').getByRole('button', { name: 'Accept' }).click();
  await alice.page.getByTestId('friend').filter({ hasText: bob.userId }).waitFor();
  await bob.page.getByTestId('friend').filter({ hasText: alice.userId }).waitFor();
  // Bob is online (he is syncing): his dot says so.
  await alice.page.getByTestId('friend').filter({ hasText: bob.userId }).getByRole('img', { name: 'online' }).waitFor({ timeout: 30_000 });
  await shoot(alice.page, '04-friends');

  // An encrypted DM: Alice starts it from her friends list, Bob joins, reads what she wrote.
  await alice.page.getByTestId('friend').filter({ hasText: bob.userId }).getByRole('button', { name: 'Message' }).click();
  await alice.page.getByTestId('encrypted').waitFor({ timeout: 20_000 });
  await bob.page.getByRole('tab', { name: 'Rooms' }).click();
  await bob.page.getByTestId('invite').getByRole('button', { name: 'Join' }).click();
  await bob.page.getByTestId('encrypted').waitFor({ timeout: 20_000 });
  await say(alice, 'a secret for bob');
  await message(bob, 'a secret for bob').waitFor({ timeout: 30_000 });
  // On the server the DM holds only ciphertext: no event carries the plaintext.
  const stored = await alice.page.evaluate(async () => {
    const s = JSON.parse(localStorage.getItem('super-chat-session')!) as { accessToken: string };
    const auth = { headers: { authorization: `Bearer ${s.accessToken}` } };
    const { joined_rooms } = await (await fetch('/_matrix/client/v3/joined_rooms', auth)).json() as { joined_rooms: string[] };
    const events: Array<{ type: string; content: Record<string, unknown> }> = [];
    for (const id of joined_rooms) events.push(...((await (await fetch(`/_matrix/client/v3/rooms/${encodeURIComponent(id)}/messages?dir=b&limit=50`, auth)).json()) as { chunk: typeof events }).chunk);
    return events;
  });
  assert.ok(stored.some((e) => e.type === 'm.room.encrypted'), 'the DM has encrypted events');
  assert.ok(!JSON.stringify(stored).includes('a secret for bob'), 'the plaintext never reached the server');
  // And back.
  await say(bob, 'got it, alice');
  await message(alice, 'got it, alice').waitFor({ timeout: 30_000 });

  // Typing is shown to the other; a read receipt says who has seen a message.
  await bob.page.locator('#composer').pressSequentially('typing something', { delay: 20 });
  await alice.page.getByTestId('typing').filter({ hasText: 'is typing' }).waitFor({ timeout: 15_000 });
  await alice.page.getByTestId('seen').first().waitFor({ timeout: 15_000 });
  await shoot(alice.page, '05-encrypted-dm');
  await bob.page.locator('#composer').fill('');

  // A group of three (encrypted by default), made by Alice, joined by both.
  await alice.page.getByRole('tab', { name: 'New group' }).click();
  await alice.page.getByLabel('Name').fill('Trio');
  await alice.page.getByLabel(/Invite/).fill(`${bob.userId}, ${carol.userId}`);
  await alice.page.getByRole('button', { name: 'Create group' }).click();
  await alice.page.getByTestId('room-name').filter({ hasText: 'Trio' }).waitFor();
  for (const p of [bob, carol]) {
    await p.page.getByTestId('invite').filter({ hasText: 'Trio' }).getByRole('button', { name: 'Join' }).click();
    await p.page.getByTestId('room-name').filter({ hasText: 'Trio' }).waitFor();
  }
  await say(carol, 'carol here, in the group');
  await message(alice, 'carol here, in the group').waitFor({ timeout: 30_000 });
  await message(bob, 'carol here, in the group').waitFor({ timeout: 30_000 });
  // A thread on Carol's message: Alice replies in it, Bob sees the count and opens it.
  await alice.page.getByTestId('message').filter({ hasText: 'carol here, in the group' }).getByTestId('thread-button').click();
  await alice.page.getByTestId('thread-head').waitFor();
  await say(alice, 'a reply in the thread');
  await message(alice, 'a reply in the thread').waitFor({ timeout: 20_000 });
  await bob.page.getByTestId('message').filter({ hasText: 'carol here, in the group' }).getByRole('button', { name: 'Thread (1)' }).click({ timeout: 30_000 });
  await message(bob, 'a reply in the thread').waitFor({ timeout: 20_000 });
  await shoot(bob.page, '06-thread');
  await bob.page.getByRole('button', { name: '← Back to the room' }).click();
  await alice.page.getByRole('button', { name: '← Back to the room' }).click();
  assert.equal(await message(alice, 'a reply in the thread').count(), 0, 'thread replies stay out of the main timeline');

  await alice.page.getByRole('button', { name: /Members/ }).click();
  await shoot(alice.page, '06-group-members');

  // Bob lets only friends start a DM with him: Carol's room of two is refused, in words.
  await bob.page.getByRole('tab', { name: /Friends/ }).click();
  await bob.page.getByLabel('Only friends may start a direct message with me').check();
  await bob.page.getByRole('tab', { name: 'Rooms' }).click();
  await carol.page.getByRole('tab', { name: 'New group' }).click();
  await carol.page.getByLabel('Name').fill('Just us');
  await carol.page.getByLabel(/Invite/).fill(bob.userId);
  await carol.page.getByRole('button', { name: 'Create group' }).click();
  await carol.page.getByTestId('error').filter({ hasText: 'only accepts direct messages from friends' }).waitFor({ timeout: 15_000 });
  await shoot(carol.page, '06-refused-dm');
  await carol.page.getByRole('button', { name: 'Dismiss' }).click();
  await carol.page.getByRole('tab', { name: 'Rooms' }).click();

  // An image in the global room (a thumbnail from the authenticated media API), seen by Bob.
  await alice.page.getByRole('button', { name: /Global/ }).click();
  await bob.page.getByRole('button', { name: /Global/ }).click();
  // A reaction, an edit and a deletion, seen by Bob.
  const hello = (p: Person) => p.page.getByTestId('message').filter({ hasText: 'hello everyone' });
  await hello(alice).getByRole('button', { name: 'React with thumbs up' }).click();
  await hello(bob).getByRole('button', { name: /👍 1/ }).waitFor({ timeout: 20_000 });
  await hello(alice).getByRole('button', { name: 'Edit' }).click();
  await alice.page.locator('#composer').fill('hello everyone, edited');
  await alice.page.locator('#composer').press('Enter');
  await message(bob, 'hello everyone, edited (edited)').waitFor({ timeout: 20_000 });
  await say(alice, 'a message to delete');
  await message(bob, 'a message to delete').waitFor({ timeout: 20_000 });
  await alice.page.getByTestId('message').filter({ hasText: 'a message to delete' }).getByRole('button', { name: 'Delete' }).click();
  await message(bob, 'a message to delete').waitFor({ state: 'detached', timeout: 20_000 });
  await bob.page.getByText('Message deleted').first().waitFor();

  await alice.page.getByTestId('file-input').setInputFiles({ name: 'red.png', mimeType: 'image/png', buffer: PNG });
  const img = bob.page.getByTestId('image').last();
  await img.waitFor({ timeout: 30_000 });
  // Decoded (the thumbnail was fetched with the token and is an image the browser can draw).
  for (const end = Date.now() + 15_000; ;) {
    const drawn = await bob.page.getByTestId('image').evaluateAll((els) => els.some((e) => (e as unknown as { naturalWidth: number }).naturalWidth > 0));
    if (drawn) break;
    assert.ok(Date.now() < end, 'the image is drawn');
    await bob.page.waitForTimeout(200);
  }
  await shoot(bob.page, '07-image');

  // Profile screen.
  await alice.page.getByRole('tab', { name: 'Profile' }).click();
  await alice.page.getByLabel('Display name').fill('Alice A.');
  await alice.page.getByRole('button', { name: 'Save' }).click();
  await alice.page.getByText('Saved.').waitFor();
  await alice.page.getByLabel('Avatar').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: PNG });
  await alice.page.getByTestId('avatar').waitFor({ timeout: 20_000 });
  // Key backup behind a recovery key: set up, the key shown, a backup version on the server.
  await alice.page.getByRole('button', { name: 'Set up key backup' }).click();
  const recoveryKey = await alice.page.getByTestId('recovery-key').textContent({ timeout: 30_000 });
  assert.match(recoveryKey ?? '', /^E[sS]\w{2} /, 'a recovery key in the spec\'s format (groups of four)');
  await alice.page.getByTestId('backup-status').filter({ hasText: 'backed up (version' }).waitFor({ timeout: 30_000 });
  await shoot(alice.page, '08-profile');
  await alice.page.getByRole('tab', { name: 'Rooms' }).click();

  // The SDK uploads the room keys to the new backup in the background: wait until the DM's are there.
  const aliceToken = await alice.page.evaluate(() => (JSON.parse(localStorage.getItem('super-chat-session')!) as { accessToken: string }).accessToken);
  const backedUp = async () => {
    const auth = { headers: { authorization: `Bearer ${aliceToken}` } };
    const v = await (await fetch(`${server.baseUrl}/_matrix/client/v3/room_keys/version`, auth)).json() as { version?: string };
    if (!v.version) return 0;
    const keys = await (await fetch(`${server.baseUrl}/_matrix/client/v3/room_keys/keys?version=${v.version}`, auth)).json() as { rooms?: Record<string, unknown> };
    return Object.keys(keys.rooms ?? {}).length;
  };
  for (const end = Date.now() + 30_000; (await backedUp()) === 0;) {
    assert.ok(Date.now() < end, 'the room keys reach the backup');
    await new Promise((r) => setTimeout(r, 500));
  }

  // A new device of Alice's: signs in, types the recovery key, reads the DM's encrypted history.
  const second = await newPage();
  await second.goto(server.baseUrl);
  await second.getByLabel('User name').fill(alice.name);
  await second.getByLabel('Password').fill('correct horse battery staple');
  await second.getByRole('button', { name: 'Sign in' }).click();
  await second.getByTestId('room-name').filter({ hasText: 'Global' }).waitFor({ timeout: 30_000 });
  await second.getByRole('tab', { name: 'Profile' }).click();
  await second.getByLabel('Recovery key').fill(recoveryKey!);
  await second.getByRole('button', { name: 'Restore from backup' }).click();
  await second.getByText(/[1-9]\d* of \d+ keys restored/).waitFor({ timeout: 30_000 });
  await second.getByRole('tab', { name: 'Rooms' }).click();
  await second.getByRole('button', { name: new RegExp(bob.name) }).click();
  await second.getByTestId('body').filter({ hasText: 'a secret for bob' }).waitFor({ timeout: 30_000 });
  await shoot(second, '09-new-device-restored');
  await second.context().close();

  // The server restarts: the clients reconnect on their own and messages flow again.
  // Carol was in the group meanwhile: the global room shows its unread count.
  await carol.page.getByRole('button', { name: /Global/ }).getByTestId('unread').waitFor({ timeout: 20_000 });
  await carol.page.getByRole('button', { name: /Global/ }).click();
  const t0 = Date.now();
  await server.restart();
  console.log(`restart took ${Date.now() - t0} ms`);
  await say(alice, 'after the restart');
  await message(alice, 'after the restart').waitFor();
  console.log(`sent at ${Date.now() - t0} ms`);
  await message(bob, 'after the restart').waitFor({ timeout: 60_000 });
  console.log(`bob saw it at ${Date.now() - t0} ms`);
  await message(carol, 'after the restart').waitFor({ timeout: 60_000 });

  for (const p of [alice, bob, carol]) assert.deepEqual((p.page as Page & { errors?: string[] }).errors, [], `no script error in ${p.name}'s page`);
}

test('a rate-limited sign-in shows the wait as a countdown', async () => {
  const limited = await startServer({ env: { RATE_LIMITS: 'on' } });
  try {
    const page = await newPage();
    await page.goto(limited.baseUrl);
    await page.getByLabel('User name').fill('nobody');
    await page.getByLabel('Password').fill('wrong password');
    const alert = page.getByRole('alert');
    // Login attempts per address: a burst of 5, then 429 with retry_after_ms.
    for (let i = 0; i < 8 && !(await alert.filter({ hasText: 'try again in' }).count()); i++) {
      await page.getByRole('button', { name: 'Sign in' }).click();
      await alert.waitFor();
      await page.waitForTimeout(150);
    }
    const text = await alert.textContent();
    assert.match(text ?? '', /Too many requests.*try again in \d+ s/);
    assert.equal(await page.getByRole('button', { name: 'Sign in' }).isDisabled(), true, 'the button waits for the countdown');
    const first = Number(/in (\d+) s/.exec(text!)![1]);
    await page.waitForTimeout(2100);
    const later = Number(/in (\d+) s/.exec((await alert.textContent())!)![1]);
    assert.ok(later < first, `the countdown counts down (${first} → ${later})`);
    await shoot(page, '10-rate-limited');
  } finally {
    await limited.stop();
  }
});
