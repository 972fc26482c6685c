// Every setting the server reads (homeserver/config.ts) is in deploy/env.example and in the README's
// configuration table, so an operator can find it; every variable the Caddyfile reads is in
// deploy/env.example too; and env.example names nothing that nobody reads (a typo there is a
// setting silently ignored).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_VARIABLES } from '../../homeserver/config.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const read = (p: string) => fs.readFileSync(path.join(root, p), 'utf8');

/** NAME=… lines, commented out (# NAME=…) or not. */
function exampleVariables(): Set<string> {
  return new Set([...read('deploy/env.example').matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
}

/** Variables the README's configuration table documents: the `NAME`s in each row's first cell. */
function readmeVariables(): Set<string> {
  const out = new Set<string>();
  for (const line of read('README.md').split('\n')) {
    const cell = /^\|\s*([^|]+)\|/.exec(line)?.[1];
    if (cell) for (const m of cell.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) out.add(m[1]!);
  }
  return out;
}

function caddyVariables(): Set<string> {
  return new Set([...read('Caddyfile').matchAll(/\{\$([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!));
}

test('config.ts exposes its variables (the list this file checks)', () => {
  for (const name of ['SERVER_NAME', 'DATABASE_URL', 'RC_MESSAGE_PER_SECOND', 'ROOMS_PER_HOUR', 'ADMIN_ALLOW', 'CONFIG_FILE']) assert.ok(CONFIG_VARIABLES.includes(name), name);
  assert.ok(CONFIG_VARIABLES.length > 60);
});

test('every setting of config.ts is in deploy/env.example', () => {
  const example = exampleVariables();
  const missing = CONFIG_VARIABLES.filter((v) => !example.has(v));
  assert.deepEqual(missing, [], `add these to deploy/env.example (commented out with their default): ${missing.join(', ')}`);
});

test('every setting of config.ts is in the README\'s configuration table', () => {
  const documented = readmeVariables();
  const missing = CONFIG_VARIABLES.filter((v) => !documented.has(v));
  assert.deepEqual(missing, [], `add rows for these to the README's configuration table: ${missing.join(', ')}`);
});

test('every variable the Caddyfile reads is in deploy/env.example, and env.example names nothing unread', () => {
  const example = exampleVariables();
  const caddy = caddyVariables();
  assert.ok(caddy.has('DOMAIN') && caddy.has('ADMIN_ALLOW') && caddy.has('UPSTREAMS'));
  const missing = [...caddy].filter((v) => !example.has(v));
  assert.deepEqual(missing, [], `add the Caddyfile's ${missing.join(', ')} to deploy/env.example`);
  const read = new Set([...CONFIG_VARIABLES, ...caddy]);
  const unknown = [...example].filter((v) => !read.has(v));
  assert.deepEqual(unknown, [], `deploy/env.example names variables nothing reads: ${unknown.join(', ')}`);
});

test('deploy/env.example is a valid configuration, its commented defaults too', async () => {
  const { loadConfig } = await import('../../homeserver/config.ts');
  const env: Record<string, string> = {};
  for (const m of read('deploy/env.example').matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/gm)) {
    const value = m[2]!.trim().replace(/^"(.*)"$/, '$1'); // systemd and sh both drop the quotes
    if (value !== '' && m[1] !== 'CONFIG_FILE') env[m[1]!] = value;
  }
  const config = loadConfig(env);
  assert.equal(config.serverName, 'example.org');
  assert.deepEqual(config.adminAllow, ['127.0.0.1/8', '::1'], 'the space-separated form Caddy reads');
  assert.ok(config.trustedProxies.has('127.0.0.1'));
});

test('ADMIN_ALLOW, SERVE_ADMIN_UI, SERVE_CHAT_UI: defaults, both list forms, bad values stop the start with one line', async () => {
  const { loadConfig } = await import('../../homeserver/config.ts');
  const defaults = loadConfig({});
  assert.deepEqual(defaults.adminAllow, ['127.0.0.1/8', '::1']);
  assert.equal(defaults.serveAdminUi, true);
  assert.equal(defaults.serveChatUi, true);
  assert.deepEqual(loadConfig({ ADMIN_ALLOW: '10.0.0.0/8, 192.168.1.7  fd00::/8' }).adminAllow, ['10.0.0.0/8', '192.168.1.7', 'fd00::/8']);
  assert.deepEqual(loadConfig({ ADMIN_ALLOW: '' }).adminAllow, [], 'empty: nobody');
  const off = loadConfig({ SERVE_ADMIN_UI: 'off', SERVE_CHAT_UI: 'off' });
  assert.equal(off.serveAdminUi, false);
  assert.equal(off.serveChatUi, false);
  for (const [name, value] of [['ADMIN_ALLOW', 'localhost'], ['ADMIN_ALLOW', '10.0.0.0/33'], ['ADMIN_ALLOW', '127.0.0.1/8;::1'], ['SERVE_ADMIN_UI', 'yes'], ['SERVE_CHAT_UI', '0']] as const) {
    assert.throws(() => loadConfig({ [name]: value }), (e: Error) => e.message.startsWith(`${name}=${JSON.stringify(value)} is not valid: ${name} accepts`) && !e.message.includes('\n'), `${name}=${value}`);
  }
});
