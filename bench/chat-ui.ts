// The chat app (chat-ui/) in Chromium: the JavaScript it ships (gzip), the time from opening the page
// (signed in) to the global room's last messages shown, and the page's JS heap after 1,000 messages
// arrived live in the open room.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';
import { buildApps } from '../homeserver/webui/build-ui.mjs';
import { Client, createDatabase, enc, fmt, now, onCleanup, pool, repoRoot, startHomeserver, stats, summary } from './lib.ts';

const HISTORY = 200;
const LIVE = 1000;
const OPENS = 5;

export async function main(): Promise<void> {
  await buildApps({ force: true });
  const assets = path.join(repoRoot, 'chat-ui', 'dist', 'assets');
  let jsGzip = 0;
  let jsRaw = 0;
  let wasmGzip = 0;
  for (const f of fs.readdirSync(assets)) {
    const bytes = fs.readFileSync(path.join(assets, f));
    if (f.endsWith('.js')) { jsRaw += bytes.length; jsGzip += zlib.gzipSync(bytes, { level: 9 }).length; }
    if (f.endsWith('.wasm')) wasmGzip += zlib.gzipSync(bytes, { level: 9 }).length;
  }
  console.log(`JavaScript shipped: ${fmt(jsGzip / 1024)} KB gzip (${fmt(jsRaw / 1024)} KB raw); crypto wasm ${fmt(wasmGzip / 1024)} KB gzip, loaded after sign-in`);

  const db = await createDatabase('chat-ui');
  const hs = await startHomeserver({ databaseUrl: db.url });
  const c = new Client(hs.baseUrl);
  onCleanup(() => c.close());
  const reg = await c.ok('POST', '/_matrix/client/v3/register', { body: { username: 'reader', password: 'bench-password-1', auth: { type: 'm.login.dummy' } } });
  const writer = await c.ok('POST', '/_matrix/client/v3/register', { body: { username: 'writer', password: 'bench-password-1', auth: { type: 'm.login.dummy' } } });
  const global = (await c.ok('GET', `/_matrix/client/v3/directory/room/${enc('#global:localhost')}`)).room_id as string;
  const send = (i: number, label: string) => c.ok('PUT', `/_matrix/client/v3/rooms/${enc(global)}/send/m.room.message/${label}${i}`, { token: writer.access_token, body: { msgtype: 'm.text', body: `${label} message ${i}` } });
  for (let i = 0; i < HISTORY; i++) await send(i, 'history');

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  onCleanup(() => browser.close());
  const session = { baseUrl: hs.baseUrl, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id };

  // Opening the page, signed in: until the newest message of the global room is on screen.
  const opens: number[] = [];
  for (let i = 0; i < OPENS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await ctx.addInitScript((s) => localStorage.setItem('super-chat-session', s), JSON.stringify(session));
    const page = await ctx.newPage();
    const t0 = now();
    await page.goto(hs.baseUrl);
    await page.getByTestId('body').filter({ hasText: `history message ${HISTORY - 1}` }).waitFor({ timeout: 60_000 });
    opens.push(now() - t0);
    await ctx.close();
  }
  const open = stats(opens);
  console.log(`open → global room's last messages shown: p50 ${fmt(open.p50)} ms, max ${fmt(open.max)} ms (n=${OPENS}, ${HISTORY} messages in the room; the first open includes the crypto store's creation)`);

  // 1,000 messages arriving live in the open room.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript((s) => localStorage.setItem('super-chat-session', s), JSON.stringify(session));
  const page = await ctx.newPage();
  await page.goto(hs.baseUrl);
  await page.getByTestId('body').filter({ hasText: `history message ${HISTORY - 1}` }).waitFor({ timeout: 60_000 });
  // Older history comes back on demand (the first sync brought the newest 30).
  await page.getByRole('button', { name: 'Load older messages' }).click();
  await page.getByTestId('body').filter({ hasText: `history message ${HISTORY - 45}` }).waitFor({ timeout: 30_000 });
  const cdp = await ctx.newCDPSession(page);
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    return (await cdp.send('Runtime.getHeapUsage')).usedSize / (1024 * 1024);
  };
  const before = await heap();
  const t0 = now();
  await pool(LIVE, 4, (i) => send(i, 'live'));
  await page.getByTestId('body').filter({ hasText: `live message ${LIVE - 1}` }).waitFor({ timeout: 120_000 });
  const liveMs = now() - t0;
  await page.waitForTimeout(1000);
  const after = await heap();
  const nodes = await page.locator('*').count();
  console.log(`JS heap: ${fmt(before)} MB open, ${fmt(after)} MB after ${LIVE} live messages (${nodes} DOM elements; ${fmt(liveMs / 1000)} s to send and show them)`);
  summary('chat-ui', { js_gzip_kb: jsGzip / 1024, wasm_gzip_kb: wasmGzip / 1024, open_p50_ms: open.p50, open_max_ms: open.max, heap_open_mb: before, heap_after_1000_mb: after, dom_elements: nodes });
  await ctx.close();
  await db.drop();
}
