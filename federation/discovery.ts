// Resolving server names (server-server API "Resolving server names"): IP literals and explicit
// ports as they are; else /.well-known/matrix/server (delegation), then SRV _matrix-fed._tcp and
// the deprecated _matrix._tcp, then port 8448. Results are cached.
import dns from 'node:dns/promises';
import net from 'node:net';

/** Where to connect for a server name, and what to present there. */
export interface ResolvedServer {
  /** Host to connect to (a name to resolve, or an IP address). */
  host: string;
  port: number;
  /** The Host header (the server name, or the delegated name). */
  hostHeader: string;
  /** The name the certificate must be valid for; undefined for an IP address (no SNI). */
  tlsName: string | undefined;
}

export interface SrvRecord { name: string; port: number; priority: number; weight: number }

/** The I/O discovery needs, injectable (unit tests resolve SRV and well-known themselves). */
export interface DiscoveryIo {
  resolveSrv(name: string): Promise<SrvRecord[]>;
  /** The `m.server` of https://<host>/.well-known/matrix/server, undefined when there is none; and how long to cache. */
  fetchWellKnown(host: string): Promise<{ server: string | undefined; cacheMs: number }>;
}

const DEFAULT_PORT = 8448;
/** Results (and failed well-known lookups) are kept this long when the answer says nothing else. */
const CACHE_MS = 3600_000;
const MAX_CACHED = 10_000;

/** A server name split into host and optional port; undefined when it is not one. */
export function splitServerName(name: string): { host: string; port: number | undefined; ip: boolean } | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(name);
  if (!m) return undefined;
  const port = m[2] === undefined ? undefined : Number(m[2]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  const bare = m[1]!.replace(/^\[(.*)\]$/, '$1');
  const ip = net.isIP(bare) !== 0;
  if (m[1]!.startsWith('[') && net.isIP(bare) !== 6) return undefined;
  return { host: bare, port, ip };
}

/** The SRV target to use: lowest priority, then highest weight (no random weighting needed for one answer). */
function pickSrv(records: SrvRecord[]): SrvRecord | undefined {
  return [...records].filter((r) => r.name && r.name !== '.').sort((a, b) => a.priority - b.priority || b.weight - a.weight)[0];
}

export class ServerDiscovery {
  private cache = new Map<string, { value: ResolvedServer; until: number }>();

  constructor(private io: DiscoveryIo, private now: () => number = Date.now) {}

  async resolve(serverName: string): Promise<ResolvedServer> {
    const hit = this.cache.get(serverName);
    if (hit && hit.until > this.now()) return hit.value;
    const { value, cacheMs } = await this.lookup(serverName);
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(serverName, { value, until: this.now() + cacheMs });
    return value;
  }

  /** Forgets a name's resolution (its server could not be reached there). */
  forget(serverName: string): void {
    this.cache.delete(serverName);
  }

  private async lookup(serverName: string): Promise<{ value: ResolvedServer; cacheMs: number }> {
    const parsed = splitServerName(serverName);
    if (!parsed) throw new Error(`${serverName} is not a server name`);
    // 1. An IP literal: that address, its port or 8448.
    if (parsed.ip) return { value: { host: parsed.host, port: parsed.port ?? DEFAULT_PORT, hostHeader: serverName, tlsName: undefined }, cacheMs: CACHE_MS };
    // 2. A host name with an explicit port: no delegation.
    if (parsed.port !== undefined) return { value: { host: parsed.host, port: parsed.port, hostHeader: serverName, tlsName: parsed.host }, cacheMs: CACHE_MS };
    // 3. Delegation by /.well-known/matrix/server.
    let wellKnown: { server: string | undefined; cacheMs: number } = { server: undefined, cacheMs: CACHE_MS };
    try { wellKnown = await this.io.fetchWellKnown(parsed.host); } catch { /* none: fall through to SRV */ }
    const delegated = wellKnown.server !== undefined ? splitServerName(wellKnown.server) : undefined;
    if (delegated) {
      const name = wellKnown.server!;
      if (delegated.ip) return { value: { host: delegated.host, port: delegated.port ?? DEFAULT_PORT, hostHeader: name, tlsName: undefined }, cacheMs: wellKnown.cacheMs };
      if (delegated.port !== undefined) return { value: { host: delegated.host, port: delegated.port, hostHeader: name, tlsName: delegated.host }, cacheMs: wellKnown.cacheMs };
      const srv = await this.srv(delegated.host);
      if (srv) return { value: { host: srv.name, port: srv.port, hostHeader: name, tlsName: delegated.host }, cacheMs: wellKnown.cacheMs };
      return { value: { host: delegated.host, port: DEFAULT_PORT, hostHeader: name, tlsName: delegated.host }, cacheMs: wellKnown.cacheMs };
    }
    // 4. SRV of the server name itself; 5. port 8448.
    const srv = await this.srv(parsed.host);
    if (srv) return { value: { host: srv.name, port: srv.port, hostHeader: serverName, tlsName: parsed.host }, cacheMs: CACHE_MS };
    return { value: { host: parsed.host, port: DEFAULT_PORT, hostHeader: serverName, tlsName: parsed.host }, cacheMs: CACHE_MS };
  }

  /** `_matrix-fed._tcp.<host>`, else the deprecated `_matrix._tcp.<host>`. */
  private async srv(host: string): Promise<SrvRecord | undefined> {
    for (const prefix of ['_matrix-fed._tcp.', '_matrix._tcp.']) {
      try {
        const picked = pickSrv(await this.io.resolveSrv(prefix + host));
        if (picked) return { ...picked, name: picked.name.replace(/\.$/, '') };
      } catch { /* no record */ }
    }
    return undefined;
  }
}

/** The system resolver's SRV lookup. */
export const systemSrv = (name: string): Promise<SrvRecord[]> => dns.resolveSrv(name);

/** Cache-Control max-age of a well-known answer (bounded to a day, as the spec suggests: 48 h max). */
export function wellKnownCacheMs(cacheControl: string | null): number {
  const m = cacheControl ? /max-age=(\d+)/i.exec(cacheControl) : null;
  if (!m) return 24 * CACHE_MS;
  return Math.min(Number(m[1]) * 1000, 48 * CACHE_MS);
}
