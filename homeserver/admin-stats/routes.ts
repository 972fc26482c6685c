// The admin dashboard's read-only endpoints (issue 12), beside the admin API of issue 9:
//   GET /_super/admin/v1/stats    live figures (users.read): users online, messages and rate-limit
//                                 refusals per minute, rooms, registrations per hour, workers,
//                                 PostgreSQL and Redis health
//   GET /_super/admin/v1/server   version and configuration summary (server.manage); never a secret
import type { Routes } from '../http/app.ts';
import { requirePermission } from '../admin/guard.ts';
import type { AdminStats } from './service.ts';

export function adminStatsRoutes(r: Routes, stats: AdminStats, summary: () => Record<string, unknown>, version: string): void {
  r.raw('get', '/_super/admin/v1/stats', async (ctx) => {
    await requirePermission(ctx, 'users.read');
    return stats.snapshot();
  }, { auth: true });

  r.raw('get', '/_super/admin/v1/server', async (ctx) => {
    await requirePermission(ctx, 'server.manage');
    return { server_version: `super-server ${version}`, node_version: process.version, config: summary() };
  }, { auth: true });
}
