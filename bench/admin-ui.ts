// Issue 12 (adminui12): the admin dashboard's weight and its time to interactive on the users page
// with 100,000 accounts in the database (seeded by SQL as bench/admin-users.ts does). Chromium
// (Debian's, through playwright-core) loads /admin/#/users from the homeserver on loopback, already
// logged in (the session in sessionStorage), and the clock stops when the first page of users is
// on screen with its total: cold (a fresh browser context: nothing cached) and warm (reloads).
// Then a search among the 100,000 accounts, typed into the page, until its one result shows.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import pg from 'pg';
import { chromium } from 'playwright-core';
import { Client, createDatabase, fmt, repoRoot, startHomeserver, stats, summary } from './lib.ts';
import { SEED_SQL } from './admin-users.ts';

const USERS = 100_000;
const RUNS = 10;
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The built admin UI's files, raw and gzip'd (what a browser downloads with compression on). */
function weight(): { jsBytes: number; jsGzip: number; cssGzip: number; htmlGzip: number } {
  const dist = path.join(repoRoot, 'admin-ui', 'dist');
  const assets = fs.readdirSync(path.join(dist, 'assets'));
  const read = (f: string) => fs.readFileSync(path.join(dist, 'assets', f));
  const js = assets.filter((f) => f.endsWith('.js')).map(read);
  const css = assets.filter((f) => f.endsWith('.css')).map(read);
  const sum = (bufs: Buffer[], gz: boolean) => bufs.reduce((n, b) => n + (gz ? gzipSync(b, { level: 9 }).length : b.length), 0);
  return { jsBytes: sum(js, false), jsGzip: sum(js, true), cssGzip: sum(css, true), htmlGzip: gzipSync(fs.readFileSync(path.join(dist, 'index.html'))).length };
}

export async function main(): Promise<void> {
  execFileSync(process.execPath, ['homeserver/webui/build-ui.mjs'], { cwd: repoRoot, stdio: 'inherit' });
  const w = weight();
  console.log(`admin-ui: JavaScript ${fmt(w.jsBytes / 1024)} KiB, ${fmt(w.jsGzip / 1024)} KiB gzip; CSS ${fmt(w.cssGzip / 1024)} KiB gzip; index.html ${w.htmlGzip} B gzip`);
  console.log(`admin-ui: time to interactive of /admin/#/users over ${USERS.toLocaleString()} accounts, ${RUNS} cold and ${RUNS} warm loads`);
  const db = await createDatabase('admin_ui');
  const hs = await startHomeserver({ databaseUrl: db.url, env: { AUTO_JOIN_ROOMS: '' } });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS });
  try {
    const q = new pg.Client({ connectionString: db.url });
    await q.connect();
    await q.query(SEED_SQL, [USERS, Date.now()]);
    await q.query('ANALYZE users; ANALYZE profiles; ANALYZE devices');
    await q.end();
    execFileSync(process.execPath, ['--import', 'tsx', 'homeserver/admin/cli.ts', 'create-user', 'benchowner', '--role', 'owner'], {
      cwd: repoRoot, input: 'bench owner secret 1\n', env: { ...process.env, DATABASE_URL: db.url, SERVER_NAME: 'localhost' }, stdio: ['pipe', 'ignore', 'inherit'],
    });
    const c = new Client(hs.baseUrl, 1);
    const login = await c.ok('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'benchowner' }, password: 'bench owner secret 1' } });
    const session = JSON.stringify({ accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
    const url = `${hs.baseUrl}/admin/#/users`;
    const ready = '[data-testid="user-total"]';

    const cold: number[] = [];
    for (let i = 0; i < RUNS + 1; i++) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      await ctx.addInitScript((s) => sessionStorage.setItem('super-server-admin', s), session);
      const page = await ctx.newPage();
      const t = performance.now();
      await page.goto(url);
      await page.waitForSelector(ready, { timeout: 30_000 });
      if (i > 0) cold.push(performance.now() - t); // the first load warms the server (JIT, plans), not counted
      await ctx.close();
    }
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await ctx.addInitScript((s) => sessionStorage.setItem('super-server-admin', s), session);
    const page = await ctx.newPage();
    await page.goto(url);
    await page.waitForSelector(ready);
    const warm: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      await page.reload();
      await page.waitForSelector(ready, { timeout: 30_000 });
      warm.push(performance.now() - t);
    }
    const search: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const n = 10_001 + Math.floor(Math.random() * 89_999); // five digits: exactly one account matches
      await page.fill('[data-testid="user-search"]', '');
      const t = performance.now();
      await page.fill('[data-testid="user-search"]', `user${n}`);
      await page.press('[data-testid="user-search"]', 'Enter'); // no wait for the 300 ms typing pause
      await page.getByRole('link', { name: `@user${n}:localhost`, exact: true }).waitFor({ timeout: 30_000 });
      search.push(performance.now() - t);
    }
    await ctx.close();
    const sc = stats(cold);
    const sw = stats(warm);
    const ss = stats(search);
    console.log(`  cold load (nothing cached) to the first page of users: p50 ${fmt(sc.p50)} ms, max ${fmt(sc.max)} ms`);
    console.log(`  warm reload to the first page of users:              p50 ${fmt(sw.p50)} ms, max ${fmt(sw.max)} ms`);
    console.log(`  search among ${USERS.toLocaleString()} (typed, Enter) to its result:   p50 ${fmt(ss.p50)} ms, max ${fmt(ss.max)} ms`);
    summary('admin-ui', { users: USERS, jsBytes: w.jsBytes, jsGzipBytes: w.jsGzip, cssGzipBytes: w.cssGzip, coldTtiP50Ms: sc.p50, coldTtiMaxMs: sc.max, warmTtiP50Ms: sw.p50, searchP50Ms: ss.p50 });
  } finally {
    await browser.close();
    await hs.stop();
  }
}
