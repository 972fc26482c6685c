// Attack test (issue 7, deliverable 2): a session flood. 1,000 logins of one user (the original
// design's first server fell to exactly this): its devices stay at MAX_DEVICES_PER_USER (the least
// recently seen logged out), the server's memory stays bounded, and a normal user on another
// loopback address keeps its send → sync round trip (printed; loosely asserted).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { rawApi, registerUser } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import { NormalUser, reportLatency, rssMb, watchRss } from '../helpers/attack.ts';

const C = '/_matrix/client/v3';
const CAP = 100;

describe('attack: session flood', () => {
  let server: TestServer;
  let normal: NormalUser;

  before(async () => {
    // Rate limits off: this attack is about what the device cap alone bounds.
    server = await startServer({ env: { MAX_DEVICES_PER_USER: String(CAP), RATE_LIMITS: 'off' } });
    normal = await NormalUser.create(server);
    await normal.roundTrip();
  });
  after(async () => {
    normal?.close();
    await server?.stop();
  });

  test('1,000 logins of one user: devices capped, memory bounded, a normal user unharmed', async () => {
    const victim = await registerUser(server.baseUrl, 'flooded', 'a victim password');
    const rssBefore = rssMb(server);
    const rss = watchRss(server);
    let next = 0;
    const statuses: number[] = [];
    const tokens: string[] = [];
    const attack = Promise.all(Array.from({ length: 8 }, async () => {
      while (next < 1_000) {
        next++;
        const res = await rawApi(server.baseUrl, 'POST', `${C}/login`, undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'flooded' }, password: 'a victim password' });
        statuses.push(res.status);
        if (res.status === 200) tokens.push(res.body.access_token);
      }
    }));
    const latencies = await normal.roundTripsUntil(attack);
    await attack;
    const peak = rss.stop();
    assert.equal(statuses.length, 1_000);
    assert.ok(statuses.every((s) => s === 200), 'DEVICE_LIMIT_POLICY=evict: every login succeeds');

    const db = await connectDatabase(server);
    try {
      const count = async (table: string) => (await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE user_id = $1`, [victim.userId])).rows[0].n as number;
      assert.equal(await count('devices'), CAP, 'devices stay at the cap');
      assert.ok(await count('access_tokens') <= CAP, 'the evicted devices\' tokens are gone');
    } finally {
      await db.end();
    }
    // The newest sessions work, the oldest were logged out.
    assert.equal((await rawApi(server.baseUrl, 'GET', `${C}/account/whoami`, tokens[tokens.length - 1])).status, 200);
    assert.equal((await rawApi(server.baseUrl, 'GET', `${C}/account/whoami`, tokens[0])).status, 401);
    assert.equal((await rawApi(server.baseUrl, 'GET', `${C}/account/whoami`, victim.accessToken)).status, 401);
    reportLatency('session flood (1,000 logins)', latencies, { 'RSS MiB before/peak': `${rssBefore.toFixed(0)}/${peak.toFixed(0)}` });
    // Each login hashes with argon2id (19 MiB) on libuv's four threads; nothing else may pile up.
    assert.ok(peak - rssBefore < 300, `memory stays bounded: RSS grew ${(peak - rssBefore).toFixed(0)} MiB`);
  });
});
