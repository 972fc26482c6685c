// The client's address (issue 7, deliverable 3): X-Forwarded-For / Forwarded count only when the
// socket's peer is a trusted proxy (TRUSTED_PROXIES: none by default, loopback behind Caddy); otherwise the socket's
// address does. Seen through a per-address limit (registrations) and the device's last_seen_ip.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { closeAgents, request } from '../helpers/addressed.ts';

const C = '/_matrix/client/v3';
const servers: TestServer[] = [];
after(async () => { closeAgents(); for (const s of servers.reverse()) await s.stop().catch(() => {}); });

const LIMITS = { RATE_LIMITS: 'on', AUTO_JOIN_ROOMS: '', RC_REGISTRATION_PER_SECOND: '0.001', RC_REGISTRATION_BURST: '2' };

/** Registers (m.login.dummy) with these headers; the final answer. */
async function register(base: string, username: string, headers: Record<string, string>, from = '127.0.0.1') {
  const body = { username, password: 'a fine password' };
  let r = await request(base, 'POST', `${C}/register`, { from, headers, body });
  if (r.status === 401) r = await request(base, 'POST', `${C}/register`, { from, headers, body: { ...body, auth: { type: 'm.login.dummy', session: r.body.session } } });
  return r;
}

/** The device's last-seen address, asked with the same headers (the request itself may update it). */
async function lastSeenIp(base: string, token: string, headers: Record<string, string> = {}): Promise<string> {
  const r = await request(base, 'GET', `${C}/devices`, { token, headers });
  assert.equal(r.status, 200);
  return r.body.devices[0].last_seen_ip;
}

describe('client address', () => {
  test('from a peer that is not a trusted proxy, X-Forwarded-For and Forwarded are ignored', async () => {
    const s = await startServer({ env: { ...LIMITS, TRUSTED_PROXIES: '10.0.0.1' } });
    servers.push(s);
    const a = await register(s.baseUrl, 'spoof1', { 'x-forwarded-for': '198.51.100.1' });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(await lastSeenIp(s.baseUrl, a.body.access_token), '127.0.0.1');
    assert.equal((await register(s.baseUrl, 'spoof2', { forwarded: 'for=198.51.100.2' })).status, 200);
    // A third, claiming a third address: still 127.0.0.1's third registration.
    const c = await register(s.baseUrl, 'spoof3', { 'x-forwarded-for': '198.51.100.3' });
    assert.equal(c.status, 429, JSON.stringify(c.body));
    assert.equal(c.body.errcode, 'M_LIMIT_EXCEEDED');
    // Another socket address is another client.
    assert.equal((await register(s.baseUrl, 'spoof4', {}, '127.0.0.2')).status, 200);
  });

  test('behind a trusted proxy (loopback, as deploy/env.example sets it behind Caddy) the forwarded address counts', async () => {
    const s = await startServer({ env: { ...LIMITS, LOG_LEVEL: 'info', TRUSTED_PROXIES: '127.0.0.1/8,::1' } });
    servers.push(s);
    const xff = (ip: string) => ({ 'x-forwarded-for': ip });
    const a = await register(s.baseUrl, 'fwd1', xff('198.51.100.1'));
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(await lastSeenIp(s.baseUrl, a.body.access_token, xff('198.51.100.1')), '198.51.100.1');
    assert.equal((await register(s.baseUrl, 'fwd2', { forwarded: 'for=198.51.100.1;proto=https' })).status, 200);
    // 198.51.100.1's third registration is refused; 198.51.100.2 (same proxy) is another client.
    const third = await register(s.baseUrl, 'fwd3', xff('198.51.100.1'));
    assert.equal(third.status, 429, JSON.stringify(third.body));
    // A client-written first entry does not help: the proxy appended the address it saw.
    assert.equal((await register(s.baseUrl, 'fwd4', xff('203.0.113.77, 198.51.100.1'))).status, 429);
    const b = await register(s.baseUrl, 'fwd5', xff('2001:db8::5'));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    assert.equal(await lastSeenIp(s.baseUrl, b.body.access_token, xff('2001:db8::5')), '2001:db8::5');
    // The request log names the forwarded address.
    for (const end = Date.now() + 5_000; !s.logs().includes('"ip":"2001:db8::5"');) {
      if (Date.now() > end) assert.fail('the request log names the client address');
      await new Promise((r) => setTimeout(r, 20));
    }
  });
});
