// One owner per table (issue 5, deliverable 5; DESIGN.md §3): the room engine's tables are queried
// only by the store files of homeserver/rooms/, and the capabilities built on it read rooms through
// RoomReader; rooms/ imports nothing from sync/ (the stream tokens live in storage/stream-token.ts);
// every other capability's SQL lives in its store.ts, which only the composition root imports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

const ROOT = join(import.meta.dirname, '../../homeserver');
const ROOM_TABLES = ['events', 'rooms', 'state_groups', 'state_group_entries', 'current_state', 'room_memberships', 'event_types', 'state_keys', 'room_aliases', 'event_txns', 'event_search', 'room_list_stats', 'room_backfill_points', 'outbox_edus', 'outbox_positions'];
/** Capabilities that read rooms only through the room engine's read interface. */
const READERS = ['search', 'relations', 'timestamps', 'directory', 'upgrades', 'profiles', 'sync', 'push', 'pushers', 'receipts', 'ephemeral', 'limits', 'e2ee', 'moderation', 'admin-stats', 'friends'];

function tsFiles(folder: string): string[] {
  return readdirSync(join(ROOT, folder)).filter((f) => f.endsWith('.ts')).map((f) => `${folder}/${f}`);
}

const source = (file: string) => readFileSync(join(ROOT, file), 'utf8');

/** Tables named after FROM, JOIN, INTO or UPDATE in SQL text. */
function tablesIn(text: string): string[] {
  const found = new Set<string>();
  for (const m of text.matchAll(/\b(?:FROM|JOIN|INTO|UPDATE)\s+([a-z_]+)/g)) found.add(m[1]!);
  return [...found];
}

test('the capabilities built on rooms query none of its tables and import none of its store files', () => {
  for (const folder of READERS) {
    for (const file of tsFiles(folder)) {
      const text = source(file);
      const touched = tablesIn(text).filter((t) => ROOM_TABLES.includes(t));
      assert.deepEqual(touched, [], `${file} queries the room engine's tables ${touched.join(', ')}`);
      const imports = [...text.matchAll(/from '\.\.\/rooms\/([a-z-]+)\.ts'/g)].map((m) => m[1]!);
      const stores = imports.filter((name) => name.includes('store') || name === 'format' || name === 'visibility');
      assert.deepEqual(stores, [], `${file} imports rooms/${stores.join(', rooms/')} instead of going through RoomReader`);
      assert.doesNotMatch(text, /EVENT_COLUMNS|EVENT_JOINS/, `${file} builds event rows itself`);
    }
  }
});

