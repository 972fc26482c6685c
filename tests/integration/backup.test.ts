// npm run backup / npm run restore (finding 16): a round trip on the backend under test — write
// data, back up (while the server runs), wipe, restore, and the server serves the data again.
// issue 12: the backup is one archive of the database, the media files (DATA_DIR/media) and the
// signing key file when the server keeps one on disk; all three come back, and the signing key
// (in the database today) is the same.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { repoRoot, startServer } from '../helpers/server.ts';
import { api, registerUser } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';
import { downloadPath, mediaRequest, uploadMedia } from '../helpers/media.ts';
import type { TestServer } from '../helpers/server.ts';

const C = '/_matrix/client/v3';
const embedded = process.env.TEST_BACKEND === 'embedded';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-backup-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** `npm run backup|restore -- FILE`, or (`viaScript`) deploy/backup.sh|restore.sh FILE, which operators run. */
function npmRun(script: 'backup' | 'restore', file: string, env: Record<string, string>, viaScript = false): Promise<{ code: number | null; out: string; err: string }> {
  const inherited = { ...process.env };
  for (const k of ['DATABASE_URL', 'NODE_TEST_CONTEXT']) delete inherited[k];
  const [command, args] = viaScript ? ['bash', [`deploy/${script}.sh`, file]] : ['npm', ['run', '-s', script, '--', file]];
  const child = spawn(command, args, { cwd: repoRoot, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })));
}

