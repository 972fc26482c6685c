// WORKERS=N on one port (node:cluster), the job runner moving when its worker dies, a Redis
// restart in the middle of traffic, and the start-up errors of a misconfigured cluster.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { repoRoot, startServer, type TestServer } from '../helpers/server.ts';
import { api, rawApi as raw, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';
const skip = process.env.TEST_BACKEND === 'embedded' ? 'needs an external database and Redis' : false;
const TIMELINE = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 2000 } } }));


async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const count = (text: string, needle: string) => text.split(needle).length - 1;

const servers: TestServer[] = [];
const redisPorts: number[] = [];
after(async () => {
  for (const s of servers.reverse()) await s.stop().catch(() => {});
  // Only the Redis servers this file started (never the shared one).
  for (const p of redisPorts) spawnSync('redis-cli', ['-p', String(p), 'shutdown', 'nosave'], { stdio: 'ignore' });
});

/** A Redis of this test's own, on a free port, without persistence (a restart loses everything). */
async function ownRedis(port?: number): Promise<number> {
  const p = port ?? await freePort();
  const r = spawnSync('redis-server', ['--port', String(p), '--save', '', '--appendonly', 'no', '--daemonize', 'yes'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  if (!redisPorts.includes(p)) redisPorts.push(p);
  await until('redis to answer', () => spawnSync('redis-cli', ['-p', String(p), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG');
  return p;
}

async function room(base: string | string[], members: number): Promise<{ users: Array<Credentials & { base: string }>; roomId: string }> {
  const bases = Array.isArray(base) ? base : [base];
  const users: Array<Credentials & { base: string }> = [];
  for (let i = 0; i < members; i++) users.push({ ...(await registerUser(bases[i % bases.length]!)), base: bases[i % bases.length]! });
  const roomId = (await api(users[0]!.base, 'POST', `${C}/createRoom`, { token: users[0]!.accessToken, body: { preset: 'public_chat' } })).body.room_id;
  for (const u of users.slice(1)) assert.equal((await api(u.base, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: u.accessToken })).status, 200);
  return { users, roomId };
}

/** Follows a room's timeline through incremental /sync until `want` messages or the deadline; fails on a gap. */
async function follow(base: string, token: string, roomId: string, want: number, deadline: number, ready?: () => void): Promise<string[]> {
  const got: string[] = [];
  let since = (await raw(base, 'GET', `${C}/sync?filter=${TIMELINE}`, token)).body.next_batch;
  ready?.();
  while (got.length < want && Date.now() < deadline) {
    const r = await raw(base, 'GET', `${C}/sync?since=${encodeURIComponent(since)}&timeout=2000&filter=${TIMELINE}`, token);
    if (r.status !== 200) { await new Promise((res) => setTimeout(res, 50)); continue; } // a worker restarting
    const t = r.body.rooms?.join?.[roomId]?.timeline;
    if (t) {
      assert.notEqual(t.limited, true, 'no gap');
      for (const e of t.events) if (e.type === 'm.room.message') got.push(e.content.body);
    }
    since = r.body.next_batch;
  }
  return got;
}

function sameOnce(got: string[], sent: string[], where: string): void {
  const want = new Set(sent);
  const have = new Set(got);
  assert.deepEqual(
    { missing: sent.filter((x) => !have.has(x)), extra: got.filter((x) => !want.has(x)), duplicates: got.length - have.size },
    { missing: [], extra: [], duplicates: 0 }, where,
  );
}

describe('WORKERS=N on one port', { skip }, () => {
  test('two workers behind one port: sends and syncs spread over both, no gap, no duplicate; a killed worker is replaced; SIGTERM drains all', async () => {
    const s = await startServer({ redis: true, env: { WORKERS: '2', LOG_LEVEL: 'info' } });
    servers.push(s);
    await until('both workers', () => s.logs().includes('all workers listening') && count(s.logs(), 'stream positions shared through redis') >= 2);
    const pids = [...s.logs().matchAll(/"pids":\[(\d+),(\d+)\]/g)].at(-1)!.slice(1).map(Number);
    assert.equal(pids.length, 2);
    const { users, roomId } = await room(s.baseUrl, 4);
    const TOTAL = 300;
    const deadline = Date.now() + 40_000;
    let ready = 0;
    const readers = users.slice(0, 2).map((u) => follow(s.baseUrl, u.accessToken, roomId, TOTAL, deadline, () => ready++));
    await until('readers', () => ready === 2);
    const sent: string[] = [];
    await Promise.all(users.map(async (u, i) => {
      for (let n = 0; n < TOTAL / users.length; n++) {
        const r = await raw(s.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/c${n}`, u.accessToken, { msgtype: 'm.text', body: `c${i}-${n}` });
        assert.equal(r.status, 200);
        sent.push(`c${i}-${n}`);
      }
    }));
    for (const got of await Promise.all(readers)) sameOnce(got, sent, 'a reader behind the port');
    // Which worker answered: both wrote (their pids are in the request logs? no: count positions).
    // A worker killed: the primary starts another; the port keeps answering.
    process.kill(pids[0]!, 'SIGKILL');
    await until('a replacement worker', () => s.logs().includes('worker died; starting another') && count(s.logs(), 'stream positions shared through redis') >= 3);
    for (let i = 0; i < 10; i++) assert.equal((await raw(s.baseUrl, 'GET', `${C}/account/whoami`, users[0]!.accessToken)).status, 200);
    // SIGTERM to the primary: every worker drains and exits.
    const live = [...s.logs().matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1]));
    await s.stop();
    for (const pid of new Set([...pids, ...live])) assert.throws(() => process.kill(pid, 0), /ESRCH/, `process ${pid} is gone`);
  });
});

describe('background jobs and Redis restarts', { skip }, () => {
  test('killing the job worker moves the jobs to another within seconds', async () => {
    const a = await startServer({ redis: true, env: { LOG_LEVEL: 'info' } });
    servers.push(a);
    const b = await startServer({ env: { LOG_LEVEL: 'info', DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
    servers.unshift(b);
    const LINE = 'background jobs run on this worker';
    await until('a job runner', () => a.logs().includes(LINE) || b.logs().includes(LINE));
    await new Promise((r) => setTimeout(r, 1_500)); // a second runner would have taken the lock by now
    assert.equal(count(a.logs(), LINE) + count(b.logs(), LINE), 1, 'exactly one worker runs the jobs');
    const [runner, other] = a.logs().includes(LINE) ? [a, b] : [b, a];
    const t0 = Date.now();
    await runner.kill();
    await until('the other worker to take the jobs', () => other.logs().includes(LINE), 10_000);
    assert.ok(Date.now() - t0 < 5_000, `took over in ${Date.now() - t0} ms`);
    // The jobs work there: a display name change reaches the rooms (profile propagation).
    const alice = await registerUser(other.baseUrl);
    const roomId = (await api(other.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: {} })).body.room_id;
    await api(other.baseUrl, 'PUT', `${C}/profile/${encodeURIComponent(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: 'Moved' } });
    await until('the new name in the room', async () => (await api(other.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/state/m.room.member/${encodeURIComponent(alice.userId)}`, { token: alice.accessToken })).body.displayname === 'Moved');
  });

  test('restarting Redis mid-traffic loses no event for any sync, and positions go back to Redis', async () => {
    const port = await ownRedis();
    const url = `redis://127.0.0.1:${port}`;
    const a = await startServer({ env: { LOG_LEVEL: 'info', REDIS_URL: url, REDIS_PREFIX: 'restart:' } });
    servers.push(a);
    const b = await startServer({ env: { LOG_LEVEL: 'info', DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: url, REDIS_PREFIX: 'restart:' } });
    servers.unshift(b);
    const LIVE = 'stream positions shared through redis';
    await until('positions through redis', () => a.logs().includes(LIVE) && b.logs().includes(LIVE));
    const { users, roomId } = await room([a.baseUrl, b.baseUrl], 4);
    const TOTAL = 240;
    const deadline = Date.now() + 45_000;
    let ready = 0;
    // A long-polling reader on each worker.
    const readers = [a, b].map((w) => follow(w.baseUrl, users[0]!.accessToken, roomId, TOTAL, deadline, () => ready++));
    await until('readers', () => ready === 2);
    const sent: string[] = [];
    let n = 0;
    const sender = (async () => {
      while (n < TOTAL) {
        const i = n++;
        const u = users[i % users.length]!;
        const base = i % 2 ? b.baseUrl : a.baseUrl;
        const r = await raw(base, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/x${i}`, u.accessToken, { msgtype: 'm.text', body: `x${i}` });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        sent.push(`x${i}`);
        await new Promise((res) => setTimeout(res, 15));
      }
    })();
    await until('some traffic', () => n > 60);
    spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave'], { stdio: 'ignore' });
    await until('the outage to be noticed', () => a.logs().includes('redis coordination lost') && b.logs().includes('redis coordination lost'));
    await until('traffic during the outage', () => n > 140, 20_000);
    await ownRedis(port);
    await sender;
    for (const got of await Promise.all(readers)) sameOnce(got, sent, 'a reader across the restart');
    await until('positions back through redis', () => count(a.logs(), LIVE) >= 2 && count(b.logs(), LIVE) >= 2);
    // And live again: a send on B wakes a long-poll on A promptly.
    const since = (await raw(a.baseUrl, 'GET', `${C}/sync?filter=${TIMELINE}`, users[0]!.accessToken)).body.next_batch;
    const poll = raw(a.baseUrl, 'GET', `${C}/sync?since=${since}&timeout=10000&filter=${TIMELINE}`, users[0]!.accessToken);
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await raw(b.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/after`, users[1]!.accessToken, { msgtype: 'm.text', body: 'after' });
    const r = await poll;
    assert.ok(r.body.rooms.join[roomId].timeline.events.some((e: any) => e.content.body === 'after'));
    assert.ok(Date.now() - t0 < 1_000, `woken in ${Date.now() - t0} ms`);
  });
});

/** Runs the server until it exits (or is killed after `timeoutMs`). */
function runUntilExit(env: Record<string, string>, timeoutMs = 30_000): Promise<{ code: number | null; stderr: string }> {
  const inherited = { ...process.env };
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'NODE_TEST_CONTEXT', 'CONFIG_FILE', 'WORKERS']) delete inherited[k];
  const child = spawn(process.execPath, ['--import', 'tsx', 'homeserver/main.ts'], {
    cwd: repoRoot, env: { ...inherited, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => child.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }); }));
}

describe('start-up errors of several workers: one line each', () => {
  test('WORKERS=2 without REDIS_URL', async () => {
    const r = await runUntilExit({ WORKERS: '2', PORT: String(await freePort()), DATA_DIR: '/tmp/unused-workers-test' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trimEnd(), /^super-server: WORKERS=2 needs REDIS_URL/);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  });

  test('an unreachable REDIS_URL, alone and with WORKERS=3', { skip }, async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    for (const workers of ['1', '3']) {
      const r = await runUntilExit({ WORKERS: workers, PORT: String(await freePort()), REDIS_URL: dead, DATABASE_URL: process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres' });
      assert.notEqual(r.code, 0);
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line with WORKERS=${workers}:\n${r.stderr}`);
      assert.match(lines[0]!, new RegExp(`REDIS_URL ${dead.replace(/[.]/g, '\\.')}/? is unreachable`));
    }
  });
});
