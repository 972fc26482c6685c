// Issue 11: X-Matrix request signing (with the spec's signing key vector), server discovery with an
// injected resolver, back-off, and the signing key file format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { signingKeyFromSeed, signJson } from '../../homeserver/protocol/signing.ts';
import { parseXMatrix, signRequest, verifyRequest } from '../../homeserver/protocol/x-matrix.ts';
import { ServerDiscovery, splitServerName, type SrvRecord } from '../../federation/discovery.ts';
import { backoffMs } from '../../federation/sender.ts';
import { formatSigningKeyFile, parseSigningKeyFile } from '../../homeserver/server/keys.ts';

// content/appendices.md "Signing Key": seed, server name "domain", key id "ed25519:1".
const KEY = signingKeyFromSeed('ed25519:1', 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');

test('the spec vector key signs JSON as the appendix says', () => {
  assert.deepEqual(signJson({}, 'domain', KEY), { signatures: { domain: { 'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ' } } });
  assert.deepEqual(signJson({ one: 1, two: 'Two' }, 'domain', KEY), { one: 1, two: 'Two', signatures: { domain: { 'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw' } } });
});

test("an X-Matrix signature is the appendix's JSON signature of {method, uri, origin, destination, content}", () => {
  const req = { method: 'POST', uri: '/_matrix/federation/v1/user/keys/query', origin: 'domain', destination: 'dest', content: { one: 1, two: 'Two' } };
  const expected = signJson({ method: 'POST', uri: req.uri, origin: 'domain', destination: 'dest', content: { one: 1, two: 'Two' } }, 'domain', KEY) as unknown as { signatures: { domain: Record<string, string> } };
  assert.equal(parseXMatrix(signRequest(req, KEY))!.sig, expected.signatures.domain['ed25519:1']);
});

test('an X-Matrix header signs method, uri, origin, destination and content, and verifies only for exactly that request', () => {
  const req = { method: 'PUT', uri: '/_matrix/federation/v1/send/1?x=%20y', origin: 'domain', destination: 'other.example', content: { pdus: [], edus: [{ edu_type: 'm.typing', content: {} }] } };
  const header = signRequest(req, KEY);
  assert.match(header, /^X-Matrix origin="domain",destination="other.example",key="ed25519:1",sig="[A-Za-z0-9+/]+"$/);
  const auth = parseXMatrix(header)!;
  assert.deepEqual({ origin: auth.origin, destination: auth.destination, key: auth.key }, { origin: 'domain', destination: 'other.example', key: 'ed25519:1' });
  const base = { method: 'PUT', uri: req.uri, destination: 'other.example', content: req.content };
  assert.equal(verifyRequest(auth, base, KEY.publicKey), true);
  assert.equal(verifyRequest(auth, { ...base, method: 'POST' }, KEY.publicKey), false, 'another method');
  assert.equal(verifyRequest(auth, { ...base, uri: '/_matrix/federation/v1/send/2?x=%20y' }, KEY.publicKey), false, 'another path');
  assert.equal(verifyRequest(auth, { ...base, content: { pdus: [] } }, KEY.publicKey), false, 'another body');
  assert.equal(verifyRequest({ ...auth, destination: 'third.example' }, { ...base, destination: 'third.example' }, KEY.publicKey), false, 'another destination');
  const other = signingKeyFromSeed('ed25519:1', Buffer.alloc(32, 7).toString('base64'));
  assert.equal(verifyRequest(auth, base, other.publicKey), false, 'another key');
  // A GET has no content.
  const get = { method: 'GET', uri: '/_matrix/federation/v1/version', origin: 'domain', destination: 'other.example' };
  assert.equal(verifyRequest(parseXMatrix(signRequest(get, KEY))!, { method: 'GET', uri: get.uri, destination: 'other.example' }, KEY.publicKey), true);
});

test('X-Matrix parameters: case-insensitive names, any order, optional quotes, escapes, spaces around commas, colons unquoted', () => {
  const a = parseXMatrix('X-Matrix  ORIGIN=origin.example , Key="ed25519:k1",\tsig="a\\"b" ,destination=dest.example:8448');
  assert.deepEqual(a, { origin: 'origin.example', destination: 'dest.example:8448', key: 'ed25519:k1', sig: 'a"b' });
  assert.deepEqual(parseXMatrix('X-Matrix origin=o,key=ed25519:1,sig=abc'), { origin: 'o', destination: undefined, key: 'ed25519:1', sig: 'abc' });
  for (const bad of ['Bearer abc', 'X-Matrix', 'X-Matrix origin="o",key="ed25519:1"', 'X-Matrix origin="o,key=ed25519:1,sig=a', 'X-Matrix origin=o key=k sig=s']) {
    assert.equal(parseXMatrix(bad), undefined, bad);
  }
});

test('server names split into host, port and IP-ness', () => {
  assert.deepEqual(splitServerName('example.org'), { host: 'example.org', port: undefined, ip: false });
  assert.deepEqual(splitServerName('example.org:8449'), { host: 'example.org', port: 8449, ip: false });
  assert.deepEqual(splitServerName('1.2.3.4'), { host: '1.2.3.4', port: undefined, ip: true });
  assert.deepEqual(splitServerName('[::1]:8448'), { host: '::1', port: 8448, ip: true });
  for (const bad of ['', 'a:b', 'example.org:0', 'example.org:70000', '[example.org]', 'a/b']) assert.equal(splitServerName(bad), undefined, bad);
});

function discovery(wellKnown: Record<string, string | undefined>, srv: Record<string, SrvRecord[]>) {
  const asked: string[] = [];
  const d = new ServerDiscovery({
    resolveSrv: async (name) => { asked.push(`srv ${name}`); const r = srv[name]; if (!r) throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' }); return r; },
    fetchWellKnown: async (host) => { asked.push(`wk ${host}`); return { server: wellKnown[host], cacheMs: 60_000 }; },
  });
  return { d, asked };
}

test('discovery: IP literals and explicit ports are used as they are, without any lookup', async () => {
  const { d, asked } = discovery({}, {});
  assert.deepEqual(await d.resolve('127.0.0.1'), { host: '127.0.0.1', port: 8448, hostHeader: '127.0.0.1', tlsName: undefined });
  assert.deepEqual(await d.resolve('[::1]:9000'), { host: '::1', port: 9000, hostHeader: '[::1]:9000', tlsName: undefined });
  assert.deepEqual(await d.resolve('example.org:9000'), { host: 'example.org', port: 9000, hostHeader: 'example.org:9000', tlsName: 'example.org' });
  assert.deepEqual(asked, []);
});

test('discovery: well-known delegation, then SRV of the delegated name, then 8448', async () => {
  const { d } = discovery(
    { 'a.org': 'matrix.a.org:4443', 'b.org': 'matrix.b.org', 'c.org': 'matrix.c.org', 'd.org': '10.0.0.1' },
    { '_matrix-fed._tcp.matrix.b.org': [{ name: 'srv-b.net.', port: 8000, priority: 10, weight: 1 }, { name: 'worse.net', port: 1, priority: 20, weight: 5 }] },
  );
  assert.deepEqual(await d.resolve('a.org'), { host: 'matrix.a.org', port: 4443, hostHeader: 'matrix.a.org:4443', tlsName: 'matrix.a.org' });
  assert.deepEqual(await d.resolve('b.org'), { host: 'srv-b.net', port: 8000, hostHeader: 'matrix.b.org', tlsName: 'matrix.b.org' });
  assert.deepEqual(await d.resolve('c.org'), { host: 'matrix.c.org', port: 8448, hostHeader: 'matrix.c.org', tlsName: 'matrix.c.org' });
  assert.deepEqual(await d.resolve('d.org'), { host: '10.0.0.1', port: 8448, hostHeader: '10.0.0.1', tlsName: undefined });
});

test('discovery: without well-known, SRV _matrix-fed._tcp, then the deprecated _matrix._tcp, then 8448; results are cached', async () => {
  const { d, asked } = discovery({}, {
    '_matrix-fed._tcp.e.org': [{ name: 'fed.e.org', port: 8009, priority: 0, weight: 0 }],
    '_matrix._tcp.f.org': [{ name: 'old.f.org', port: 8010, priority: 0, weight: 0 }],
  });
  assert.deepEqual(await d.resolve('e.org'), { host: 'fed.e.org', port: 8009, hostHeader: 'e.org', tlsName: 'e.org' });
  assert.deepEqual(await d.resolve('f.org'), { host: 'old.f.org', port: 8010, hostHeader: 'f.org', tlsName: 'f.org' });
  assert.deepEqual(await d.resolve('g.org'), { host: 'g.org', port: 8448, hostHeader: 'g.org', tlsName: 'g.org' });
  const count = asked.length;
  await d.resolve('e.org');
  assert.equal(asked.length, count, 'the second resolution came from the cache');
  d.forget('e.org');
  await d.resolve('e.org');
  assert.ok(asked.length > count, 'a forgotten name is looked up again');
});

test('back-off doubles from the minimum up to the maximum, with bounded jitter', () => {
  const policy = { retryMinMs: 1000, retryMaxMs: 60_000 };
  assert.equal(backoffMs(1, policy, () => 0.5), 1000);
  assert.equal(backoffMs(2, policy, () => 0.5), 2000);
  assert.equal(backoffMs(5, policy, () => 0.5), 16_000);
  assert.equal(backoffMs(50, policy, () => 0.5), 60_000);
  assert.equal(backoffMs(1, policy, () => 0), 800);
  assert.equal(backoffMs(1, policy, () => 1), 1200);
});

test("the signing key file is Synapse's format and round-trips", () => {
  const text = formatSigningKeyFile(signingKeyFromSeed('ed25519:a_1', 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1'));
  // (the appendix's seed text has non-zero trailing bits; the canonical encoding ends in 0)
  assert.equal(text, 'ed25519 a_1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n');
  const k = parseSigningKeyFile(`\n${text}`)!;
  assert.equal(k.keyId, 'ed25519:a_1');
  assert.equal(k.publicKey, KEY.publicKey);
  for (const bad of ['', 'ed25519 a_1', 'rsa a_1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1', 'ed25519 a-1 x', 'ed25519 a_1 c2hvcnQ']) assert.equal(parseSigningKeyFile(bad), undefined, bad);
});

test('federation settings: FEDERATION_PORT needs TLS_CERT and TLS_KEY; lists and ranges are checked', async () => {
  const { loadConfig } = await import('../../homeserver/config.ts');
  assert.throws(() => loadConfig({ FEDERATION_PORT: '8448' }), /FEDERATION_PORT=8448 needs TLS_CERT and TLS_KEY/);
  assert.throws(() => loadConfig({ FEDERATION_IP_RANGE_ALLOW: 'nonsense' }), /FEDERATION_IP_RANGE_ALLOW/);
  assert.throws(() => loadConfig({ FEDERATION_DOMAIN_WHITELIST: 'a.org,b c' }), /FEDERATION_DOMAIN_WHITELIST/);
  const c = loadConfig({ FEDERATION_DOMAIN_BLOCKLIST: 'Evil.org', TRUSTED_KEY_SERVERS: 'matrix.org', FEDERATION_VERIFY_TLS: 'false' });
  assert.deepEqual(c.federation.domainBlocklist, ['evil.org']);
  assert.deepEqual(c.federation.trustedKeyServers, ['matrix.org']);
  assert.equal(c.federation.verifyTls, false);
  assert.equal(loadConfig({}).federation.verifyTls, true);
});

test('the domain lists decide whom we talk to (never ourselves)', async () => {
  const { loadConfig } = await import('../../homeserver/config.ts');
  const { FederationClient } = await import('../../federation/client.ts');
  const { pino } = await import('pino');
  const mk = (env: Record<string, string>) => {
    const c = loadConfig({ SERVER_NAME: 'me.org', ...env });
    return new FederationClient(c.serverName, () => KEY, c.federation, pino({ level: 'silent' }));
  };
  const open = mk({ FEDERATION_DOMAIN_BLOCKLIST: 'bad.org' });
  assert.equal(open.allows('good.org'), true);
  assert.equal(open.allows('BAD.org'), false);
  assert.equal(open.allows('me.org'), false);
  const closed = mk({ FEDERATION_DOMAIN_WHITELIST: 'friend.org' });
  assert.equal(closed.allows('friend.org'), true);
  assert.equal(closed.allows('stranger.org'), false);
  await assert.rejects(closed.request('stranger.org', 'GET', '/_matrix/federation/v1/version'), /not allowed/);
  // A private address is refused before any connection, whatever the name says.
  await assert.rejects(open.request('10.1.2.3:8448', 'GET', '/_matrix/federation/v1/version'), /FEDERATION_IP_RANGE_ALLOW/);
  await assert.rejects(open.request('localhost:1', 'GET', '/_matrix/federation/v1/version'), /FEDERATION_IP_RANGE_ALLOW/);
  open.close(); closed.close();
});

test('multipart/mixed answers of federation media are parsed (headers, empty header block, binary body)', async () => {
  const { parseMultipart } = await import('../../federation/remote-media.ts');
  const bin = Buffer.from([0, 13, 10, 45, 45, 255]);
  const body = Buffer.concat([
    Buffer.from('preamble\r\n--b0undary\r\nContent-Type: application/json\r\n\r\n{}\r\n--b0undary\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename="x.png"\r\n\r\n'),
    bin,
    Buffer.from('\r\n--b0undary--\r\nepilogue'),
  ]);
  const parts = parseMultipart(body, 'b0undary');
  assert.equal(parts.length, 2);
  assert.deepEqual(parts[0]!.headers, { 'content-type': 'application/json' });
  assert.equal(parts[0]!.body.toString(), '{}');
  assert.equal(parts[1]!.headers['content-disposition'], 'inline; filename="x.png"');
  assert.deepEqual(parts[1]!.body, bin);
  const noHeaders = parseMultipart(Buffer.from('--b\r\n\r\n{}\r\n--b\r\nLocation: https://cdn.example/x\r\n\r\n\r\n--b--\r\n'), 'b');
  assert.deepEqual(noHeaders[0]!.headers, {});
  assert.equal(noHeaders[1]!.headers.location, 'https://cdn.example/x');
});
