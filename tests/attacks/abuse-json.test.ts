// Attack test (issue 7, deliverable 2): oversized and deeply nested JSON. An oversized body is
// refused with 413 M_TOO_LARGE without the server reading it (declared: before a byte of it; chunked:
// at the limit, then the connection closes); nesting past the depth limit is refused with 400
// M_BAD_JSON before JSON.parse builds it. Memory stays bounded and a normal user on another
// loopback address keeps its send → sync round trip (printed; loosely asserted).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, type TestServer } from '../helpers/server.ts';
import { rawApi } from '../helpers/client.ts';
import { NormalUser, reportLatency, rssMb, watchRss } from '../helpers/attack.ts';

const C = '/_matrix/client/v3';
const MB = 1024 * 1024;

interface Outcome { status: number; errcode?: string; written: number; closed: boolean; reset: boolean }

/**
 * POSTs a body written by `write` to /login from 127.0.0.1: the answer, whether the server closed
 * the connection, and how many bytes got out. A server that closes while the client still writes
 * may reset the connection before the client reads the 413 (`reset`).
 */
function post(port: number, headers: Record<string, string | number>, write: (req: http.ClientRequest) => Promise<void>): Promise<Outcome> {
  return new Promise((resolve) => {
    let written = 0;
    let answered = false;
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: `${C}/login`, headers: { 'content-type': 'application/json', ...headers }, agent: false }, (res) => {
      answered = true;
      let text = '';
      res.on('data', (c: Buffer) => { text += c; });
      res.on('error', () => {});
      res.on('end', () => {
        let errcode: string | undefined;
        try { errcode = JSON.parse(text).errcode; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, errcode, written, closed: res.headers.connection === 'close', reset: false });
      });
    });
    req.on('error', () => { if (!answered) resolve({ status: 0, written, closed: true, reset: true }); });
    const origWrite = req.write.bind(req);
    (req as { write: (chunk: Buffer) => boolean }).write = (chunk: Buffer) => { written += chunk.length; return origWrite(chunk); };
    void write(req).catch(() => { /* the server closed the connection: expected for oversized bodies */ });
  });
}

/** Runs `f` on `workers` loops until `ms` have passed; every outcome. */
async function sustained<T>(ms: number, workers: number, f: (i: number) => Promise<T>): Promise<T[]> {
  const end = Date.now() + ms;
  const out: T[] = [];
  await Promise.all(Array.from({ length: workers }, async () => { while (Date.now() < end) out.push(await f(out.length)); }));
  return out;
}

describe('attack: oversized and deeply nested JSON', () => {
  let server: TestServer;
  let normal: NormalUser;

  before(async () => {
    server = await startServer({ env: { RATE_LIMITS: 'off' } }); // MAX_REQUEST_BYTES: the default 1 MiB
    normal = await NormalUser.create(server);
    await normal.roundTrip();
  });
  after(async () => {
    normal?.close();
    await server?.stop();
  });

  test('100 MB bodies: 413 M_TOO_LARGE, not read, connection closed', async () => {
    const rssBefore = rssMb(server);
    const rss = watchRss(server);
    const chunk = Buffer.alloc(MB, 0x20);
    // Chunked (no Content-Length): the client keeps writing until the server answers.
    const streamed = async (req: http.ClientRequest) => {
      for (let i = 0; i < 100 && !req.destroyed; i++) {
        if (!req.write(chunk)) await new Promise((r) => { req.once('drain', r); req.once('close', r); });
      }
      req.end();
    };
    const attack = sustained(4_000, 6, (i) => post(server.port, i % 2 ? {} : { 'content-length': 100 * MB }, streamed));
    const latencies = await normal.roundTripsUntil(attack, 5);
    const results = await attack;
    const peak = rss.stop();
    for (const r of results) {
      assert.ok(r.reset || (r.status === 413 && r.errcode === 'M_TOO_LARGE' && r.closed), `413 M_TOO_LARGE and closed, or reset: ${JSON.stringify(r)}`);
      assert.ok(r.written < 20 * MB, `the client got out ${Math.round(r.written / MB)} MiB of 100 before the answer`);
    }
    // Declared too large and nothing sent yet: refused before a byte of the body is read.
    const clean = await post(server.port, { 'content-length': 100 * MB }, async (req) => { req.flushHeaders(); });
    assert.equal(clean.status, 413);
    assert.equal(clean.errcode, 'M_TOO_LARGE');
    assert.ok(clean.closed);
    const extra = { bodies: results.length, 'answered 413': results.filter((r) => r.status === 413).length };
    reportLatency('oversized JSON', latencies, { ...extra, 'RSS MiB before/peak': `${rssBefore.toFixed(0)}/${peak.toFixed(0)}` });
    assert.ok(peak - rssBefore < 150, `memory stays bounded: RSS grew ${(peak - rssBefore).toFixed(0)} MiB`);
  });

  test('deeply nested JSON: 400 M_BAD_JSON before it is parsed; the server stays up', async () => {
    const rss = watchRss(server);
    // 500,000 levels fit in the 1 MiB limit; a recursive parse or walk of them would overflow the stack.
    const deep = `{"a":${'['.repeat(500_000)}${']'.repeat(20_000)}`;
    const nestedObjects = `${'{"a":'.repeat(150_000)}1${'}'.repeat(150_000)}`;
    const attack = sustained(4_000, 4, async (i) => {
      const res = await fetch(`${server.baseUrl}${C}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: i % 2 ? deep : nestedObjects });
      return { status: res.status, errcode: ((await res.json()) as { errcode?: string }).errcode };
    });
    const latencies = await normal.roundTripsUntil(attack, 5);
    const results = await attack;
    for (const r of results) {
      assert.equal(r.status, 400);
      assert.equal(r.errcode, 'M_BAD_JSON');
    }
    // Just under the limit is still accepted (parsed and validated as usual).
    const ok = await rawApi(server.baseUrl, 'POST', `${C}/login`, undefined, { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'x' }, password: 'y', extra: JSON.parse(`${'['.repeat(90)}${']'.repeat(90)}`) });
    assert.equal(ok.status, 403, 'a body 90 levels deep is parsed (and the login refused as usual)');
    reportLatency('deeply nested JSON', latencies, { bodies: results.length, 'peak RSS MiB': rss.stop().toFixed(0) });
  });
});
