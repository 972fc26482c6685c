// A homeserver with an outbox consumer that hands what it reads to a file (OUTBOX_FILE), one JSON
// line per item, and holds every batch while OUTBOX_HOLD exists: the test kills it between the
// commit of events and their hand-off, then restarts it (tests/integration/dag-outbox.test.ts).
import fs from 'node:fs';
import pino from 'pino';
import { loadConfig } from '../../homeserver/config.ts';
import { startHomeserver } from '../../homeserver/main.ts';

const file = process.env.OUTBOX_FILE!;
const hold = process.env.OUTBOX_HOLD!;
const config = loadConfig();
const hs = await startHomeserver(config, pino({ level: config.logLevel }));
hs.jobs.register('outbox test consumer', hs.outbox.consumer('test-sender', async (items) => {
  // Read, not handed off yet: the window a crash must not lose anything in.
  fs.writeFileSync(`${file}.read`, String(items.at(-1)!.pos));
  while (fs.existsSync(hold)) await new Promise((r) => setTimeout(r, 10));
  const lines = items.map((i) => JSON.stringify(i.kind === 'pdu' ? { pos: i.pos, id: i.eventId } : { pos: i.pos, edu: i.type })).join('\n');
  const fd = fs.openSync(file, 'a');
  fs.writeSync(fd, lines + '\n');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}, { pollMs: 50 }));
process.on('SIGTERM', () => void hs.stop().then(() => process.exit(0)));
