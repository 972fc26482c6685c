// Registration by a verified e-mail address, end to end through a local SMTP sink (issue 7,
// deliverable 2): the server mails a link, the test reads it from the sink and follows it; one
// account per address; send_attempt idempotency; links expire; login, address binding and password
// reset by e-mail.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { startServer, type TestServer } from '../helpers/server.ts';
import { roomApi } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

interface Mail { to: string[]; raw: string }

/** An SMTP server on loopback that keeps every mail it is given. */
async function smtpSink(): Promise<{ port: number; mails: Mail[]; close(): Promise<void> }> {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, session, callback) {
      let raw = '';
      stream.on('data', (chunk: Buffer) => { raw += chunk.toString('utf8'); });
      stream.on('end', () => {
        mails.push({ to: session.envelope.rcptTo.map((r) => r.address), raw });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.server.address() as AddressInfo).port;
  return { port, mails, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** The validation link of a mail (its text part may be quoted-printable), pointed at the test server's loopback address. */
function linkIn(mail: Mail, baseUrl: string): string {
  const text = mail.raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
  const m = /https?:\/\/[^\s"<>]+\/_synapse\/client\/email\/submit_token\?[^\s"<>]+/.exec(text);
  assert.ok(m, `a validation link in the mail:\n${mail.raw}`);
  const link = new URL(m[0].replace(/&amp;/g, '&'));
  return `${baseUrl}${link.pathname}${link.search}`;
}

async function waitFor<T>(what: string, f: () => T | undefined, ms = 10_000): Promise<T> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 25))) {
    const v = f();
    if (v !== undefined) return v;
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('registration by verified e-mail', () => {
  let server: TestServer;
  let sink: Awaited<ReturnType<typeof smtpSink>>;
  const { call } = roomApi(() => server.baseUrl);
  const mailsTo = (address: string) => sink.mails.filter((m) => m.to.includes(address));

  before(async () => {
    sink = await smtpSink();
    server = await startServer({
      env: { REGISTRATION: 'email', SMTP_HOST: '127.0.0.1', SMTP_PORT: String(sink.port), SMTP_TLS: 'off', SMTP_FROM: 'Test <noreply@example.org>', RATE_LIMITS: 'off' },
    });
  });
  after(async () => {
    await server?.stop();
    await sink?.close();
  });

  /** Asks for a link for this purpose, waits for its mail, returns the sid and the link. */
  const requestLink = async (path: string, email: string, secret: string, sendAttempt = 1) => {
    const address = email.trim().toLowerCase();
    const before = mailsTo(address).length;
    const res = await call('POST', `${C}${path}`, { body: { client_secret: secret, email, send_attempt: sendAttempt } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(typeof res.body.sid, 'string');
    const mail = await waitFor('the validation mail', () => mailsTo(address)[before]);
    return { sid: res.body.sid as string, link: linkIn(mail, server.baseUrl) };
  };

  test('the flow: link mailed, followed, account created with the address; one account per address', async () => {
    const first = await call('POST', `${C}/register`, { body: { username: 'alice', password: 'correct horse battery' } });
    assert.equal(first.status, 401);
    assert.deepEqual(first.body.flows, [{ stages: ['m.login.email.identity'] }]);
    const session = first.body.session as string;

    const { sid, link } = await requestLink('/register/email/requestToken', ' Alice@Example.org ', 'secret-alice-1');
    assert.equal(mailsTo('alice@example.org').length, 1, 'the address is canonical (trimmed, lower-cased)');

    // Same client_secret, same send_attempt: the same session, no second mail.
    const again = await call('POST', `${C}/register/email/requestToken`, { body: { client_secret: 'secret-alice-1', email: 'alice@example.org', send_attempt: 1 } });
    assert.equal(again.status, 200);
    assert.equal(again.body.sid, sid);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(mailsTo('alice@example.org').length, 1, 'a repeated send_attempt sends nothing');

    const creds = { sid, client_secret: 'secret-alice-1' };
    const auth = { type: 'm.login.email.identity', threepid_creds: creds, session };
    // Before the link is followed the stage is not done.
    const early = await call('POST', `${C}/register`, { body: { username: 'alice', password: 'correct horse battery', auth } });
    assert.equal(early.status, 401);
    assert.equal(early.body.errcode, 'M_THREEPID_AUTH_FAILED');
    assert.deepEqual(early.body.completed, []);

    // A wrong token or secret validates nothing.
    const forged = new URL(link);
    forged.searchParams.set('token', 'not-the-token');
    assert.equal((await fetch(forged)).status, 400);
    const followed = await fetch(link);
    assert.equal(followed.status, 200);
    assert.match(await followed.text(), /validated/);

    const done = await call('POST', `${C}/register`, { body: { username: 'alice', password: 'correct horse battery', auth } });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.user_id, '@alice:localhost');
    const threepids = await call('GET', `${C}/account/3pid`, { token: done.body.access_token });
    assert.equal(threepids.status, 200);
    assert.deepEqual(threepids.body.threepids.map((t: { medium: string; address: string }) => [t.medium, t.address]), [['email', 'alice@example.org']]);
    assert.ok(threepids.body.threepids[0].validated_at > 0 && threepids.body.threepids[0].added_at > 0);

    // The address is taken: asking again (any secret, any case) is refused, for registering or adding.
    for (const path of ['/register/email/requestToken', '/account/3pid/email/requestToken']) {
      const taken = await call('POST', `${C}${path}`, { body: { client_secret: 'another-secret', email: 'ALICE@example.org', send_attempt: 1 } });
      assert.equal(taken.status, 400, path);
      assert.equal(taken.body.errcode, 'M_THREEPID_IN_USE', path);
    }
    // The used session cannot create a second account.
    const second = await call('POST', `${C}/register`, { body: { username: 'mallory', password: 'correct horse battery' } });
    const reuse = await call('POST', `${C}/register`, {
      body: { username: 'mallory', password: 'correct horse battery', auth: { type: 'm.login.email.identity', threepid_creds: creds, session: second.body.session } },
    });
    assert.equal(reuse.status, 401);
    assert.equal(reuse.body.errcode, 'M_THREEPID_AUTH_FAILED');
    assert.equal((await call('GET', `${C}/register/available?username=mallory`)).status, 200, 'no account was made');
    assert.equal(mailsTo('alice@example.org').length, 1, 'refusals send no mail');

    // Log in by the address.
    const byEmail = await call('POST', `${C}/login`, {
      body: { type: 'm.login.password', identifier: { type: 'm.id.thirdparty', medium: 'email', address: 'Alice@Example.org' }, password: 'correct horse battery' },
    });
    assert.equal(byEmail.status, 200, JSON.stringify(byEmail.body));
    assert.equal(byEmail.body.user_id, '@alice:localhost');
  });

  test('bad requests: invalid address or secret, registration without the e-mail stage, weak password', async () => {
    const bad = await call('POST', `${C}/register/email/requestToken`, { body: { client_secret: 'ok-secret', email: 'not an address', send_attempt: 1 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, 'M_INVALID_PARAM');
    const badSecret = await call('POST', `${C}/register/email/requestToken`, { body: { client_secret: 'spaces are not allowed', email: 'x@example.org', send_attempt: 1 } });
    assert.equal(badSecret.body.errcode, 'M_INVALID_PARAM');
    const first = await call('POST', `${C}/register`, { body: { username: 'dummyuser', password: 'correct horse battery' } });
    const dummy = await call('POST', `${C}/register`, { body: { username: 'dummyuser', password: 'correct horse battery', auth: { type: 'm.login.dummy', session: first.body.session } } });
    assert.equal(dummy.status, 400);
    assert.equal(dummy.body.errcode, 'M_UNRECOGNIZED');
    const weak = await call('POST', `${C}/register`, { body: { username: 'weakling', password: 'short' } });
    assert.equal(weak.status, 400);
    assert.equal(weak.body.errcode, 'M_WEAK_PASSWORD');
  });

  test('adding and removing an address; password reset by e-mail', async () => {
    const { sid, link } = await requestLink('/register/email/requestToken', 'bob@example.org', 'secret-bob-1');
    await fetch(link);
    const first = await call('POST', `${C}/register`, { body: { username: 'bob', password: 'first password 1' } });
    const bob = await call('POST', `${C}/register`, {
      body: { username: 'bob', password: 'first password 1', auth: { type: 'm.login.email.identity', threepid_creds: { sid, client_secret: 'secret-bob-1' }, session: first.body.session } },
    });
    assert.equal(bob.status, 200, JSON.stringify(bob.body));
    const token = bob.body.access_token as string;

    // Add a second address: validated by its link, then bound under password auth.
    const added = await requestLink('/account/3pid/email/requestToken', 'bob.work@example.org', 'secret-bob-2');
    await fetch(added.link);
    const challenge = await call('POST', `${C}/account/3pid/add`, { token, body: { sid: added.sid, client_secret: 'secret-bob-2' } });
    assert.equal(challenge.status, 401);
    const add = await call('POST', `${C}/account/3pid/add`, {
      token, body: { sid: added.sid, client_secret: 'secret-bob-2', auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: '@bob:localhost' }, password: 'first password 1', session: challenge.body.session } },
    });
    assert.equal(add.status, 200, JSON.stringify(add.body));
    let list = (await call('GET', `${C}/account/3pid`, { token })).body.threepids.map((t: { address: string }) => t.address).sort();
    assert.deepEqual(list, ['bob.work@example.org', 'bob@example.org']);
    const del = await call('POST', `${C}/account/3pid/delete`, { token, body: { medium: 'email', address: 'bob.work@example.org' } });
    assert.equal(del.status, 200);
    assert.equal(del.body.id_server_unbind_result, 'no-support');
    list = (await call('GET', `${C}/account/3pid`, { token })).body.threepids.map((t: { address: string }) => t.address);
    assert.deepEqual(list, ['bob@example.org']);

    // A reset for an address nobody has is refused, and mails nothing.
    const unknown = await call('POST', `${C}/account/password/email/requestToken`, { body: { client_secret: 's1', email: 'nobody@example.org', send_attempt: 1 } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.errcode, 'M_THREEPID_NOT_FOUND');
    assert.equal(mailsTo('nobody@example.org').length, 0);

    // Forgotten password: no access token, the e-mail proves the account.
    const reset = await requestLink('/account/password/email/requestToken', 'bob@example.org', 'secret-bob-3');
    const noToken = await call('POST', `${C}/account/password`, { body: { new_password: 'second password 2' } });
    assert.equal(noToken.status, 401);
    assert.deepEqual(noToken.body.flows, [{ stages: ['m.login.email.identity'] }]);
    const resetAuth = { type: 'm.login.email.identity', threepid_creds: { sid: reset.sid, client_secret: 'secret-bob-3' }, session: noToken.body.session };
    const notYet = await call('POST', `${C}/account/password`, { body: { new_password: 'second password 2', auth: resetAuth } });
    assert.equal(notYet.status, 401);
    assert.equal(notYet.body.errcode, 'M_THREEPID_AUTH_FAILED');
    await fetch(reset.link);
    const weak = await call('POST', `${C}/account/password`, { body: { new_password: 'bob', auth: resetAuth } });
    assert.equal(weak.status, 400);
    assert.equal(weak.body.errcode, 'M_WEAK_PASSWORD');
    const changed = await call('POST', `${C}/account/password`, { body: { new_password: 'second password 2', auth: resetAuth } });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));
    const login = (password: string) => call('POST', `${C}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password } });
    assert.equal((await login('first password 1')).status, 403);
    assert.equal((await login('second password 2')).status, 200);
    assert.equal((await call('GET', `${C}/account/whoami`, { token })).status, 401, 'a reset logs the devices out');
  });

  test('validation links expire', async () => {
    const short = await startServer({
      env: { REGISTRATION: 'email', SMTP_HOST: '127.0.0.1', SMTP_PORT: String(sink.port), SMTP_TLS: 'off', EMAIL_TOKEN_LIFETIME_MS: '1000', RATE_LIMITS: 'off' },
    });
    try {
      const res = await fetch(`${short.baseUrl}${C}/register/email/requestToken`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_secret: 'secret-late', email: 'late@example.org', send_attempt: 1 }),
      });
      assert.equal(res.status, 200);
      const mail = await waitFor('the validation mail', () => mailsTo('late@example.org')[0]);
      await new Promise((r) => setTimeout(r, 1_500));
      const followed = await fetch(linkIn(mail, short.baseUrl));
      assert.equal(followed.status, 400, 'an expired link validates nothing');
    } finally {
      await short.stop();
    }
  });

  test('validation mails are rate limited per client address and per e-mail address (rc_3pid_validation)', async () => {
    const limited = await startServer({
      env: { REGISTRATION: 'email', SMTP_HOST: '127.0.0.1', SMTP_PORT: String(sink.port), SMTP_TLS: 'off', RATE_LIMITS: 'on', RC_3PID_VALIDATION_PER_SECOND: '0.001', RC_3PID_VALIDATION_BURST: '2' },
    });
    try {
      const ask = (email: string, secret: string) => fetch(`${limited.baseUrl}${C}/register/email/requestToken`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_secret: secret, email, send_attempt: 1 }),
      });
      assert.equal((await ask('one@example.org', 's1')).status, 200);
      assert.equal((await ask('two@example.org', 's2')).status, 200);
      const third = await ask('three@example.org', 's3');
      assert.equal(third.status, 429);
      const body = await third.json() as { errcode: string; retry_after_ms: number };
      assert.equal(body.errcode, 'M_LIMIT_EXCEEDED');
      assert.ok(body.retry_after_ms > 0);
      assert.ok(third.headers.get('retry-after'));
      assert.equal(mailsTo('three@example.org').length, 0, 'no mail for a refused request');
    } finally {
      await limited.stop();
    }
  });
});
