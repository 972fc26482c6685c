import cluster, { type Worker } from 'node:cluster';

/**
 * WORKERS=N: this process is the primary of N identical workers sharing one port (node:cluster
 * hands incoming connections to them in turn). A worker that dies is started again (after a
 * pause that grows while they keep dying); SIGTERM or SIGINT drains every worker and exits when
 * they have. The first worker starts alone and the others once it serves: a failure at start (a
 * bad setting, an unreachable database or Redis) is its one line on stderr, and the primary
 * exits with it.
 *
 * The primary opens no database or Redis connection of its own.
 */
export async function runPrimary(workers: number, log: (obj: Record<string, unknown>, msg: string) => void): Promise<void> {
  let stopping = false;
  let everReady = false;
  let firstReady = false;
  const ready = new Set<number>();
  let restarts = 0;
  let lastRestart = 0;

  // Workers run the same entry (start.mjs bundle or main.ts under tsx) with the same flags.
  cluster.setupPrimary({ exec: process.argv[1], args: process.argv.slice(2), execArgv: process.execArgv });

  const fork = (): Worker => {
    const w = cluster.fork({ SUPER_SERVER_WORKER: '1' });
    w.on('message', (m: unknown) => {
      if ((m as { type?: string })?.type === 'ready') {
        ready.add(w.id);
        // The first worker proved the settings, the database and Redis: start the others.
        if (!firstReady) { firstReady = true; for (let i = 1; i < workers; i++) fork(); }
        if (!everReady && ready.size === workers) log({ workers, pids: Object.values(cluster.workers ?? {}).map((x) => x?.process.pid) }, 'all workers listening');
        everReady ||= ready.size === workers;
      }
    });
    return w;
  };

  cluster.on('exit', (w, code, signal) => {
    const wasReady = ready.delete(w.id);
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    if (!wasReady && !everReady) {
      // Failed at start: the worker printed why. Stop the others and fail the same way.
      stopping = true;
      for (const other of Object.values(cluster.workers ?? {})) other?.process.kill('SIGTERM');
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(code || 1);
      cluster.on('exit', () => { if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(code || 1); });
      return;
    }
    const now = Date.now();
    restarts = now - lastRestart < 10_000 ? restarts + 1 : 0;
    lastRestart = now;
    const delay = Math.min(100 * 2 ** restarts, 5_000);
    log({ pid: w.process.pid, code, signal, restartInMs: delay }, 'worker died; starting another');
    setTimeout(() => { if (!stopping) fork(); }, delay);
  });

  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log({ signal }, 'draining all workers');
    const live = Object.values(cluster.workers ?? {});
    if (live.length === 0) process.exit(0);
    for (const w of live) w?.process.kill('SIGTERM');
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  // One first: a start-up failure (bad setting, unreachable database or Redis) is then one line
  // on stderr, not one per worker.
  fork();
}

/** In a worker: tell the primary this worker serves requests. */
export function reportReady(): void {
  if (cluster.isWorker) process.send?.({ type: 'ready' });
}

/** In a worker: the primary went away (killed): drain and exit rather than linger unsupervised. */
export function onPrimaryGone(fn: () => void): void {
  if (cluster.isWorker) cluster.worker?.on('disconnect', fn);
}

export const isClusterWorker = (): boolean => cluster.isWorker;
