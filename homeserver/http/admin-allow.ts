// ADMIN_ALLOW: the admin API (/_synapse/admin, /_super/admin) and the admin dashboard (/admin/)
// answer only clients whose address is in these ranges (default loopback), as Synapse's docs advise
// keeping the admin API off the public internet. The address is the one every limit and ban uses
// (client-address.ts): behind a proxy in TRUSTED_PROXIES, the client's, not the proxy's — so a
// client cannot get in by writing X-Forwarded-For itself, and Caddy on loopback does not let
// everyone in. The Caddyfile refuses the same ranges at the edge; this is the second lock.
import { BlockList, isIP } from 'node:net';
import type { Middleware } from 'koa';
import { MatrixError } from './errors.ts';
import { normaliseAddress } from './client-address.ts';

export const DEFAULT_ADMIN_ALLOW = ['127.0.0.1/8', '::1'];

/** The paths ADMIN_ALLOW guards. */
const ADMIN_PATH = /^\/(?:_synapse\/admin|_super\/admin|admin)(?:\/|$)/;

export function isAdminPath(p: string): boolean {
  return ADMIN_PATH.test(p);
}

/** A set of CIDR ranges (entries already validated by config.ts). */
export class AddressRanges {
  private list = new BlockList();
  readonly empty: boolean;

  constructor(readonly ranges: string[]) {
    this.empty = ranges.length === 0;
    for (const entry of ranges) {
      const [address = '', bits] = entry.split('/');
      const family = isIP(address);
      if (!family) throw new Error(`not an IP address or CIDR range: ${entry}`);
      const max = family === 4 ? 32 : 128;
      this.list.addSubnet(normaliseAddress(address), bits === undefined ? max : Number(bits), family === 4 ? 'ipv4' : 'ipv6');
    }
  }

  has(address: string): boolean {
    const a = normaliseAddress(address);
    const family = isIP(a);
    return family !== 0 && this.list.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** Refuses admin paths to a client outside `allowed`; runs after ctx.ip is the client's address. */
export function adminAllow(allowed: AddressRanges): Middleware {
  return async (ctx, next) => {
    // The path as sent, before any rewrite: /_synapse//admin or /_synapse/%61dmin must not slip by.
    const p = decodeSafely(ctx.path).replace(/\/{2,}/g, '/');
    if (isAdminPath(p) && !allowed.has(ctx.ip)) {
      throw new MatrixError(403, 'M_FORBIDDEN', 'The admin API and dashboard are not reachable from this address (ADMIN_ALLOW)');
    }
    await next();
  };
}

function decodeSafely(p: string): string {
  try { return decodeURIComponent(p); } catch { return p; }
}
