// Issue 12 (userbans12): a user restriction applies at once on every worker — two workers on one
// database and one Redis; the target's token is cached on the other worker when the restriction
// is put (and lifted) through the first (the invalidation bus's `tokens` topic, as for a logout).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rawApi, registerUser } from '../helpers/client.ts';
import { twoWorkersWithAdmin } from '../helpers/moderation.ts';

// Two workers need an external database and Redis: not part of the embedded PostgreSQL's run.
if (process.env.TEST_BACKEND !== 'embedded') describe('user restrictions across workers', () => {
  test('put on one worker, refused on the other at once; lifted there, allowed on the first at once', async (t) => {
    const { a, b, admin } = await twoWorkersWithAdmin((fn) => t.after(fn));
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
