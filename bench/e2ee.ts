// End-to-end encryption's server side: keys/claim of 100 devices in one request, keys/query of
// 1,000 users in one request, and a burst of 1,000 to-device messages (one request each, 16 at a
// time) drained by the receiver's /sync (100 per sync). Figures on a busy machine are noise.
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { generateSigningKey, signJson } from '../homeserver/protocol/signing.ts';
import { Client, createDatabase, enc, fmt, latencyLine, now, pool, startHomeserver, stats, summary, type User } from './lib.ts';

const USERS = Number(process.env.E2EE_BENCH_USERS ?? 1000);
const CLAIMED = 100;
const MESSAGES = 1000;
const ROUNDS = 5;
const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');

export async function main(): Promise<void> {
  console.log(`e2ee: keys/claim of ${CLAIMED} devices, keys/query of ${USERS} users (${ROUNDS} rounds each), a ${MESSAGES}-message to-device burst drained by /sync`);
  const db = await createDatabase('e2ee');
  const hs = await startHomeserver({ databaseUrl: db.url });
  const c = new Client(hs.baseUrl);
  try {
    const run = Math.random().toString(36).slice(2, 7);
    let t = now();
    const users = await seedUsers(db.url, `e2ee${run}u`, USERS);
    // Every device uploads its keys; the first CLAIMED also ROUNDS one-time keys each.
    await pool(USERS, 16, async (i) => {
      const u = users[i]!;
      const key = generateSigningKey('SEEDED');
      const deviceKeys = signJson({ user_id: u.userId, device_id: 'SEEDED', algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
        keys: { 'ed25519:SEEDED': key.publicKey, 'curve25519:SEEDED': b64(32) } }, u.userId, key);
      const otks: Record<string, unknown> = {};
      if (i < CLAIMED) for (let k = 0; k < ROUNDS; k++) otks[`signed_curve25519:K${k}`] = signJson({ key: b64(32) }, u.userId, key);
      await c.ok('POST', '/_matrix/client/v3/keys/upload', { token: u.token, body: { device_keys: deviceKeys, one_time_keys: otks } });
    });
    console.log(`setup: ${USERS} users with device keys in ${fmt((now() - t) / 1000)} s`);

    const asker = users[0]!;
    const claimBody = { one_time_keys: Object.fromEntries(users.slice(0, CLAIMED).map((u) => [u.userId, { SEEDED: 'signed_curve25519' }])) };
    const claimMs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const res = await c.request('POST', '/_matrix/client/v3/keys/claim', { token: asker.token, body: claimBody });
      const got = Object.keys(res.body?.one_time_keys ?? {}).length;
      if (res.status !== 200 || got !== CLAIMED) throw new Error(`keys/claim: HTTP ${res.status}, ${got} users' keys`);
      claimMs.push(res.ms);
    }
    console.log(latencyLine(`keys/claim of ${CLAIMED} devices (one request)`, stats(claimMs)));

    const queryBody = { device_keys: Object.fromEntries(users.map((u) => [u.userId, []])) };
    const queryMs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const res = await c.request('POST', '/_matrix/client/v3/keys/query', { token: asker.token, body: queryBody });
      const got = Object.values(res.body?.device_keys ?? {}).filter((d) => Object.keys(d as object).length === 1).length;
      if (res.status !== 200 || got !== USERS) throw new Error(`keys/query: HTTP ${res.status}, ${got} users with keys`);
      queryMs.push(res.ms);
    }
    console.log(latencyLine(`keys/query of ${USERS} users (one request)`, stats(queryMs)));

    // The burst: a receiver that has synced once, then MESSAGES sends, then the drain.
    const sender = users[1]!;
    const receiver = users[2]!;
    let since: string = (await c.ok('GET', '/_matrix/client/v3/sync?timeout=0', { token: receiver.token })).next_batch;
    t = now();
    await pool(MESSAGES, 16, (i) => c.ok('PUT', `/_matrix/client/v3/sendToDevice/m.bench/${run}-${i}`, {
      token: sender.token, body: { messages: { [receiver.userId]: { SEEDED: { i, pad: b64(200) } } } },
    }));
    const sendS = (now() - t) / 1000;
    console.log(`to-device burst: ${MESSAGES} sends in ${fmt(sendS, 2)} s (${fmt(MESSAGES / sendS, 0)} sends/s, 16 at a time)`);
    t = now();
    const seen = new Set<number>();
    let syncs = 0;
    while (seen.size < MESSAGES) {
      const b = await c.ok('GET', `/_matrix/client/v3/sync?timeout=5000&since=${enc(since)}`, { token: receiver.token });
      syncs++;
      for (const e of b.to_device?.events ?? []) seen.add(e.content.i);
      since = b.next_batch;
      if (syncs > MESSAGES) throw new Error(`drain stuck at ${seen.size} messages`);
    }
    const drainS = (now() - t) / 1000;
    console.log(`to-device drain: ${MESSAGES} messages in ${syncs} syncs, ${fmt(drainS, 2)} s (${fmt(MESSAGES / drainS, 0)} messages/s)`);
    console.log('(figures measured on a shared, busy machine are noise: compare runs on a quiet one)');
    summary('e2ee', {
      claimDevices: CLAIMED, claimMs: stats(claimMs), queryUsers: USERS, queryMs: stats(queryMs),
      toDeviceMessages: MESSAGES, toDeviceSendsPerSec: MESSAGES / sendS, toDeviceDrainSyncs: syncs, toDeviceDrainSeconds: drainS,
    });
  } finally {
    c.close();
    await hs.stop();
    await db.drop();
  }
}

/** Accounts with one device (SEEDED) and an access token each, written in four statements. */
async function seedUsers(url: string, prefix: string, n: number): Promise<User[]> {
  const users = Array.from({ length: n }, (_, i) => ({ userId: `@${prefix}${i}:localhost`, localpart: `${prefix}${i}`, token: `syt_${randomBytes(24).toString('base64url')}` }));
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const ts = Date.now();
    const ids = users.map((u) => u.userId);
    await db.query('INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, created_ts) SELECT u, l, NULL, FALSE, FALSE, $3 FROM unnest($1::text[], $2::text[]) AS x(u, l)', [ids, users.map((u) => u.localpart), ts]);
    await db.query('INSERT INTO profiles (user_id, displayname) SELECT u, l FROM unnest($1::text[], $2::text[]) AS x(u, l)', [ids, users.map((u) => u.localpart)]);
    await db.query("INSERT INTO devices (user_id, device_id, created_ts) SELECT u, 'SEEDED', $2 FROM unnest($1::text[]) AS x(u)", [ids, ts]);
    await db.query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) SELECT h, u, 'SEEDED', $3 FROM unnest($1::bytea[], $2::text[]) AS x(h, u)",
      [users.map((u) => createHash('sha256').update(u.token, 'utf8').digest()), ids, ts]);
  } finally {
    await db.end();
  }
  return users.map((u) => ({ userId: u.userId, token: u.token }));
}
