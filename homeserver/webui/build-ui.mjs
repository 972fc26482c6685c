// Builds the two web apps (admin-ui/ → admin-ui/dist, chat-ui/ → chat-ui/dist) with Vite.
//   node homeserver/webui/build-ui.mjs             build both (`npm run build`)
//   node homeserver/webui/build-ui.mjs --if-stale  only an app whose sources are newer than its dist
//   … --warn-only   a failed build is a warning, exit 0 (`prepare`: an install never fails for the
//                   UIs; `npm start` tries again, and the server serves the APIs without them)
// `npm install` / `npm ci` run it (the `prepare` script) and `npm start` runs it when a dist is
// missing or stale, so the README's two commands bring up the UIs too.
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(path.dirname(fileURLToPath(import.meta.url))));
export const APPS = ['admin-ui', 'chat-ui'];

/** The newest modification time of an app's sources (everything but dist/ and node_modules/). */
function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'dist' || entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** True when the app's dist/index.html is missing or older than one of its sources. */
export function isStale(app, base = root) {
  const dir = path.join(base, app);
  if (!existsSync(path.join(dir, 'index.html'))) return false; // no sources: nothing to build
  const built = path.join(dir, 'dist', 'index.html');
  return !existsSync(built) || statSync(built).mtimeMs < newestSource(dir);
}

/**
 * One build at a time per tree (test files running side by side, `npm start` beside `npm install`):
 * a lock directory; one older than a minute is a crashed build's and is taken over.
 */
async function withBuildLock(base, fn) {
  const lock = path.join(base, '.ui-build.lock');
  const deadline = Date.now() + 120_000;
  for (;;) {
    try { mkdirSync(lock); break; } catch (err) {
      if (err?.code !== 'EEXIST') throw err;
      let age = 0;
      try { age = Date.now() - statSync(lock).mtimeMs; } catch { continue; }
      if (age > 60_000 || Date.now() > deadline) { rmSync(lock, { recursive: true, force: true }); continue; }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try { return await fn(); } finally { rmSync(lock, { recursive: true, force: true }); }
}

/** Builds the given apps (default: those that are stale, or all with `force`); returns the names built. */
export async function buildApps({ force = false, base = root, log = (line) => process.stderr.write(`${line}\n`) } = {}) {
  const wanted = () => APPS.filter((app) => existsSync(path.join(base, app, 'index.html')) && (force || isStale(app, base)));
  if (!wanted().length) return [];
  return withBuildLock(base, async () => {
    const todo = wanted(); // another process may have built them while this one waited
    if (!todo.length) return [];
    const { build } = await import('vite');
    for (const app of todo) {
      const began = Date.now();
      await build({ configFile: path.join(base, app, 'vite.config.ts'), logLevel: 'warn' });
      log(`super-server: built ${app}/dist in ${((Date.now() - began) / 1000).toFixed(1)} s`);
    }
    return todo;
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildApps({ force: !process.argv.includes('--if-stale') }).then(() => process.exit(0), (err) => {
    // Vite's first line is "Build failed with 1 error:"; the error itself follows it.
    const lines = String(err?.message ?? err).split('\n').map((l) => l.trim()).filter(Boolean);
    process.stderr.write(`super-server: the web UI build failed: ${lines.slice(0, 2).join(' ')}\n`);
    process.exit(process.argv.includes('--warn-only') ? 0 : 1);
  });
}
