// GET /health       — liveness: the process answers HTTP (no database), for restarts by a supervisor.
// GET /health/ready — readiness: the database answers too, for a load balancer's health check.
import type { Routes } from '../http/app.ts';
import { MatrixError } from '../http/errors.ts';
import { databaseReady, type Db } from '../storage/db.ts';

export function healthRoutes(r: Routes, db: Db, timeoutMs: number): void {
  r.raw('get', '/health', () => ({ status: 'ok' }));
  r.raw('get', '/health/ready', async () => {
    if (!(await databaseReady(db, timeoutMs))) throw new MatrixError(503, 'M_UNKNOWN', 'Database unavailable', { status: 'unavailable' }, { 'Retry-After': '5' });
    return { status: 'ready' };
  });
}
