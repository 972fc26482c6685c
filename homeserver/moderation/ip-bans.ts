// IP / CIDR bans: refused before any work is done. Every worker keeps the bans in memory (a
// BlockList); a change on any worker reloads them everywhere through the invalidation bus.
import { BlockList, isIP } from 'node:net';
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { MatrixError } from '../http/errors.ts';
import { normaliseAddress } from '../http/client-address.ts';
import type { BanRow, ModerationStore } from './store.ts';

/** `1.2.3.4`, `10.0.0.0/8`, `2001:db8::/32` → the normalised block (`1.2.3.4/32`); undefined when not one. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6'; cidr: string } | undefined {
  const [rawAddress = '', bits, ...rest] = text.trim().split('/');
  if (rest.length) return undefined;
  const address = normaliseAddress(rawAddress);
  const family = isIP(address);
  if (!family) return undefined;
  const max = family === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
  if (!(prefix >= 0 && prefix <= max)) return undefined;
  return { address, prefix, family: family === 4 ? 'ipv4' : 'ipv6', cidr: `${address}/${prefix}` };
}

export class IpBans {
  private list = new BlockList();
  private rows: BanRow[] = [];
  /** When the soonest ban expires (the list is rebuilt then). */
  private nextExpiry = Number.POSITIVE_INFINITY;
  /** Set by the composition root: tells every worker to reload. */
  changed: () => void = () => { void this.reload(); };

  constructor(private store: ModerationStore, private log: Logger) {}

  /** A reload under way: requests wait for it, so a ban heard from another worker applies at once. */
  private loading: Promise<void> | undefined;
  private reloads = 0;

  reload(): Promise<void> {
    const seq = ++this.reloads;
    const p = (async () => {
      try {
        const rows = await this.store.bans();
        // Reloads may finish out of order: only the latest started one is applied.
        if (seq !== this.reloads) return;
        this.rows = rows;
        this.rebuild(Date.now());
      } catch (err) {
        this.log.error({ err }, 'IP bans not reloaded');
      }
    })();
    this.loading = p;
    void p.finally(() => { if (this.loading === p) this.loading = undefined; });
    return p;
  }

  private rebuild(now: number): void {
    const list = new BlockList();
    let next = Number.POSITIVE_INFINITY;
    for (const b of this.rows) {
      if (b.expires_ts !== null && b.expires_ts <= now) continue;
      const c = parseCidr(b.cidr);
      if (!c) continue;
      list.addSubnet(c.address, c.prefix, c.family);
      if (b.expires_ts !== null) next = Math.min(next, b.expires_ts);
    }
    this.list = list;
    this.nextExpiry = next;
  }

  /** Whether an address is banned now. */
  banned(address: string): boolean {
    const now = Date.now();
    if (now >= this.nextExpiry) this.rebuild(now);
    if (!this.rows.length) return false;
    const a = normaliseAddress(address);
    const family = isIP(a);
    return family !== 0 && this.list.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }

  /** The early middleware: a banned client gets 403 before routing, authentication or a body read. */
  middleware(): Middleware {
    return async (ctx, next) => {
      if (this.loading) await this.loading;
      if (this.banned(ctx.ip)) {
        ctx.set('Connection', 'close');
        throw new MatrixError(403, 'M_FORBIDDEN', 'Your address is banned from this server');
      }
      await next();
    };
  }

  /** Whether a ban of `cidr` would refuse `address`. */
  wouldBan(cidr: string, address: string): boolean {
    const c = parseCidr(cidr);
    const a = normaliseAddress(address);
    const family = isIP(a);
    if (!c || !family) return false;
    const one = new BlockList();
    one.addSubnet(c.address, c.prefix, c.family);
    return one.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }

  async add(b: { cidr: string; reason: string | null; createdBy: string; expiresTs: number | null }): Promise<BanRow> {
    const row = await this.store.upsertBan({ ...b, now: Date.now() });
    await this.reload();
    this.changed();
    return row;
  }

  async remove(id: number): Promise<BanRow | undefined> {
    const row = await this.store.deleteBan(id);
    await this.reload();
    if (row) this.changed();
    return row;
  }

  list_(): Promise<BanRow[]> {
    return this.store.bans();
  }

  get(id: number): Promise<BanRow | undefined> {
    return this.store.ban(id);
  }
}
