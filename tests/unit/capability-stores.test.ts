import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * One owner per table (DESIGN.md §3): a capability's SQL lives only in its store.ts, and no other
 * folder imports that store; only the composition root (main.ts) builds it. The folders listed
 * here are the ones already restructured; a folder joins the list when it has a store of its own.
 */
const OWNED = ['accounts', 'accountdata', 'server', 'sync'];
const ROOT = new URL('../../homeserver/', import.meta.url).pathname;
const COMPOSITION_ROOT = 'main.ts';

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? tsFiles(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []);
}

const files = tsFiles(ROOT).map((path) => ({ path: relative(ROOT, path), text: readFileSync(path, 'utf8') }));

/** A query's text handed to knex (`x.raw('SELECT …')`), as opposed to Routes.raw('get', …). */
const SQL_CALL = /\.raw\(\s*[`'"]\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|LOCK|TRUNCATE)\b/i;

test('SQL of the owned folders lives only in their store.ts', () => {
  const offenders = files
    .filter((f) => OWNED.some((o) => f.path.startsWith(`${o}/`)) && !f.path.endsWith('/store.ts') && SQL_CALL.test(f.text))
    .map((f) => f.path);
  assert.deepEqual(offenders, []);
});

test("no other folder imports an owned folder's store (only the composition root builds it)", () => {
  const offenders: string[] = [];
  for (const f of files) {
    if (f.path === COMPOSITION_ROOT) continue;
    for (const o of OWNED) {
      if (f.path.startsWith(`${o}/`)) continue;
      if (new RegExp(`from '[./]*/?${o}/store\\.ts'`).test(f.text)) offenders.push(`${f.path} → ${o}/store.ts`);
    }
  }
  assert.deepEqual(offenders, []);
});

test('the check sees what it looks for', () => {
  assert.ok(SQL_CALL.test("await trx.raw('SELECT 1')"));
  assert.ok(!SQL_CALL.test("r.raw('get', '/health', () => ({}))"));
  assert.ok(files.some((f) => f.path === 'accounts/store.ts' && SQL_CALL.test(f.text)));
});
