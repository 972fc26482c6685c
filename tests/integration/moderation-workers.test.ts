// IP / CIDR bans with two workers on one database and one Redis (issue 9, mod9): each worker keeps
// the bans in memory; a ban added or lifted through one worker applies on the other at once
// (the invalidation bus), before any work is done there.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { api } from '../helpers/client.ts';
import { closeAgents, request } from '../helpers/addressed.ts';
import { twoWorkersWithAdmin } from '../helpers/moderation.ts';

after(() => closeAgents());

// Two workers need an external database and Redis: not part of the embedded PostgreSQL's run.
if (process.env.TEST_BACKEND !== 'embedded') describe('IP bans across workers', () => {
  test('a ban made on one worker refuses the address on the other at once; lifting it too', async (t) => {
    const { a, b, admin } = await twoWorkersWithAdmin((fn) => t.after(fn));
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
