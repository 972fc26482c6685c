// Start-to-first-served-request time and idle memory: embedded PostgreSQL (first start with initdb,
// then restarts on the same DATA_DIR) and external PostgreSQL.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  backendPids, createDatabase, fmt, memoryOf, onCleanup, postmasterPid, printTable, processTree, sleep, startHomeserver, summary,
  type Homeserver,
} from './lib.ts';

const IDLE_MS = 2_000;
const GOAL_RESTART_MS = 1_500;
const GOAL_RSS_MB = 150;

interface Sample {
  run: string;
  readyMs: number;
  /** The server's own figure (log line 'listening'): from startHomeserver() to listen. */
  serverMs: number;
  /** The embedded PostgreSQL's 'ready in' log figure (initdb, start, CREATE DATABASE). */
  pgMs: number;
  rssMb: number;
  pgRssMb: number;
  pgPssMb: number;
  pgProcs: number;
}

function logged(hs: Homeserver, re: RegExp): number {
  for (const line of hs.logs().split('\n')) {
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      const m = re.exec(`${j.msg} ${JSON.stringify(j)}`);
      if (m) return Number(m[1]);
    } catch { /* not a log line */ }
  }
  return NaN;
}

async function measure(run: string, hs: Homeserver, pgPids: number[]): Promise<Sample> {
  await sleep(IDLE_MS);
  const pgMem = pgPids.map((p) => { try { return memoryOf(p); } catch { return { rssMb: 0, pssMb: 0 }; } });
  return {
    run,
    readyMs: hs.readyMs,
    serverMs: logged(hs, /"startupMs":(\d+)/),
    pgMs: logged(hs, /embedded PostgreSQL: ready in (\d+) ms/),
    rssMb: memoryOf(hs.pid).rssMb,
    pgRssMb: pgMem.reduce((a, m) => a + m.rssMb, 0),
    pgPssMb: pgMem.reduce((a, m) => a + m.pssMb, 0),
    pgProcs: pgPids.length,
  };
}

export async function main(): Promise<void> {
  console.log(`startup: time from spawning \`node homeserver/start.mjs\` (what npm start runs) to the first 200 of GET /_matrix/client/versions`
    + ` (polled every 5 ms); memory ${IDLE_MS / 1000} s after that, idle`);
  const samples: Sample[] = [];
  const env = { LOG_LEVEL: 'info' }; // for the server's own timings

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-bench-startup-'));
  onCleanup(() => {
    const pid = postmasterPid(dataDir);
    if (pid) try { process.kill(pid, 'SIGQUIT'); } catch { /* gone */ }
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  for (const run of ['embedded, first start (initdb)', 'embedded, restart 1', 'embedded, restart 2', 'embedded, restart 3']) {
    const hs = await startHomeserver({ dataDir, env });
    const pm = postmasterPid(dataDir);
    samples.push(await measure(run, hs, pm ? processTree(pm) : []));
    await hs.stop();
  }

  const db = await createDatabase('startup');
  for (const run of ['external, first start (migrations)', 'external, restart']) {
    const hs = await startHomeserver({ databaseUrl: db.url, env });
    samples.push(await measure(run, hs, await backendPids(db.url)));
    await hs.stop();
  }
  await db.drop();

  printTable(samples.map((s) => ({
    run: s.run,
    'ready ms': Math.round(s.readyMs),
    'in startHomeserver ms': s.serverMs,
    'of which embedded pg ms': Number.isNaN(s.pgMs) ? '-' : s.pgMs,
    'server RSS MB': fmt(s.rssMb),
    'postgres RSS MB (sum)': fmt(s.pgRssMb),
    'postgres PSS MB': fmt(s.pgPssMb),
    'pg procs': s.pgProcs,
  })));
  console.log(`'ready ms' - 'in startHomeserver ms' = node start, module loading and tsx transpiling before startHomeserver() runs.`);
  console.log(`postgres figures: the embedded postmaster and its children; for external PostgreSQL, the server's backends only.`
    + ` RSS sums count shared memory once per process; PSS shares it out.`);
  const restarts = samples.filter((s) => s.run.startsWith('embedded, restart'));
  const restartMs = restarts.map((s) => s.readyMs).sort((a, b) => a - b)[Math.floor(restarts.length / 2)]!;
  const maxRss = Math.max(...samples.map((s) => s.rssMb));
  console.log(`goal: embedded restart <= ${GOAL_RESTART_MS} ms: ${restartMs <= GOAL_RESTART_MS ? 'MET' : 'NOT MET'} (median of ${restarts.length}: ${Math.round(restartMs)} ms)`);
  console.log(`goal: idle server RSS <= ${GOAL_RSS_MB} MB: ${maxRss <= GOAL_RSS_MB ? 'MET' : 'NOT MET'} (worst ${fmt(maxRss)} MB; with embedded postgres PSS: ${fmt(Math.max(...restarts.map((s) => s.rssMb + s.pgPssMb)))} MB)`);
  const key = (s: Sample) => s.run.replace(/ \(.*\)$/, '').replace(/\W+/g, '_');
  summary('startup', {
    ...Object.fromEntries(samples.flatMap((s) => [[`${key(s)}_readyMs`, Math.round(s.readyMs)], [`${key(s)}_rssMb`, s.rssMb], [`${key(s)}_pgPssMb`, s.pgPssMb]])),
    embeddedRestartMedianMs: Math.round(restartMs), restartGoalMet: restartMs <= GOAL_RESTART_MS, rssGoalMet: maxRss <= GOAL_RSS_MB,
  });
}
