// IP / CIDR bans with two workers on one database and one Redis (issue 9, mod9): each worker keeps
// the bans in memory; a ban added or lifted through one worker applies on the other at once
// (the invalidation bus), before any work is done there.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import { closeAgents, request } from '../helpers/addressed.ts';
import { userWithRole } from '../helpers/moderation.ts';

const needsRedis = process.env.TEST_BACKEND === 'embedded' ? 'two workers need an external database and Redis' : false;
const servers: TestServer[] = [];
let db: pg.Client | undefined;
after(async () => {
  closeAgents();
  await db?.end();
  for (const s of servers.reverse()) await s.stop().catch(() => {});
});

describe('IP bans across workers', { skip: needsRedis }, () => {
  test('a ban made on one worker refuses the address on the other at once; lifting it too', async () => {
    const a = await startServer({ redis: true, env: { AUTO_JOIN_ROOMS: '' } });
    servers.push(a);
    const b = await startServer({ env: { AUTO_JOIN_ROOMS: '', DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    servers.unshift(b); // stopped after a, which drops the database
    db = await connectDatabase(a);
    const admin = await userWithRole(a.baseUrl, db, 'admin');
    const from = '127.0.0.77';
    assert.equal((await request(b.baseUrl, 'GET', '/_matrix/client/versions', { from })).status, 200);
    const ban = await api(a.baseUrl, 'POST', '/_super/admin/v1/bans', { token: admin.accessToken, body: { cidr: '127.0.0.64/27', reason: 'wave' } });
    assert.equal(ban.status, 200);
    // The write is answered once its invalidation reached Redis' subscribers.
    const onB = await request(b.baseUrl, 'GET', '/_matrix/client/versions', { from });
    assert.equal(onB.status, 403);
    assert.equal(onB.body.errcode, 'M_FORBIDDEN');
    assert.equal((await api(b.baseUrl, 'DELETE', `/_super/admin/v1/bans/${ban.body.id}`, { token: admin.accessToken })).status, 200);
    assert.equal((await request(a.baseUrl, 'GET', '/_matrix/client/versions', { from })).status, 200);
  });
});
