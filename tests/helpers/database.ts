// Direct access to a test server's database, for tests that check the schema or seed rows in bulk.
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import type { TestServer } from './server.ts';

/** A connected client on the server's database: its DATABASE_URL, or its embedded PostgreSQL's socket. */
export async function serverDatabase(server: TestServer): Promise<pg.Client> {
  const client = server.env.DATABASE_URL
    ? new pg.Client({ connectionString: server.env.DATABASE_URL })
    : new pg.Client({ host: path.join(server.dataDir, 'run'), port: 5432, user: 'postgres', database: 'homeserver' });
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
