// Finding 17a / deliverable 7 of issue 5: a user in 500 rooms changes their display name. The PUT
// answers at once, the member events reach every room off the request path (durably: a SIGKILL
// right after the PUT loses none), and the next incremental /sync answers quickly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';
import { createRooms } from '../helpers/rooms.ts';

const C = '/_matrix/client/v3';
const ROOMS = 500;

describe(`profile changes of a user in ${ROOMS} rooms`, () => {
  let server: TestServer;
  let alice: Credentials;
  const call = (method: string, path: string, opts: Parameters<typeof api>[3] = {}) => api(server.baseUrl, method, path, opts);
  const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const t = performance.now();
    const r = await fn();
    return [r, Math.round(performance.now() - t)];
  };

  /** A sync token for now, without the cost of an initial sync of every room. */
  const now = async (): Promise<string> => {
    const res = await call('GET', `${C}/sync?timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { rooms: [] } }))}`, { token: alice.accessToken });
    assert.equal(res.status, 200);
    return res.body.next_batch as string;
  };

  /** Rooms whose timeline since `since` carries alice's member event with this display name. */
  const roomsWithName = (res: { body: any }, name: string): Set<string> => {
    const out = new Set<string>();
    for (const [roomId, room] of Object.entries(res.body.rooms.join as Record<string, any>)) {
      const events = [...room.timeline.events, ...room.state.events] as Array<{ type: string; state_key?: string; content: { displayname?: string } }>;
      if (events.some((e) => e.type === 'm.room.member' && e.state_key === alice.userId && e.content.displayname === name)) out.add(roomId);
    }
    return out;
  };

  /** Incremental /syncs from `since` until every room shows the name (the propagation runs in the background). */
  const waitForName = async (since: string, name: string, deadlineMs = 30_000): Promise<Set<string>> => {
    const seen = new Set<string>();
    let from = since;
    for (const end = Date.now() + deadlineMs; seen.size < ROOMS && Date.now() < end;) {
      const res = await call('GET', `${C}/sync?timeout=2000&since=${from}`, { token: alice.accessToken });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      for (const r of roomsWithName(res, name)) seen.add(r);
      from = res.body.next_batch;
    }
    return seen;
  };

  before(async () => {
    server = await startServer({ env: { AUTO_JOIN_ROOMS: '', LOG_LEVEL: process.env.HS_LOG_LEVEL ?? 'warn' } });
    alice = await registerUser(server.baseUrl);
    const [ids, ms] = await timed(() => createRooms(server.baseUrl, alice, ROOMS));
    assert.equal(new Set(ids).size, ROOMS);
    console.log(`# setup: ${ROOMS} rooms created in ${ms} ms`);
  });
  after(() => server?.stop());

  test('the PUT answers at once, every room gets the event, and the next incremental /sync is quick', async () => {
    const since = await now();

    const [put, putMs] = await timed(() => call('PUT', `${C}/profile/${encodeURIComponent(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: 'Alice Renamed' } }));
    assert.equal(put.status, 200, JSON.stringify(put.body));
    console.log(`# PUT displayname in ${ROOMS} rooms: ${putMs} ms`);
    if (process.env.HS_LOG_LEVEL) console.log(server.logs().split('\n').filter((l) => l.includes('displayname')).join('\n'));
    assert.ok(putMs < 200, `the PUT took ${putMs} ms`);
    // The profile itself changed at once.
    assert.equal((await call('GET', `${C}/profile/${encodeURIComponent(alice.userId)}/displayname`)).body.displayname, 'Alice Renamed');

    const [seen, propagationMs] = await timed(() => waitForName(since, 'Alice Renamed'));
    console.log(`# all ${ROOMS} member events seen by /sync after ${propagationMs} ms`);
    assert.equal(seen.size, ROOMS, `${seen.size} of ${ROOMS} rooms got the member event`);

    // One incremental /sync that covers the rename in every room, timed (the second of two, so
    // that caches are as warm as a client's steady state makes them).
    await call('GET', `${C}/sync?timeout=0&since=${since}`, { token: alice.accessToken });
    const [sync, syncMs] = await timed(() => call('GET', `${C}/sync?timeout=0&since=${since}`, { token: alice.accessToken }));
    assert.equal(sync.status, 200);
    assert.equal(roomsWithName(sync, 'Alice Renamed').size, ROOMS);
    console.log(`# incremental /sync covering the rename in ${ROOMS} rooms: ${syncMs} ms`);
    assert.ok(syncMs < 500, `the incremental /sync took ${syncMs} ms`);
    // A rename is not a new join: no room sends its history or its whole state again.
    for (const room of Object.values(sync.body.rooms.join as Record<string, any>)) {
      const events = [...room.timeline.events, ...room.state.events] as Array<{ type: string }>;
      assert.ok(!events.some((e) => e.type === 'm.room.create'), 'no full state or history for rooms joined before');
    }
  });

  test('a SIGKILL right after the PUT loses no member event: the rest is sent after restart', async () => {
    const since = await now();
    const put = await call('PUT', `${C}/profile/${encodeURIComponent(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: 'Alice After Crash' } });
    assert.equal(put.status, 200);
    await server.kill();
    const [, restartMs] = await timed(() => server.restart());
    const [seen, resumeMs] = await timed(() => waitForName(since, 'Alice After Crash'));
    console.log(`# restart after SIGKILL: ${restartMs} ms; the rest of the propagation: ${resumeMs} ms`);
    assert.equal(seen.size, ROOMS, `${seen.size} of ${ROOMS} rooms got the member event after the restart`);
    // Exactly one member event per room for this change: rooms done before the crash are not sent twice.
    const res = await call('GET', `${C}/sync?timeout=0&since=${since}&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 50 } } }))}`, { token: alice.accessToken });
    for (const [roomId, room] of Object.entries(res.body.rooms.join as Record<string, any>)) {
      const mine = (room.timeline.events as Array<{ type: string; state_key?: string; content: { displayname?: string } }>)
        .filter((e) => e.type === 'm.room.member' && e.state_key === alice.userId && e.content.displayname === 'Alice After Crash');
      assert.ok(mine.length <= 1, `${roomId} got ${mine.length} member events for one change`);
    }
  });
});
