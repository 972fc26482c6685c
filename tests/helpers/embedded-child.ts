// Runs the embedded PostgreSQL launcher in its own process, so a test can SIGKILL the launcher's host.
// Usage: node --import tsx tests/helpers/embedded-child.ts <dataDir>
// Prints one JSON line {connection} once the server is ready, then idles until killed.
import { startEmbeddedPostgres } from '../../homeserver/storage/embedded.ts';

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: embedded-child.ts <dataDir>');
const pg = await startEmbeddedPostgres({ dataDir, log: (m) => process.stderr.write(m + '\n') });
process.stdout.write(JSON.stringify({ connection: pg.connection }) + '\n');
setInterval(() => {}, 60_000);
process.on('SIGTERM', () => void pg.stop().then(() => process.exit(0)));
