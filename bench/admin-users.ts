// Issue 9 (roles9): the admin user list over 100,000 accounts. The accounts are seeded by one SQL
// statement (users, their profiles and a device each; not over HTTP), the owner by the admin CLI.
// Then, sequentially, one client: pages of the user list ordered by name and by creation time
// (both directions, shallow and deep), and searches by name, each paged and ordered.
// Goal: p99 <= 50 ms.
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { Client, createDatabase, fmt, latencyLine, repoRoot, startHomeserver, stats, summary } from './lib.ts';

const USERS = 100_000;
const SAMPLES = 200;

/** One statement: the accounts, a profile each, a device each (last seen within the last 30 days). */
export const SEED_SQL = `
WITH n AS (SELECT g FROM generate_series(1, $1::int) AS g),
u AS (
  INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, deactivated, created_ts, last_seen_ts)
  SELECT '@user' || g || ':localhost', 'user' || g, NULL, FALSE, g % 50 = 0, g % 97 = 0, $2::bigint - g * 1000,
    $2::bigint - (hashtext('@user' || g || ':localhost') & 2147483647) % 2592000000
  FROM n RETURNING user_id, localpart, last_seen_ts
),
p AS (INSERT INTO profiles (user_id, displayname) SELECT user_id, initcap(localpart) || ' Example' FROM u RETURNING user_id)
INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts)
SELECT user_id, 'DEV', 'seeded', last_seen_ts, '10.0.0.1', $2::bigint FROM u`;

export async function main(): Promise<void> {
  console.log(`admin-users: ${USERS.toLocaleString()} accounts seeded by SQL; user list and search through /_synapse/admin/v2/users, ${SAMPLES} requests per kind, one at a time`);
  const db = await createDatabase('admin_users');
  const hs = await startHomeserver({ databaseUrl: db.url, env: { AUTO_JOIN_ROOMS: '' } });
  const c = new Client(hs.baseUrl, 4);
  try {
    const q = new pg.Client({ connectionString: db.url });
    await q.connect();
    let t = performance.now();
    await q.query(SEED_SQL, [USERS, Date.now()]);
    await q.query('ANALYZE users; ANALYZE profiles; ANALYZE devices');
    console.log(`  seeded ${USERS.toLocaleString()} users in ${fmt((performance.now() - t) / 1000)} s`);
    await q.end();
    execFileSync(process.execPath, ['--import', 'tsx', 'homeserver/admin/cli.ts', 'create-user', 'benchowner', '--role', 'owner'], {
      cwd: repoRoot, input: 'bench owner secret 1\n', env: { ...process.env, DATABASE_URL: db.url, SERVER_NAME: 'localhost' }, stdio: ['pipe', 'ignore', 'inherit'],
    });
    const token = (await c.ok('POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'benchowner' }, password: 'bench owner secret 1' } })).access_token as string;
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const kinds: Array<[string, (i: number) => string]> = [
      ['list by name, pages 1-20', (i) => `order_by=name&limit=100&from=${(i % 20) * 100}`],
      ['list by name, any page (deep offsets)', () => `order_by=name&limit=100&from=${rnd(980) * 100}`],
      ['list newest first, pages 1-20', (i) => `order_by=creation_ts&dir=b&limit=100&from=${(i % 20) * 100}`],
      ['list by last seen, first page', () => 'order_by=last_seen_ts&dir=b&limit=100'],
      ['search name (rare: a few users)', () => `name=user${rnd(USERS) + 1}&limit=100`],
      ['search name (common: ~110 users), page 1-3', (i) => `name=user${rnd(9) + 1}${rnd(10)}${rnd(10)}&limit=100&from=${(i % 3) * 100}`],
      ['search display name (~300 users) by creation', () => `name=${rnd(9) + 1}${rnd(10)}${rnd(10)}&order_by=creation_ts&dir=b&limit=50`],
    ];
    const figures: Record<string, number> = {};
    let worst = 0;
    for (const [label, query] of kinds) {
      for (let i = 0; i < 5; i++) await c.ok('GET', `/_synapse/admin/v2/users?${query(i)}`, { token }); // warm up
      const samples: number[] = [];
      t = performance.now();
      for (let i = 0; i < SAMPLES; i++) {
        const r = await c.request('GET', `/_synapse/admin/v2/users?${query(i)}`, { token });
        if (r.status !== 200) throw new Error(`${label}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        samples.push(r.ms);
      }
      const s = stats(samples);
      console.log(`  ${latencyLine(label, s)}`);
      figures[`${label} p50 ms`] = s.p50;
      figures[`${label} p99 ms`] = s.p99;
      worst = Math.max(worst, s.p99);
    }
    console.log(`  worst p99 ${fmt(worst, 2)} ms (goal <= 50 ms): ${worst <= 50 ? 'met' : 'NOT met'}`);
    summary('admin-users', { users: USERS, worstP99Ms: worst, ...figures });
  } finally {
    await hs.stop();
  }
}
