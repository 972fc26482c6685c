// Outbound federation requests: HTTPS to the peer's resolved address, signed with X-Matrix, with
// the system CAs plus FEDERATION_CA_FILE; refused for destinations the domain lists exclude and for
// addresses in private ranges (checked on the resolved address at connect time, so a name that
// resolves elsewhere between check and connect cannot slip through).
import dns from 'node:dns/promises';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { FederationSettings } from '../homeserver/config.ts';
import { DEFAULT_PREVIEW_DENYLIST, IpRangePolicy } from '../homeserver/media/ip-ranges.ts';
import { signRequest } from '../homeserver/protocol/x-matrix.ts';
import type { SigningKey } from '../homeserver/protocol/signing.ts';
import { StartupError } from '../homeserver/startup-error.ts';
import { ServerDiscovery, systemSrv, wellKnownCacheMs, type DiscoveryIo, type ResolvedServer } from './discovery.ts';

/** A request to another server that failed: no answer (status undefined), or an error answer. */
export class FederationRequestError extends Error {
  constructor(message: string, readonly status?: number, readonly body?: unknown) {
    super(message);
  }
  /** The Matrix errcode of the answer, if it had one. */
  get errcode(): string | undefined {
    const b = this.body as { errcode?: unknown } | undefined;
    return typeof b?.errcode === 'string' ? b.errcode : undefined;
  }
}

/** Redirects of /.well-known/matrix/server followed at most. */
const MAX_WELL_KNOWN_REDIRECTS = 5;

/** Answers larger than this are cut off (JSON APIs; media has its own cap). */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

export interface RawResponse { status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }

export class FederationClient {
  readonly discovery: ServerDiscovery;
  private agent: https.Agent;
  private policy: IpRangePolicy;

