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
