// Overload (issue 7, deliverable 4): past MAX_CONCURRENT_WRITES / MAX_CONCURRENT_REQUESTS in
// flight the server answers 503 M_LIMIT_EXCEEDED with Retry-After at once instead of queueing
// without bound, and serves everyone again once the flood stops; /sync long-polls are bounded per
// access token (429). Nothing acknowledged is lost: every 200 send is in the room afterwards.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { closeAgents, registerFrom, request, type AddressedResponse } from '../helpers/addressed.ts';

const C = '/_matrix/client/v3';
const servers: TestServer[] = [];
after(async () => { closeAgents(); for (const s of servers.reverse()) await s.stop().catch(() => {}); });

function assertShed(r: AddressedResponse): void {
  assert.equal(r.status, 503, JSON.stringify(r.body));
  assert.equal(r.body.errcode, 'M_LIMIT_EXCEEDED');
  assert.equal(r.body.retry_after_ms, 1000);
  assert.equal(r.headers['retry-after'], '1');
}

describe('overload', () => {
  let s: TestServer;
  let alice: { userId: string; accessToken: string };
  let roomId: string;

  test('start', async () => {
    s = await startServer({ env: { MAX_CONCURRENT_REQUESTS: '12', MAX_CONCURRENT_WRITES: '4', MAX_SYNCS_PER_TOKEN: '2', AUTO_JOIN_ROOMS: '', LOG_LEVEL: 'info' } });
    servers.push(s);
    // The test helper turns rate limits off unless a test turns them on; the server says so.
    for (const end = Date.now() + 5_000; !/"level":40.*RATE_LIMITS=off: no rate limit applies/.test(s.logs());) {
      if (Date.now() > end) assert.fail('a warning says the rate limits are off');
      await new Promise((r) => setTimeout(r, 20));
    }
    alice = await registerFrom(s.baseUrl, '127.0.0.1', 'overalice');
    roomId = (await request(s.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
  });

  test('a flood of writes: the excess is refused at once with 503 and Retry-After, what was accepted is kept, then all is served again', async () => {
    const flood = await Promise.all(Array.from({ length: 60 }, (_, i) =>
      request(s.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/flood${i}`, { token: alice.accessToken, body: { msgtype: 'm.text', body: `f${i}` } })));
    const ok = flood.filter((r) => r.status === 200);
    const shed = flood.filter((r) => r.status !== 200);
    for (const r of shed) assertShed(r);
    assert.ok(shed.length > 0, 'some writes were shed');
    assert.ok(ok.length >= 4, `some writes were served (${ok.length})`);
    console.log(`# write flood: ${ok.length} served, ${shed.length} shed`);
    // Every acknowledged send is in the room.
    const msgs = await request(s.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100`, { token: alice.accessToken });
    const bodies = new Set(msgs.body.chunk.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body));
    assert.equal(bodies.size, ok.length);
    // The flood is over: writes are served one after another, none shed.
    for (let i = 0; i < 10; i++) {
      const r = await request(s.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/after${i}`, { token: alice.accessToken, body: { msgtype: 'm.text', body: `a${i}` } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    for (const end = Date.now() + 5_000; !s.logs().includes('"limiter":"overload:writes"');) {
      if (Date.now() > end) assert.fail('the request log names the overload limiter');
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test('a flood of reads beyond MAX_CONCURRENT_REQUESTS is shed too, and recovers', async () => {
    const flood = await Promise.all(Array.from({ length: 60 }, () =>
      request(s.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, { token: alice.accessToken })));
    const shed = flood.filter((r) => r.status !== 200);
    for (const r of shed) assertShed(r);
    assert.ok(shed.length > 0 && shed.length < flood.length, `${shed.length} of ${flood.length} shed`);
    assert.equal((await request(s.baseUrl, 'GET', `${C}/joined_rooms`, { token: alice.accessToken })).status, 200);
  });

  test('long-polls per access token: the third is refused with 429; another token is not; they are not counted as work', async () => {
    const since = (await request(s.baseUrl, 'GET', `${C}/sync?timeout=0`, { token: alice.accessToken })).body.next_batch;
    const poll = (token: string) => request(s.baseUrl, 'GET', `${C}/sync?timeout=3000&since=${encodeURIComponent(since)}`, { token });
    const held = [poll(alice.accessToken), poll(alice.accessToken)];
    await new Promise((r) => setTimeout(r, 300));
    const third = await poll(alice.accessToken);
    assert.equal(third.status, 429, JSON.stringify(third.body));
    assert.equal(third.body.errcode, 'M_LIMIT_EXCEEDED');
    assert.ok(third.headers['retry-after']);
    // A second device of the same user has its own allowance; 12 more long-polls from other tokens
    // do not fill MAX_CONCURRENT_REQUESTS (12): a write still goes through.
    const others = [];
    for (let i = 0; i < 6; i++) {
      const login = await request(s.baseUrl, 'POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'overalice' }, password: 'correct horse battery staple' } });
      assert.equal(login.status, 200, JSON.stringify(login.body));
      others.push(poll(login.body.access_token), poll(login.body.access_token));
    }
    await new Promise((r) => setTimeout(r, 300));
    const write = await request(s.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/while-polling`, { token: alice.accessToken, body: { msgtype: 'm.text', body: 'hi' } });
    assert.equal(write.status, 200, JSON.stringify(write.body));
    for (const r of await Promise.all([...held, ...others])) assert.equal(r.status, 200);
    // All answered: the allowance is back.
    assert.equal((await poll(alice.accessToken)).status, 200);
  });
});
