// GET /health         liveness: the process answers HTTP (no database), for restarts by a supervisor
// GET /health/ready   readiness: the database answers too, for a load balancer's health check
import type { Routes } from '../http/app.ts';
import { MatrixError } from '../http/errors.ts';
import type { ServerStore } from './store.ts';

export function healthRoutes(r: Routes, store: ServerStore, timeoutMs: number): void {
  r.raw('get', '/health', () => ({ status: 'ok' }));
  r.raw('get', '/health/ready', async () => {
    if (!(await store.ready(timeoutMs))) throw new MatrixError(503, 'M_UNKNOWN', 'Database unavailable', { status: 'unavailable' }, { 'Retry-After': '5' });
    return { status: 'ready' };
  });
}
