// Direct access to a test server's database, for tests that check the schema or seed rows in bulk.
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
