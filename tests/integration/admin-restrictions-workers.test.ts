// Issue 12 (userbans12): a user restriction applies at once on every worker — two workers on one
// database and one Redis; the target's token is cached on the other worker when the restriction
// is put (and lifted) through the first (the invalidation bus's `tokens` topic, as for a logout).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startServer, type TestServer } from '../helpers/server.ts';
import { rawApi, registerUser } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import { userWithRole } from '../helpers/moderation.ts';

const needsRedis = process.env.TEST_BACKEND === 'embedded' ? 'two workers need an external database and Redis' : false;
const servers: TestServer[] = [];
let db: pg.Client | undefined;
after(async () => {
  await db?.end();
  for (const s of servers.reverse()) await s.stop().catch(() => {});
});

describe('user restrictions across workers', { skip: needsRedis }, () => {
  test('put on one worker, refused on the other at once; lifted there, allowed on the first at once', async () => {
    const a = await startServer({ redis: true, env: { AUTO_JOIN_ROOMS: '' } });
    servers.push(a);
    const b = await startServer({ env: { AUTO_JOIN_ROOMS: '', DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    servers.unshift(b); // stopped after a, which drops the database
    db = await connectDatabase(a);
    const admin = await userWithRole(a.baseUrl, db, 'admin');
    const target = await registerUser(a.baseUrl);
    const path = `/_super/admin/v1/users/${encodeURIComponent(target.userId)}/restrictions/locked`;
    // Both workers have the target's token cached (unrestricted).
    for (const w of [a, b]) assert.equal((await rawApi(w.baseUrl, 'GET', '/_matrix/client/v3/account/whoami', target.accessToken)).status, 200);
    const put = await rawApi(a.baseUrl, 'PUT', path, admin.accessToken, { reason: 'raid', duration_ms: 3_600_000 });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const onB = await rawApi(b.baseUrl, 'GET', '/_matrix/client/v3/account/whoami', target.accessToken);
    assert.deepEqual([onB.status, onB.body.errcode], [401, 'M_USER_LOCKED']);
    const listed = await rawApi(b.baseUrl, 'GET', '/_super/admin/v1/restrictions?kind=locked', admin.accessToken);
    assert.equal(listed.body.restrictions[0]?.reason, 'raid');
    assert.equal((await rawApi(b.baseUrl, 'DELETE', path, admin.accessToken)).status, 200);
    assert.equal((await rawApi(a.baseUrl, 'GET', '/_matrix/client/v3/account/whoami', target.accessToken)).status, 200);
  });
});
