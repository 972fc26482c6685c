// The admin dashboard's read-only endpoints (issue 12), beside the admin API of issue 9:
//   GET /_super/admin/v1/stats    live figures (users.read): users online, messages and rate-limit
//                                 refusals per minute, rooms, registrations per hour, workers,
//                                 PostgreSQL and Redis health
//   GET /_super/admin/v1/server   version and configuration summary (server.manage); never a secret
import type { Routes } from '../http/app.ts';
import { requirePermission } from '../admin/guard.ts';
import { describeAdminOperations } from '../admin/openapi.ts';
import type { AdminStats } from './service.ts';

const int = { type: 'integer' };
const series = (what: string) => ({ type: 'array', items: int, description: `${what}, oldest first; the last is the current minute or hour` });
const health = { type: 'object', properties: { ok: { type: 'boolean' }, latency_ms: { type: ['number', 'null'] }, error: { type: 'string' }, configured: { type: 'boolean' } }, required: ['ok', 'latency_ms'] };
const worker = { type: 'object', properties: { id: { type: 'string' }, pid: int, started_ts: int, seen_ts: int, rss_bytes: int, heap_used_bytes: int }, required: ['id', 'pid', 'started_ts', 'seen_ts'] };

describeAdminOperations({
  '/stats': { get: { summary: 'Live figures for the dashboard (users online, messages and rate-limit refusals per minute, rooms, registrations per hour, workers, PostgreSQL and Redis health); a figure that cannot be read is null', permission: 'users.read', response: {
    type: 'object',
    properties: {
      ts: int, users_online: { type: ['integer', 'null'] }, online_within_ms: int, users_total: { type: ['integer', 'null'] }, rooms_total: { type: ['integer', 'null'] },
      messages_per_minute: series('Messages (m.room.message, m.room.encrypted) per minute, last 30 minutes'),
      refusals_per_minute: series('Requests refused with 429 per minute, last 30 minutes'),
      registrations_per_hour: { ...series('Accounts made per hour, last 24 hours'), type: ['array', 'null'] },
      workers: { type: 'array', items: worker }, postgres: health, redis: health,
    },
  } } },
  '/server': { get: { summary: 'Version and configuration summary (never a secret: no URL, password or shared secret)', permission: 'server.manage', response: {
    type: 'object', properties: { server_version: { type: 'string' }, node_version: { type: 'string' }, config: { type: 'object' } }, required: ['server_version', 'config'],
  } } },
});

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