test('inside rooms/, SQL lives only in store files', () => {
  for (const file of tsFiles('rooms')) {
    if (/store\.ts$/.test(file)) continue;
    // engine.ts hands the store its held connection (interning); it runs no SQL text of its own.
    assert.equal(tablesIn(source(file)).filter((t) => ROOM_TABLES.includes(t)).length, 0, `${file} has SQL`);
    assert.doesNotMatch(source(file), /\.raw\(\s*['`"]/, `${file} runs SQL`);
  }
});

test('rooms/ imports nothing from sync/ (no rooms <-> sync import cycle)', () => {
  for (const file of tsFiles('rooms')) assert.doesNotMatch(source(file), /from '\.\.\/sync\//, `${file} imports sync/`);
});

test('the room store and visibility caches are bounded LRU caches', () => {
  // A Map field grows without bound (roomCache) or is trimmed by hand; LruCache has a capacity.
  for (const file of ['rooms/store.ts', 'rooms/visibility.ts']) {
    const fields = [...source(file).matchAll(/^\s+private (?:readonly )?\w+ = new (\w+)</gm)].map((m) => m[1]);
    assert.ok(fields.length > 0, `${file} declares its caches`);
    assert.deepEqual(fields.filter((k) => k !== 'LruCache'), [], `${file} keeps a cache in a ${fields.join(', ')}`);
  }
});

/** Capabilities with store files of their own (store.ts, *-store.ts), built only by the composition root (main.ts). */
const OWNED = ['accounts', 'accountdata', 'server', 'sync', 'push', 'pushers', 'receipts', 'media', 'limits', 'e2ee', 'admin', 'moderation', 'admin-stats', 'friends'];
const COMPOSITION_ROOT = 'main.ts';
/** issue 9: the admin CLI (npm run admin) is a composition root of its own, without a server. */
const CLI_ROOTS = ['admin/cli.ts'];

function allTsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? allTsFiles(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []);
}
const files = allTsFiles(ROOT).map((path) => ({ path: relative(ROOT, path), text: readFileSync(path, 'utf8') }));

/** A query's text handed to knex (`x.raw('SELECT …')`), as opposed to Routes.raw('get', …). */
const SQL_CALL = /\.raw\(\s*[`'"]\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|LOCK|TRUNCATE)\b(?![`'"])/i;

test('SQL of the owned folders lives only in their store files', () => {
  const offenders = files
    .filter((f) => OWNED.some((o) => f.path.startsWith(`${o}/`)) && !/\/(?:[a-z-]+-)?store\.ts$/.test(f.path) && SQL_CALL.test(f.text))
    .map((f) => f.path);
  assert.deepEqual(offenders, []);
});

test("no other folder imports an owned folder's store (only the composition root builds it)", () => {
  const offenders: string[] = [];
  for (const f of files) {
    if (f.path === COMPOSITION_ROOT || CLI_ROOTS.includes(f.path)) continue;
    for (const o of OWNED) {
      if (f.path.startsWith(`${o}/`)) continue;
      if (new RegExp(`from '[./]*/?${o}/(?:[a-z-]+-)?store\\.ts'`).test(f.text)) offenders.push(`${f.path} → ${o}/store.ts`);
    }
  }
  assert.deepEqual(offenders, []);
});

test('the checks see what they look for', () => {
  assert.ok(SQL_CALL.test("await trx.raw('SELECT 1')"));
  assert.ok(!SQL_CALL.test("r.raw('get', '/health', () => ({}))"));
  assert.ok(!SQL_CALL.test("r.raw('delete', '/_synapse/admin/v1/x', () => ({}))"));
  assert.ok(SQL_CALL.test("db.raw('DELETE FROM x')"));
  assert.ok(files.some((f) => f.path === 'accounts/store.ts' && SQL_CALL.test(f.text)));
  assert.deepEqual(tablesIn('SELECT 1 FROM events e JOIN rooms r'), ['events', 'rooms']);
});

// issue 11 (fed11): the top-level federation/ folder owns the federation_* tables; its SQL lives in
// its store files; homeserver/ never imports it (but the composition root); it reads no store of homeserver/.
test('federation/: SQL only in its store files, on its own tables; homeserver/ does not import it', () => {
  const FED = join(import.meta.dirname, '../../federation');
  const fedFiles = allTsFiles(FED).map((path) => ({ path: relative(FED, path), text: readFileSync(path, 'utf8') }));
  assert.ok(fedFiles.some((f) => f.path === 'queue-store.ts' && SQL_CALL.test(f.text)), 'the check sees the store files');
  assert.deepEqual(fedFiles.filter((f) => !/(?:^|-)store\.ts$/.test(f.path) && SQL_CALL.test(f.text)).map((f) => f.path), []);
  const foreign = fedFiles.flatMap((f) => tablesIn(f.text).filter((t) => !t.startsWith('federation_') && t !== 'unnest').map((t) => `${f.path}: ${t}`));
  assert.deepEqual(foreign, []);
  assert.deepEqual(fedFiles.filter((f) => /from '\.\.\/homeserver\/[a-z]+\/(?:[a-z-]+-)?store\.ts'/.test(f.text)).map((f) => f.path), []);
  assert.deepEqual(files.filter((f) => f.path !== COMPOSITION_ROOT && /from '(?:\.\.\/)+federation\//.test(f.text)).map((f) => f.path), []);
});

// issue 12 (userbans12): user_restrictions (migration 021) belongs to accounts/, which writes it in
// the same transaction as the flags of `users` it describes; the admin API goes through AccountService.
test('user_restrictions is queried only by the store files of accounts/', () => {
  const touching = files.filter((f) => tablesIn(f.text).includes('user_restrictions')).map((f) => f.path).sort();
  assert.deepEqual(touching.filter((p) => !/^accounts\/(?:[a-z-]+-)?store\.ts$/.test(p) && !p.startsWith('storage/migrations/')), []);
  assert.ok(touching.includes('accounts/restrictions-store.ts'), 'the check sees the store');
});
