// A direct connection to a test server's database, on either backend: tests that must check what
// was written (nothing half-written) or plant rows the server would no longer accept.
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
