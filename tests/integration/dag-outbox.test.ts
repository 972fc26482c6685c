// The outbox survives a crash between the commit of events and their hand-off to the consumer:
// SIGKILL while the reader holds a batch it has read, restart, and every event is handed exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

let server: TestServer;
let me: Credentials;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outbox-'));
const file = path.join(dir, 'handed');
const hold = path.join(dir, 'hold');

before(async () => {
  server = await startServer({ entry: 'tests/helpers/outbox-server.ts', env: { OUTBOX_FILE: file, OUTBOX_HOLD: hold } });
  me = await registerUser(server.baseUrl);
});
after(async () => {
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

function handed(): string[] {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).id).filter(Boolean);
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (const end = Date.now() + 15_000; Date.now() < end; await new Promise((r) => setTimeout(r, 25))) if (ok()) return;
  throw new Error(`timed out waiting for ${what}`);
}

test('SIGKILL between commit and hand-off: after a restart the reader hands every event exactly once', async () => {
  const room = await api(server.baseUrl, 'POST', '/_matrix/client/v3/createRoom', { token: me.accessToken, body: {} });
  assert.equal(room.status, 200);
  const roomId = room.body.room_id as string;
  const send = async (txn: string) => {
    const r = await api(server.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, { token: me.accessToken, body: { msgtype: 'm.text', body: txn } });
    assert.equal(r.status, 200);
    return r.body.event_id as string;
  };
  const first = [await send('a1'), await send('a2')];
  await until('the first events handed off', () => first.every((id) => handed().includes(id)));

  // Hold the hand-off, commit more events, wait until the reader has read them: then kill.
  fs.writeFileSync(hold, '');
  fs.rmSync(`${file}.read`, { force: true });
  const held: string[] = [];
  for (let i = 0; i < 5; i++) held.push(await send(`b${i}`));
  await until('the reader holding a batch', () => fs.existsSync(`${file}.read`));
  await server.kill();
  assert.ok(held.every((id) => !handed().includes(id)), 'nothing of the held batch was handed off');

  fs.rmSync(hold);
  await server.restart();
  await until('the held events handed off after the restart', () => held.every((id) => handed().includes(id)));
  const after = [await send('c1')];
  await until('a new event', () => handed().includes(after[0]!));

  const all = handed();
  for (const id of [...first, ...held, ...after]) assert.equal(all.filter((x) => x === id).length, 1, `${id} handed once`);
  // In stream order, and the room's own events (create, members, …) each exactly once too.
  const positions = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).pos as number);
  assert.deepEqual(positions, [...positions].sort((a, b) => a - b));
  assert.equal(new Set(all).size, all.length);
});

// Two workers need an external database and Redis: not part of the embedded PostgreSQL's run.
if (process.env.TEST_BACKEND !== 'embedded') test('two workers: one elected reader hands each event once; when it dies the other takes over from the saved position', async () => {
  const shared = path.join(dir, 'two-workers');
  const holdTwo = path.join(dir, 'hold-two');
  const handedTwo = () => (fs.existsSync(shared) ? fs.readFileSync(shared, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).id).filter(Boolean) : []);
  const env = { OUTBOX_FILE: shared, OUTBOX_HOLD: holdTwo, LOG_LEVEL: 'info' };
  const a = await startServer({ redis: true, entry: 'tests/helpers/outbox-server.ts', env });
  const b = await startServer({
    entry: 'tests/helpers/outbox-server.ts',
    env: { ...env, DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! },
  });
  try {
    const user = await registerUser(a.baseUrl);
    const room = await api(a.baseUrl, 'POST', '/_matrix/client/v3/createRoom', { token: user.accessToken, body: {} });
    const sends: string[] = [];
    for (let i = 0; i < 6; i++) {
      const via = i % 2 ? b : a;
      const r = await api(via.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/w${i}`, { token: user.accessToken, body: { body: `w${i}` } });
      assert.equal(r.status, 200);
      sends.push(r.body.event_id);
    }
    await until('the events of both workers handed off', () => sends.every((id) => handedTwo().includes(id)));
    // Whoever reads holds its next batch; both die in turn, the survivor or the restarted one takes over.
    fs.writeFileSync(holdTwo, '');
    fs.rmSync(`${shared}.read`, { force: true });
    const more: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await api(b.baseUrl, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/x${i}`, { token: user.accessToken, body: { body: `x${i}` } });
      more.push(r.body.event_id);
    }
    await until('the reader holding a batch', () => fs.existsSync(`${shared}.read`));
    // Kill the worker that holds the background jobs (its log says so), release: the other reads.
    const leaders = [a, b].filter((s) => s.logs().includes('background jobs run on this worker'));
    assert.equal(leaders.length, 1, 'one worker reads');
    await leaders[0]!.kill();
    fs.rmSync(holdTwo);
    await until('the held events handed off by the other worker', () => more.every((id) => handedTwo().includes(id)));
    const all = handedTwo();
    for (const id of [...sends, ...more]) assert.equal(all.filter((x) => x === id).length, 1, `${id} handed once`);
    assert.equal(new Set(all).size, all.length);
  } finally {
    await b.stop();
    await a.stop();
  }
});
