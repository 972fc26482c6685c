// Verification of a new device in the chat app (chat-ui/), in Chromium: one person signed in on two
// browser contexts. The first device sets up key backup (which bootstraps cross-signing); the
// second signs in, sees "Verify this device", asks the first, which declines once (a clear
// message), then accepts; both show the same 7
// emoji. A first attempt ends with "They don't match" (both sides say so, nothing is verified); the
// second is confirmed on both sides (one by keyboard) and the new device shows as verified.
// A third device verifies itself with the recovery key instead.
// Screenshots of the emoji dialog at desktop and phone width go to test-output/chat-ui/.
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
const PASSWORD = 'correct horse battery staple';

let server: TestServer;
let browser: Browser;
const contexts: BrowserContext[] = [];

before(async () => {
  await buildApps();
  fs.mkdirSync(OUT, { recursive: true });
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await server?.stop();
});

async function newPage(): Promise<Page & { errors: string[] }> {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  contexts.push(ctx);
  const page = (await ctx.newPage()) as Page & { errors: string[] };
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  return page;
}

async function shoot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(OUT, `${name}-desktop.png`) });
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(100);
  await page.screenshot({ path: path.join(OUT, `${name}-phone.png`) });
  await page.setViewportSize(DESKTOP);
}

const emojiOf = async (page: Page) => (await page.getByTestId('sas-emoji-item').allTextContents()).map((t) => t.trim());

/** The new device asks, the first accepts; both show the emoji, which are returned (compared). */
async function requestAndCompare(first: Page, second: Page): Promise<string[]> {
  await second.getByTestId('verify-banner').getByRole('button', { name: 'Verify with another device' }).click();
  await second.getByTestId('verify-dialog').getByText('accept the request there').waitFor({ timeout: 20_000 });
  const incoming = first.getByTestId('verify-dialog');
  await incoming.getByText('asks to be verified').waitFor({ timeout: 30_000 });
  await incoming.getByRole('button', { name: 'Accept' }).click();
  await first.getByTestId('sas-emoji-item').nth(6).waitFor({ timeout: 30_000 });
  await second.getByTestId('sas-emoji-item').nth(6).waitFor({ timeout: 30_000 });
  const a = await emojiOf(first);
  const b = await emojiOf(second);
  assert.equal(a.length, 7, `seven emoji: ${a.join(' ')}`);
  assert.deepEqual(b, a, 'both devices show the same emoji in the same order');
  return a;
}

