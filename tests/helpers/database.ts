// A direct connection to a test server's database, on either backend: tests that must check what
// was written (nothing half-written), plant rows the server would no longer accept, or seed rows in bulk.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { TestServer } from './server.ts';

/** Connects to the server's database: its DATABASE_URL, or the embedded cluster's socket. */
export async function connectDatabase(server: TestServer): Promise<pg.Client> {
  let client: pg.Client;
  if (server.env.DATABASE_URL) client = new pg.Client({ connectionString: server.env.DATABASE_URL });
  else {
    // The embedded cluster (DATA_DIR/pg, maybe a link) names its socket dir in postmaster.pid, line 5.
    const pgdata = fs.realpathSync(path.join(server.dataDir, 'pg'));
    const socketDir = fs.readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[4]!.trim();
    client = new pg.Client({ host: socketDir, port: 5432, user: 'postgres', database: 'homeserver' });
  }
  await client.connect();
  return client;
}

/**
 * Accounts made straight in the database, each with one device and access token: hundreds in
 * milliseconds, where registering over HTTP spends ~50 ms of password hashing on each.
 */
export async function seedUsers(db: pg.Client, serverName: string, prefix: string, n: number): Promise<Array<{ userId: string; accessToken: string; deviceId: string }>> {
  const users = Array.from({ length: n }, (_, i) => ({
    userId: `@${prefix}${i}:${serverName}`, localpart: `${prefix}${i}`, accessToken: `syt_${randomBytes(24).toString('base64url')}`, deviceId: 'SEEDED',
  }));
  const now = Date.now();
  await db.query(
    `INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, created_ts) SELECT u, l, NULL, FALSE, FALSE, $3 FROM unnest($1::text[], $2::text[]) AS x(u, l)`,
    [users.map((u) => u.userId), users.map((u) => u.localpart), now],
  );
  await db.query('INSERT INTO profiles (user_id, displayname) SELECT u, l FROM unnest($1::text[], $2::text[]) AS x(u, l)', [users.map((u) => u.userId), users.map((u) => u.localpart)]);
  await db.query(`INSERT INTO devices (user_id, device_id, created_ts) SELECT u, 'SEEDED', $2 FROM unnest($1::text[]) AS x(u)`, [users.map((u) => u.userId), now]);
  await db.query(
    `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) SELECT h, u, 'SEEDED', $3 FROM unnest($1::bytea[], $2::text[]) AS x(h, u)`,
    [users.map((u) => createHash('sha256').update(u.accessToken, 'utf8').digest()), users.map((u) => u.userId), now],
  );
  return users.map(({ userId, accessToken, deviceId }) => ({ userId, accessToken, deviceId }));
}