async function adminQuery(sql: string): Promise<void> {
  const c = new pg.Client(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  await c.connect();
  try { await c.query(sql); } finally { await c.end(); }
}

async function storedSigningKey(server: TestServer): Promise<{ key_id: string; seed: string } | undefined> {
  const db = await connectDatabase(server);
  try { return (await db.query('SELECT key_id, seed FROM server_signing_keys ORDER BY created_ts DESC LIMIT 1')).rows[0]; } finally { await db.end(); }
}

test(`backup and restore round trip on ${embedded ? 'the embedded' : 'an external'} PostgreSQL`, async () => {
  const server = await startServer({ env: { KEEP_DB: '1' } });
  const dbEnv: Record<string, string> = embedded ? { DATA_DIR: server.dataDir } : { DATABASE_URL: server.env.DATABASE_URL!, DATA_DIR: server.dataDir };
  const restoredDb = `hs_restored_${process.pid}_${Date.now()}`;
  const freshDataDir = path.join(tmp, 'new-machine');
  try {
    const alice = await registerUser(server.baseUrl, `alice${Date.now()}`, 'correct horse battery');
    const roomId = (await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: alice.accessToken, body: { name: 'kept' } })).body.room_id as string;
    for (let i = 0; i < 3; i++) {
      assert.equal((await api(server.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/b${i}`, {
        token: alice.accessToken, body: { msgtype: 'm.text', body: `kept ${i} \u00e9\u{1F600}` },
      })).status, 200);
    }

    // A media file, and the signing key: in the database (server_signing_keys) and in the key file
    // the server keeps in DATA_DIR (SIGNING_KEY_PATH's default).
    const picture = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 31) & 0xff));
    const media = await uploadMedia(server.baseUrl, alice.accessToken, picture, 'image/png', 'kept.png');
    const signingKey = await storedSigningKey(server);
    assert.ok(signingKey, 'the server made its signing key');
    const keyFileBytes = fs.readFileSync(path.join(server.dataDir, 'signing.key'));
    assert.match(keyFileBytes.toString(), new RegExp(`^ed25519 ${signingKey.key_id.replace(/^ed25519:/, '')} `), 'the key file holds the server\'s key');

    // While the server runs: one consistent snapshot.
    const file = path.join(tmp, 'round-trip.backup.tar');
    const backup = await npmRun('backup', file, dbEnv, true);
    assert.equal(backup.code, 0, backup.err);
    assert.match(backup.out, /^backed up \d+ rows in \d+ tables from .*, [1-9]\d* media files, the signing key file .*signing\.key to /);
    assert.ok(fs.statSync(file).size > picture.length, 'a real file, with the media in it');
    assert.equal(fs.statSync(file).mode & 0o077, 0, 'readable by its owner only: it holds the signing key');

    // A message after the backup is not in it.
    assert.equal((await api(server.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/after`, {
      token: alice.accessToken, body: { msgtype: 'm.text', body: 'after the backup' },
    })).status, 200);

    let restoreEnv: Record<string, string>;
    if (embedded) {
      // Embedded: restoring under a running server is refused; then wipe the cluster and restore.
      const refused = await npmRun('restore', file, dbEnv);
      assert.equal(refused.code, 1);
      assert.match(refused.err.trim(), /^super-server: the homeserver \(pid \d+\) is running on DATA_DIR .*: stop it before restoring$/);
      await server.kill();
      await server.stop(); // KEEP_DB: the data dir stays
      for (const gone of ['pg', 'media', 'signing.key']) fs.rmSync(path.join(server.dataDir, gone), { recursive: true, force: true });
      restoreEnv = dbEnv;
    } else {
      // External: into a new, empty database; a database that is not empty is refused.
      const refused = await npmRun('restore', file, dbEnv);
      assert.equal(refused.code, 1);
      assert.match(refused.err.trim(), /^super-server: DATABASE_URL names a database that is not empty/);
      await server.stop();
      await adminQuery(`CREATE DATABASE "${restoredDb}"`);
      const u = new URL(server.env.DATABASE_URL!);
      u.pathname = `/${restoredDb}`;
      // A new machine: an empty database and an empty DATA_DIR.
      fs.mkdirSync(freshDataDir);
      restoreEnv = { DATABASE_URL: u.toString(), DATA_DIR: freshDataDir };
    }

    // A truncated file restores nothing.
    const truncated = path.join(tmp, 'truncated.backup.tar');
    fs.writeFileSync(truncated, fs.readFileSync(file).subarray(0, Math.floor(fs.statSync(file).size / 2)));
    const bad = await npmRun('restore', truncated, restoreEnv);
    assert.equal(bad.code, 1);
    assert.equal(bad.err.trim().split('\n').length, 1, bad.err);

    if (!embedded) {
      // A bare database dump, as earlier versions wrote, still restores (into another empty database).
      const oldFormat = path.join(tmp, 'database.backup.gz');
      assert.equal(spawnSync('tar', ['-xf', file, '-C', tmp, 'database.backup.gz']).status, 0);
      const u = new URL(server.env.DATABASE_URL!);
      u.pathname = `/${restoredDb}_old`;
      await adminQuery(`CREATE DATABASE "${restoredDb}_old"`);
      const old = await npmRun('restore', oldFormat, { DATABASE_URL: u.toString(), DATA_DIR: path.join(tmp, 'old-format') });
      await adminQuery(`DROP DATABASE IF EXISTS "${restoredDb}_old" WITH (FORCE)`);
      assert.equal(old.code, 0, old.err);
      assert.match(old.out, /^restored \d+ rows in \d+ tables from .*database\.backup\.gz into DATABASE_URL\n$/);
    }

    const restore = await npmRun('restore', file, restoreEnv, true);
    assert.equal(restore.code, 0, restore.err);
    assert.match(restore.out, /^restored \d+ rows in \d+ tables.*; [1-9]\d* media files and the signing key file .*signing\.key into /);
    const dataDir = embedded ? server.dataDir : freshDataDir;
    assert.deepEqual(fs.readFileSync(path.join(dataDir, 'signing.key')), keyFileBytes, 'the key file is back, byte for byte');

    const again = embedded
      ? await startServer({ embedded: true, env: { DATA_DIR: server.dataDir, PORT: String(server.port) } })
      : await startServer({ embedded: false, env: restoreEnv });
    try {
      // (`again` runs on DATA_DIR=server.dataDir when embedded; its own dataDir field names the helper's unused one.)
      assert.deepEqual(await storedSigningKey(embedded ? { ...again, dataDir: server.dataDir } : again), signingKey, 'the same signing key');
      const download = await mediaRequest(again.baseUrl, 'GET', downloadPath(media.serverName, media.mediaId), { token: alice.accessToken });
      assert.equal(download.status, 200);
      assert.ok(download.bytes.equals(picture), 'the media file is back');
      const login = await api(again.baseUrl, 'POST', `${C}/login`, {
        body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.userId }, password: 'correct horse battery' },
      });
      assert.equal(login.status, 200, 'the account is back');
      const token = login.body.access_token as string;
      assert.equal((await api(again.baseUrl, 'GET', `${C}/account/whoami`, { token: alice.accessToken })).status, 200, 'old tokens too');
      const page = await api(again.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=20`, { token });
      assert.equal(page.status, 200);
      const bodies = (page.body.chunk as Array<{ type: string; content: { body?: string } }>).filter((e) => e.type === 'm.room.message').map((e) => e.content.body);
      assert.deepEqual(bodies.reverse(), [0, 1, 2].map((i) => `kept ${i} \u00e9\u{1F600}`));
      // Sequences were restored: new writes get new positions and ids.
      const send = await api(again.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/new`, {
        token, body: { msgtype: 'm.text', body: 'after the restore' },
      });
      assert.equal(send.status, 200);
      const sync = await api(again.baseUrl, 'GET', `${C}/sync?timeout=0`, { token });
      const timeline = sync.body.rooms.join[roomId].timeline.events.map((e: { content: { body?: string } }) => e.content.body);
      assert.equal(timeline.at(-1), 'after the restore');
      assert.equal((await api(again.baseUrl, 'POST', `${C}/createRoom`, { token, body: {} })).status, 200);
    } finally {
      await again.stop();
    }
  } finally {
    await server.stop();
    fs.rmSync(server.dataDir, { recursive: true, force: true });
    if (!embedded) {
      await adminQuery(`DROP DATABASE IF EXISTS "${new URL(server.env.DATABASE_URL!).pathname.slice(1)}" WITH (FORCE)`);
      await adminQuery(`DROP DATABASE IF EXISTS "${restoredDb}" WITH (FORCE)`);
    }
  }
});
