// Issue 7's options (abuse limits): defaults, bad values as one StartupError line, and
// REGISTRATION=email refused without a mail server to send the links.
import { test } from 'node:test';
import assert from 'node:assert/strict';
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

test('defaults: a fresh server is bounded without being annoying', () => {
  const c = loadConfig({});
  assert.equal(c.maxDevicesPerUser, 100);
  assert.equal(c.devicePolicy, 'evict');
  assert.equal(c.passwordMinLength, 8);
  assert.equal(c.uiaSessionLifetimeMs, 15 * 60_000);
  assert.equal(c.smtp.host, undefined);
  assert.equal(c.smtp.tls, 'starttls');
  assert.equal(c.smtp.from, 'noreply@localhost');
  assert.ok(c.headersTimeoutMs > 0 && c.requestTimeoutMs > 0 && c.bodyTimeoutMs > 0, 'no timeout is off (requestTimeout was 0)');
  assert.equal(loadConfig({ SMTP_HOST: 'mail.example.org', SMTP_PORT: '465' }).smtp.tls, 'implicit');
});

test('bad values: one line naming the variable and what it accepts', () => {
  assert.match(failure({ DEVICE_LIMIT_POLICY: 'kick' }), /^DEVICE_LIMIT_POLICY="kick" .*accepts evict .* or refuse/);
  assert.match(failure({ MAX_DEVICES_PER_USER: '0' }), /^MAX_DEVICES_PER_USER="0" .*accepts a whole number from 1/);
  assert.match(failure({ PASSWORD_MIN_LENGTH: 'eight' }), /^PASSWORD_MIN_LENGTH=/);
  assert.match(failure({ SMTP_TLS: 'yes' }), /^SMTP_TLS="yes" .*accepts implicit/);
  assert.match(failure({ SMTP_FROM: 'not an address' }), /^SMTP_FROM=.*accepts an e-mail address/);
  assert.match(failure({ HEADERS_TIMEOUT_MS: '0' }), /^HEADERS_TIMEOUT_MS="0"/);
  assert.match(failure({ REGISTRATION: 'email' }), /^REGISTRATION=email needs SMTP_HOST/);
  assert.equal(loadConfig({ REGISTRATION: 'email', SMTP_HOST: '127.0.0.1' }).registration, 'email');
});
