// GET    /_super/admin/v1/bans        every IP / CIDR ban
// POST   /_super/admin/v1/bans        add one: { cidr, reason?, expires_ts? | duration_ms? } (the same range again: replaced)
// GET    /_super/admin/v1/bans/{id}   one
// DELETE /_super/admin/v1/bans/{id}   lift it
// Permission server.manage (admin/guard.ts); each change writes one audit entry.
import { z } from 'zod';
import type { RouterContext } from '@koa/router';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { invalidParam, notFound } from '../http/errors.ts';
import { requirePermission } from '../admin/guard.ts';
import { audited } from '../admin/audit.ts';
import { parseCidr, type IpBans } from './ip-bans.ts';
import type { BanRow } from './store.ts';

const banSchema = z.object({
  cidr: z.string().max(64),
  reason: z.string().max(1000).optional(),
  expires_ts: z.number().int().positive().optional(),
  duration_ms: z.number().int().positive().optional(),
});

const shape = (b: BanRow) => ({ id: Number(b.id), cidr: b.cidr, reason: b.reason, created_by: b.created_by, created_ts: Number(b.created_ts), expires_ts: b.expires_ts === null ? null : Number(b.expires_ts) });

function banId(ctx: RouterContext): number {
  const id = ctx.params.id!;
  if (!/^\d{1,15}$/.test(id)) throw invalidParam('id: must be a ban id (an integer)');
  return Number(id);
}

export function ipBanRoutes(r: Routes, bans: IpBans): void {
  r.raw('get', '/_super/admin/v1/bans', async (ctx) => {
    await requirePermission(ctx, 'server.manage');
    const now = Date.now();
    return { bans: (await bans.list_()).map(shape).map((b) => ({ ...b, expired: b.expires_ts !== null && b.expires_ts <= now })) };
  }, { auth: true });

  r.raw('post', '/_super/admin/v1/bans', async (ctx) => {
    const actor = await requirePermission(ctx, 'server.manage');
    const b = body(ctx, banSchema);
    const c = parseCidr(b.cidr);
    if (!c) throw invalidParam(`cidr: ${b.cidr} is not an IP address or CIDR block (e.g. 192.0.2.0/24, 2001:db8::/32)`);
    if (b.expires_ts !== undefined && b.duration_ms !== undefined) throw invalidParam('expires_ts: give expires_ts or duration_ms, not both');
    const expiresTs = b.expires_ts ?? (b.duration_ms !== undefined ? Date.now() + b.duration_ms : null);
    if (expiresTs !== null && expiresTs <= Date.now()) throw invalidParam('expires_ts: must be in the future');
    // An admin does not lock themselves out by mistake.
    if (ctx.ip && parseCidr(ctx.ip) && bans.wouldBan(c.cidr, ctx.ip)) throw invalidParam(`cidr: ${c.cidr} contains your own address ${ctx.ip}`);
    const row = await audited(ctx, actor, 'ban.add', c.cidr, () => bans.add({ cidr: c.cidr, reason: b.reason ?? null, createdBy: actor.userId, expiresTs }),
      { reason: b.reason ?? null, expires_ts: expiresTs });
    return shape(row);
  }, { auth: true });

  r.raw('get', '/_super/admin/v1/bans/:id', async (ctx) => {
    await requirePermission(ctx, 'server.manage');
    const row = await bans.get(banId(ctx));
    if (!row) throw notFound('Ban not found');
    return shape(row);
  }, { auth: true });

  r.raw('delete', '/_super/admin/v1/bans/:id', async (ctx) => {
    const actor = await requirePermission(ctx, 'server.manage');
    const id = banId(ctx);
    const existing = await bans.get(id);
    if (!existing) throw notFound('Ban not found');
    await audited(ctx, actor, 'ban.remove', existing.cidr, async () => {
      if (!(await bans.remove(id))) throw notFound('Ban not found');
    }, { id });
    return {};
  }, { auth: true });
}