test('a new device is verified from another device by comparing emoji', async () => {
  const first = await newPage();
  const second = await newPage();
  try {
    const name = `vera${Math.random().toString(36).slice(2, 7)}`;
    // The first device: registers, sets up key backup (cross-signing comes with it); it is verified.
    await first.goto(server.baseUrl);
    await first.getByRole('button', { name: 'Create an account' }).click();
    await first.getByLabel('User name').fill(name);
    await first.getByLabel('Password').fill(PASSWORD);
    await first.getByRole('button', { name: 'Register' }).click();
    await first.getByTestId('room-name').filter({ hasText: 'Global' }).waitFor({ timeout: 30_000 });
    await first.getByRole('tab', { name: 'Profile' }).click();
    await first.getByRole('button', { name: 'Set up key backup' }).click();
    const recoveryKey = (await first.getByTestId('recovery-key').textContent({ timeout: 30_000 }))!;
    await first.getByTestId('device-verified').filter({ hasText: 'This device is verified' }).waitFor({ timeout: 20_000 });
    assert.equal(await first.getByTestId('verify-banner').count(), 0, 'no banner on a verified device');
    await first.getByRole('tab', { name: 'Rooms' }).click();

    // The second device signs in: not verified, the banner offers both ways.
    await second.goto(server.baseUrl);
    await second.getByLabel('User name').fill(name);
    await second.getByLabel('Password').fill(PASSWORD);
    await second.getByRole('button', { name: 'Sign in' }).click();
    await second.getByTestId('room-name').filter({ hasText: 'Global' }).waitFor({ timeout: 30_000 });
    const banner = second.getByTestId('verify-banner');
    await banner.waitFor({ timeout: 30_000 });
    await banner.getByRole('button', { name: 'Use recovery key' }).waitFor();
    await second.getByTestId('device-verified').filter({ hasText: 'This device is not verified' }).waitFor();
    await shoot(second, '11-verify-banner');

    // A request declined on the first device: the new device says it was cancelled.
    await banner.getByRole('button', { name: 'Verify with another device' }).click();
    await first.getByTestId('verify-dialog').getByText('asks to be verified').waitFor({ timeout: 30_000 });
    await first.getByTestId('verify-dialog').getByRole('button', { name: 'Decline' }).click();
    await second.getByTestId('verify-outcome').filter({ hasText: 'was cancelled' }).waitFor({ timeout: 20_000 });
    for (const p of [first, second]) await p.getByTestId('verify-dialog').getByRole('button', { name: 'Close' }).click();

    // First attempt: the person says the emoji differ → both sides say so; nothing is verified.
    await requestAndCompare(first, second);
    await second.getByRole('button', { name: "They don't match" }).click();
    await second.getByTestId('verify-outcome').filter({ hasText: 'did not match' }).waitFor({ timeout: 20_000 });
    await first.getByTestId('verify-outcome').filter({ hasText: 'did not match' }).waitFor({ timeout: 20_000 });
    for (const p of [first, second]) await p.getByTestId('verify-dialog').getByRole('button', { name: 'Close' }).click();
    await second.getByTestId('device-verified').filter({ hasText: 'This device is not verified' }).waitFor();
    await banner.waitFor();

    // Second attempt: the same emoji on both, confirmed on both (the new device by keyboard).
    const emoji = await requestAndCompare(first, second);
    await shoot(first, '12-verify-emoji');
    await second.keyboard.press('Enter'); // "They match" has the focus
    await second.getByText('Waiting for your other device to confirm').waitFor({ timeout: 10_000 });
    await first.getByRole('button', { name: 'They match' }).click();
    await second.getByTestId('verify-outcome').filter({ hasText: 'Verified' }).waitFor({ timeout: 30_000 });
    await first.getByTestId('verify-outcome').filter({ hasText: 'Verified' }).waitFor({ timeout: 30_000 });
    await shoot(second, '13-verified');
    // The new device is cross-signed by the first: its indicator says so, the banner is gone.
    await second.getByTestId('verify-dialog').getByRole('button', { name: 'Close' }).click();
    await second.getByTestId('device-verified').filter({ hasText: 'This device is verified' }).waitFor({ timeout: 30_000 });
    assert.equal(await banner.count(), 0, 'no banner once verified');
    // And the server holds the self-signing key's signature on the new device's keys.
    const s = await second.evaluate(() => JSON.parse(localStorage.getItem('super-chat-session')!) as { accessToken: string; userId: string; deviceId: string });
    const res = await fetch(`${server.baseUrl}/_matrix/client/v3/keys/query`, {
      method: 'POST', headers: { authorization: `Bearer ${s.accessToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ device_keys: { [s.userId]: [s.deviceId] } }),
    });
    const body = await res.json() as { device_keys: Record<string, Record<string, { signatures: Record<string, Record<string, string>> }>>; self_signing_keys: Record<string, { keys: Record<string, string> }> };
    const selfSigningKeyId = Object.keys(body.self_signing_keys[s.userId]!.keys)[0]!;
    assert.ok(body.device_keys[s.userId]![s.deviceId]!.signatures[s.userId]![selfSigningKeyId], `the new device is signed by ${selfSigningKeyId}`);

    // A third device takes the other way: "Use recovery key" → the key typed → cross-signed.
    const third = await newPage();
    await third.goto(server.baseUrl);
    await third.getByLabel('User name').fill(name);
    await third.getByLabel('Password').fill(PASSWORD);
    await third.getByRole('button', { name: 'Sign in' }).click();
    await third.getByTestId('device-verified').filter({ hasText: 'This device is not verified' }).waitFor({ timeout: 30_000 });
    await third.getByTestId('verify-banner').getByRole('button', { name: 'Use recovery key' }).click({ timeout: 30_000 });
    await third.getByLabel('Recovery key').fill(recoveryKey);
    await third.getByRole('button', { name: 'Restore from backup' }).click();
    await third.getByText(/\d+ of \d+ keys restored/).waitFor({ timeout: 30_000 });
    await third.getByTestId('device-verified').filter({ hasText: 'This device is verified' }).waitFor({ timeout: 30_000 });
    assert.deepEqual(third.errors, [], 'no script error');
    console.log(`verified with ${emoji.join(' ')}`);
    for (const p of [first, second]) assert.deepEqual(p.errors, [], 'no script error');
  } catch (err) {
    for (const [i, c] of contexts.entries()) for (const p of c.pages()) await p.screenshot({ path: path.join(OUT, `verify-failed-${i}.png`) }).catch(() => undefined);
    fs.writeFileSync(path.join(OUT, 'verify-failed-server.log'), server.logs());
    throw err;
  }
});
