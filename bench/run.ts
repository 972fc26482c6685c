// npm run bench -- <name>: runs one benchmark (or `all`), cleaning up whatever it started.
import os from 'node:os';
import { runCleanups } from './lib.ts';

const benches: Record<string, () => Promise<{ main(): Promise<void> }>> = {
  baseline: () => import('./baseline.ts'),
  send: () => import('./send.ts'),
  'sync-latency': () => import('./sync-latency.ts'),
  state: () => import('./state.ts'),
  startup: () => import('./startup.ts'),
  fanout: () => import('./fanout.ts'),
  'initial-sync': () => import('./initial-sync.ts'),
  push: () => import('./push.ts'), // issue 6, receipts-push helper
  workers: () => import('./workers.ts'),
  media: () => import('./media.ts'), // issue 8: media repository
  flood: () => import('./flood.ts'), // issue 7 (limits7): attacks and the rate limiter's cost
  e2ee: () => import('./e2ee.ts'), // issue 8, e2ee helper
  'state-res': () => import('./state-res.ts'), // issue 10, stateres helper: state resolution v2 on synthetic forks
  dag: () => import('./dag.ts'), // issue 10: persisting remote events, forks, state resolution
  'admin-users': () => import('./admin-users.ts'), // issue 9 (roles9): admin user list and search
  'admin-rooms': () => import('./admin-rooms.ts'), // issue 9 (mod9): the admin room list over 10,000 rooms
  purge: () => import('./purge.ts'), // issue 9 (mod9): purge of a room with 10,000 events
  'admin-ui': () => import('./admin-ui.ts'), // issue 12 (adminui12): the admin dashboard's size and time to interactive over 100,000 users
  'chat-ui': () => import('./chat-ui.ts'), // issue 13: the chat app in Chromium
  federation: () => import('./federation.ts'), // issue 11: events/s and latency A → B, a remote join
};

const names = process.argv.slice(2);
if (!names.length || names.some((n) => n !== 'all' && !benches[n])) {
  console.error(`usage: npm run bench -- <${[...Object.keys(benches), 'all'].join('|')}> [...]`);
  process.exit(2);
}
// Ctrl-C reaches us twice (from the terminal and relayed by tsx): clean up once, force only on a third signal.
let signals = 0;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (++signals === 1) { console.error(`\n${sig}: cleaning up`); void runCleanups().finally(() => process.exit(130)); }
    else if (signals > 2) process.exit(130);
  });
}

let failed = false;
for (const name of names.includes('all') ? Object.keys(benches) : names) {
  const load = os.loadavg()[0]!;
  console.log(`\n=== ${name} === (load average ${load.toFixed(2)} on ${os.cpus().length} cores before starting: other work on the machine skews every figure)`);
  try {
    await (await benches[name]!()).main();
  } catch (e) {
    failed = true;
    console.error(`${name} failed:`, e);
  } finally {
    await runCleanups();
  }
}
process.exit(failed ? 1 : 0);