  constructor(
    private serverName: string,
    private key: () => SigningKey,
    private settings: FederationSettings,
    private log: Logger,
    discoveryIo?: Partial<DiscoveryIo>,
  ) {
    let ca: string[] | undefined;
    if (settings.caFile) {
      try { ca = [...tls.rootCertificates, fs.readFileSync(settings.caFile, 'utf8')]; } catch (err) {
        throw new StartupError(`FEDERATION_CA_FILE ${settings.caFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): it must name a PEM file of CA certificates`);
      }
    }
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: settings.verifyTls, ...(ca ? { ca } : {}) });
    this.policy = new IpRangePolicy(DEFAULT_PREVIEW_DENYLIST, settings.ipRangeAllow);
    this.discovery = new ServerDiscovery({
      resolveSrv: discoveryIo?.resolveSrv ?? systemSrv,
      fetchWellKnown: discoveryIo?.fetchWellKnown ?? ((host) => this.fetchWellKnown(host)),
    });
  }

  /** Whether the domain lists let us talk to this server at all (never to ourselves). */
  allows(destination: string): boolean {
    const name = destination.toLowerCase();
    if (name === this.serverName.toLowerCase()) return false;
    if (this.settings.domainBlocklist.includes(name)) return false;
    return this.settings.domainWhitelist.length === 0 || this.settings.domainWhitelist.includes(name);
  }

  /**
   * A signed JSON request to another server (`path` with its query string); its JSON answer, or a
   * FederationRequestError.
   */
  async request<T = Record<string, unknown>>(destination: string, method: string, path: string, body?: unknown, timeoutMs = this.settings.requestTimeoutMs): Promise<T> {
    const res = await this.requestRaw(destination, method, path, body, timeoutMs);
    let parsed: unknown;
    try { parsed = JSON.parse(res.body.toString('utf8')); } catch { parsed = undefined; }
    if (res.status < 200 || res.status >= 300) {
      throw new FederationRequestError(`${destination} answered ${method} ${path.split('?')[0]} with ${res.status}`, res.status, parsed);
    }
    if (parsed === null || typeof parsed !== 'object') throw new FederationRequestError(`${destination} answered ${path.split('?')[0]} with something that is not JSON`, res.status);
    return parsed as T;
  }

  /** A signed request whose answer is returned as bytes (media), whatever its status. */
  async requestRaw(destination: string, method: string, path: string, body?: unknown, timeoutMs = this.settings.requestTimeoutMs, maxBytes = MAX_RESPONSE_BYTES): Promise<RawResponse> {
    if (!this.allows(destination)) throw new FederationRequestError(`federation with ${destination} is not allowed by this server's configuration`);
    let target: ResolvedServer;
    try { target = await this.discovery.resolve(destination); } catch (err) {
      throw new FederationRequestError(`${destination} could not be resolved: ${(err as Error).message}`);
    }
    const key = this.key();
    const authorization = signRequest({ method, uri: path, origin: this.serverName, destination, ...(body !== undefined ? { content: body } : {}) }, key);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { host: target.hostHeader, authorization, 'user-agent': 'super-server (Matrix homeserver)' };
    if (payload) { headers['content-type'] = 'application/json'; headers['content-length'] = String(payload.length); }
    try {
      return await this.send(target, method, path, headers, payload, timeoutMs, maxBytes);
    } catch (err) {
      this.discovery.forget(destination);
      throw err;
    }
  }

  /** An unsigned GET of an https URL (a media redirect), under the same address policy. */
  async getUrl(url: URL, timeoutMs: number, maxBytes: number): Promise<RawResponse> {
    if (url.protocol !== 'https:') throw new FederationRequestError(`only https URLs are fetched, not ${url.protocol}`);
    const h = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const target: ResolvedServer = { host: h, port: Number(url.port || 443), hostHeader: url.host, tlsName: net.isIP(h) ? undefined : h };
    return this.send(target, 'GET', url.pathname + url.search, { host: url.host, 'user-agent': 'super-server (Matrix homeserver)' }, undefined, timeoutMs, maxBytes);
  }

  /** GET https://<host>/.well-known/matrix/server (unsigned, port 443, the same address policy). */
  private async fetchWellKnown(host: string): Promise<{ server: string | undefined; cacheMs: number }> {
    let url = new URL(`https://${host}/.well-known/matrix/server`);
    let res: RawResponse | undefined;
    // Redirects are followed (a few, https only), as the spec asks; every hop passes the address policy.
    for (let hop = 0; hop <= MAX_WELL_KNOWN_REDIRECTS; hop++) {
      const h = url.hostname.replace(/^\[(.*)\]$/, '$1');
      const target: ResolvedServer = { host: h, port: Number(url.port || 443), hostHeader: url.host, tlsName: net.isIP(h) ? undefined : h };
      try {
        res = await this.send(target, 'GET', url.pathname + url.search, { host: url.host, 'user-agent': 'super-server (Matrix homeserver)' }, undefined, 10_000, 64 * 1024);
      } catch {
        return { server: undefined, cacheMs: 3600_000 };
      }
      const location = res.headers.location;
      if (![301, 302, 303, 307, 308].includes(res.status) || typeof location !== 'string') break;
      try { url = new URL(location, url); } catch { return { server: undefined, cacheMs: 3600_000 }; }
      if (url.protocol !== 'https:') return { server: undefined, cacheMs: 3600_000 };
      res = undefined;
    }
    if (!res) return { server: undefined, cacheMs: 3600_000 };
    if (res.status !== 200) return { server: undefined, cacheMs: 3600_000 };
    try {
      const server = (JSON.parse(res.body.toString('utf8')) as { 'm.server'?: unknown })['m.server'];
      const cc = res.headers['cache-control'];
      return { server: typeof server === 'string' ? server : undefined, cacheMs: wellKnownCacheMs(Array.isArray(cc) ? cc[0] ?? null : cc ?? null) };
    } catch {
      return { server: undefined, cacheMs: 3600_000 };
    }
  }

  /** The addresses of `host` this server may connect to (IPv4 first); refused when any is not allowed. */
  private async addresses(host: string): Promise<Array<{ address: string; family: number }>> {
    let found: Array<{ address: string; family: number }>;
    if (net.isIP(host)) found = [{ address: host, family: net.isIP(host) }];
    else {
      try { found = await dns.lookup(host, { all: true }); } catch { throw new FederationRequestError(`${host} does not resolve`); }
    }
    found.sort((a, b) => a.family - b.family);
    // As Synapse's blocking resolver: one refused address refuses the host (a name is attacker-chosen).
    if (!found.length || found.some((a) => !this.policy.permits(a.address))) {
      throw new FederationRequestError(`${host} resolves to an address federation may not reach (FEDERATION_IP_RANGE_ALLOW)`);
    }
    return found;
  }

  private async send(target: ResolvedServer, method: string, path: string, headers: Record<string, string>, payload: Buffer | undefined, timeoutMs: number, maxBytes: number): Promise<RawResponse> {
    const pinned = (await this.addresses(target.host))[0]!;
    const tlsName = target.tlsName;
    return new Promise<RawResponse>((resolve, reject) => {
      const req = https.request({
        host: target.host, port: target.port, method, path, headers, agent: this.agent,
        ...(tlsName ? { servername: tlsName } : {}),
        // The certificate must be valid for the server name (or delegated name), not the SRV target.
        checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(tlsName ?? pinned.address, cert),
        // Connect to the address checked above, never to a second answer of the resolver.
        lookup: ((_h: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
          if (opts?.all) cb(null, [{ address: pinned.address, family: pinned.family }]);
          else cb(null, pinned.address, pinned.family);
        }) as never,
        timeout: timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) { req.destroy(new FederationRequestError(`the answer of ${target.hostHeader} is larger than ${maxBytes} bytes`)); return; }
          chunks.push(c);
        });
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.once('error', (err) => reject(new FederationRequestError(`${target.hostHeader}: ${err.message}`)));
      });
      const timer = setTimeout(() => req.destroy(new FederationRequestError(`${target.hostHeader} did not answer within ${timeoutMs} ms`)), timeoutMs);
      req.once('close', () => clearTimeout(timer));
      req.once('timeout', () => req.destroy(new FederationRequestError(`${target.hostHeader} did not answer within ${timeoutMs} ms`)));
      req.once('error', (err) => reject(err instanceof FederationRequestError ? err : new FederationRequestError(`${target.hostHeader}: ${err.message}`)));
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }

  /** Loud at start: certificates of peers are not checked. */
  warnIfInsecure(): void {
    if (!this.settings.verifyTls) this.log.warn('FEDERATION_VERIFY_TLS=false: the certificates of other servers are NOT checked; anyone on the path can impersonate them. Test set-ups only.');
  }
}
