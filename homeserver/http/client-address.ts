// The client's address, the one every per-address limit, ban and log line uses. A proxy's
// X-Forwarded-For or Forwarded header is believed only when the socket's peer is one of
// TRUSTED_PROXIES (the Caddyfile puts Caddy on loopback in front: 127.0.0.0/8 and ::1 by default);
// from anyone else those headers are ignored, since a client can write them.
import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { StartupError } from '../startup-error.ts';

/**
 * No proxy is trusted unless configured: a client talking to the server directly must not choose the
 * address it is limited by. Behind the Caddyfile (deploy/env.example) it is loopback.
 */
export const DEFAULT_TRUSTED_PROXIES = '';

/** `::ffff:1.2.3.4` (an IPv4 client on a dual-stack socket) is 1.2.3.4. */
export function normaliseAddress(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

export class TrustedProxies {
  private list = new BlockList();
  readonly empty: boolean;

  /** `text`: addresses and CIDR blocks, comma-separated (empty: trust no proxy). */
  constructor(readonly text: string) {
    const entries = text.split(',').map((s) => s.trim()).filter(Boolean);
    this.empty = entries.length === 0;
    for (const entry of entries) {
      const [address = '', bits, ...rest] = entry.split('/');
      const family = isIP(address);
      const max = family === 4 ? 32 : 128;
      const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
      if (!family || rest.length || !(prefix >= 0 && prefix <= max)) {
        throw new StartupError(`TRUSTED_PROXIES=${JSON.stringify(text)} is not valid: "${entry}" is not an IP address or CIDR block (e.g. 127.0.0.1/8,::1,10.0.0.0/8)`);
      }
      this.list.addSubnet(normaliseAddress(address), prefix, family === 4 ? 'ipv4' : 'ipv6');
    }
  }

  has(address: string): boolean {
    const a = normaliseAddress(address);
    const family = isIP(a);
    return family !== 0 && this.list.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** The hops a proxy reported, nearest the client first: Forwarded's `for=` if present, else X-Forwarded-For. */
function reportedHops(req: IncomingMessage): string[] | undefined {
  const forwarded = req.headers.forwarded;
  if (forwarded) {
    return forwarded.split(',').map((element) => {
      const param = element.split(';').map((p) => p.trim()).find((p) => p.toLowerCase().startsWith('for='));
      return param ? unquoteForwarded(param.slice(4)) : '';
    });
  }
  const xff = req.headers['x-forwarded-for'];
  if (!xff) return undefined;
  return (Array.isArray(xff) ? xff.join(',') : xff).split(',').map((s) => s.trim());
}

/** RFC 7239 node: `"[2001:db8::1]:4711"`, `192.0.2.60:80`, `192.0.2.60`; `unknown` and obfuscated names are not addresses. */
function unquoteForwarded(raw: string): string {
  let v = raw.trim();
  if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(v);
  if (bracket) return bracket[1]!;
  const v4port = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(v);
  return v4port ? v4port[1]! : v;
}

/**
 * The client's address: the socket's peer, unless that peer is a trusted proxy; then the nearest
 * hop its header names that is not itself a trusted proxy (walking from the right, as each proxy
 * appends the address it saw). A hop that is not an address stops the walk at the proxy that wrote it.
 */
export function clientAddress(req: IncomingMessage, trusted: TrustedProxies): string {
  let address = normaliseAddress(req.socket.remoteAddress ?? '');
  if (trusted.empty || !trusted.has(address)) return address;
  const hops = reportedHops(req);
  if (!hops) return address;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!;
    if (!isIP(hop)) break;
    address = normaliseAddress(hop);
    if (!trusted.has(address)) break;
  }
  return address;
}
