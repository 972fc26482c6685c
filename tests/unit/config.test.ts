// Configuration is validated by one schema at start: a bad value is one line naming the variable,
// the value and what it accepts (finding 14); a public SERVER_NAME closes registration by default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../homeserver/config.ts';
import { StartupError } from '../../homeserver/startup-error.ts';

function failure(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (e) {
    assert.ok(e instanceof StartupError, `a StartupError, got ${(e as Error).name}`);
    assert.ok(!e.message.includes('\n'), 'one line');
    return e.message;
  }
  assert.fail(`accepted ${JSON.stringify(env)}`);
}

const bad: Array<[Record<string, string>, RegExp]> = [
  [{ MAX_REQUEST_BYTES: 'abc' }, /^MAX_REQUEST_BYTES="abc" .*accepts a whole number of bytes/],
  [{ MAX_REQUEST_BYTES: '1.5' }, /^MAX_REQUEST_BYTES=/],
  [{ PORT: '99999' }, /^PORT="99999" .*accepts a port number from 0 to 65535/],
  [{ PORT: '80x' }, /^PORT=/],
  [{ REGISTRATION: 'maybe' }, /^REGISTRATION="maybe" .*accepts open, token, email or closed/],
  [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL="loud" .*accepts trace, debug, info, warn, error, fatal, silent/],
  [{ DEFAULT_ROOM_VERSION: '2' }, /^DEFAULT_ROOM_VERSION="2" .*accepts a supported room version: 3, .*11/],
  [{ ACCESS_TOKEN_LIFETIME_MS: '-5' }, /^ACCESS_TOKEN_LIFETIME_MS=/],
  [{ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL=.*accepts a postgres:\/\/ or postgresql:\/\/ URL/],
  [{ PUBLIC_BASEURL: 'chat.example.org' }, /^PUBLIC_BASEURL=.*accepts an http:\/\/ or https:\/\/ URL/],
  [{ SERVER_NAME: 'bad name!' }, /^SERVER_NAME=.*accepts a server name/],
  [{ DATABASE_TIMEOUT_MS: 'soon' }, /^DATABASE_TIMEOUT_MS=/],
];

for (const [env, expected] of bad) {
  test(`${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')} is refused with one line naming it`, () => {
    assert.match(failure(env), expected);
  });
}

test('defaults are valid; empty values take the default', () => {
  const c = loadConfig({});
  assert.equal(c.port, 8008);
  assert.equal(c.maxRequestBytes, 1024 * 1024);
  assert.equal(c.registration, 'open');
  assert.equal(c.logLevel, 'info');
  assert.equal(c.defaultRoomVersion, '10');
  assert.equal(c.databaseTimeoutMs, 5000);
  assert.equal(loadConfig({ PORT: '', MAX_REQUEST_BYTES: '' }).port, 8008);
});

test('a SERVER_NAME other than localhost closes registration unless REGISTRATION says otherwise', () => {
  assert.equal(loadConfig({ SERVER_NAME: 'example.org' }).registration, 'closed');
  assert.equal(loadConfig({ SERVER_NAME: 'example.org', REGISTRATION: 'open' }).registration, 'open');
  assert.equal(loadConfig({ SERVER_NAME: 'example.org', REGISTRATION: 'token' }).registration, 'token');
  assert.equal(loadConfig({ SERVER_NAME: 'localhost' }).registration, 'open');
  assert.equal(loadConfig({ SERVER_NAME: 'localhost:8448' }).registration, 'open');
});

test('CONFIG_FILE: bad JSON, a missing file and a bad value in it are named', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-config-'));
  try {
    const broken = path.join(dir, 'broken.json');
    fs.writeFileSync(broken, '{"PORT": 80,');
    assert.match(failure({ CONFIG_FILE: broken }), new RegExp(`^CONFIG_FILE ${broken} is not valid JSON`));
    assert.match(failure({ CONFIG_FILE: path.join(dir, 'missing.json') }), /missing\.json cannot be read \(ENOENT\)/);
    const array = path.join(dir, 'array.json');
    fs.writeFileSync(array, '[1]');
    assert.match(failure({ CONFIG_FILE: array }), /must hold one JSON object/);
    const typo = path.join(dir, 'typo.json');
    fs.writeFileSync(typo, '{"PROT": 8008}');
    assert.match(failure({ CONFIG_FILE: typo }), /unknown key PROT/);
    const badValue = path.join(dir, 'bad-value.json');
    fs.writeFileSync(badValue, '{"MAX_REQUEST_BYTES": "abc"}');
    assert.match(failure({ CONFIG_FILE: badValue }), new RegExp(`^MAX_REQUEST_BYTES="abc" \\(from CONFIG_FILE ${badValue}\\)`));
    // The environment wins over the file.
    const good = path.join(dir, 'good.json');
    fs.writeFileSync(good, '{"PORT": 9000, "REGISTRATION": "token"}');
    assert.equal(loadConfig({ CONFIG_FILE: good }).port, 9000);
    assert.equal(loadConfig({ CONFIG_FILE: good, PORT: '9001' }).port, 9001);
    assert.equal(loadConfig({ CONFIG_FILE: good }).registration, 'token');
  } finally { fs.rmSync(dir, { recursive: true, force: true }); }
});
