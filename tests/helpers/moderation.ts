// Helpers of the moderation tests (issue 9): an admin made in the database, audit entries counted.
import type pg from 'pg';
import { registerUser, type Credentials } from './client.ts';
import { connectDatabase } from './database.ts';
import { startServer, type TestServer } from './server.ts';

/** A registered user given a server role straight in the database ('admin' sets the Synapse flag too). */
export async function userWithRole(base: string, db: pg.Client, role: 'owner' | 'admin' | 'moderator' | 'support', localpart?: string): Promise<Credentials> {
  const u = await registerUser(base, localpart);
  if (role === 'admin' || role === 'owner') await db.query('UPDATE users SET is_admin = TRUE WHERE user_id = $1', [u.userId]);
  if (role !== 'admin') {
    await db.query(
      `INSERT INTO admin_role_assignments (user_id, role, assigned_by, assigned_ts) VALUES ($1, $2, 'test', 0)
       ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role`, [u.userId, role]);
  }
  return u;
}

/** The audit entries of an action (and target), oldest first. */
export async function auditEntries(db: pg.Client, action: string, target?: string): Promise<Array<{ actor: string; action: string; target: string | null; ip: string | null; outcome: string; details: unknown }>> {
  const r = await db.query(
    `SELECT actor, action, target, ip, outcome, details FROM admin_audit_log WHERE action = $1 ${target !== undefined ? 'AND target = $2' : ''} ORDER BY id`,
    target !== undefined ? [action, target] : [action]);
  return r.rows;
}

/** Polls until `check` returns a value (or throws after `ms`). */
export async function eventually<T>(check: () => Promise<T | undefined | false>, ms = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Two workers on one database and one Redis (the first makes the database, the second joins it)
 * and an admin of the first; stopped by `after` of the calling file (the second first: the first
 * drops the database). `cleanup`: the test's `t.after`.
 */
export async function twoWorkersWithAdmin(cleanup: (fn: () => Promise<void>) => void): Promise<{ a: TestServer; b: TestServer; db: pg.Client; admin: Credentials }> {
  const a = await startServer({ redis: true, env: { AUTO_JOIN_ROOMS: '' } });
  let b: TestServer | undefined;
  let db: pg.Client | undefined;
  cleanup(async () => {
    await db?.end();
    for (const s of [b, a]) await s?.stop().catch(() => {});
  });
  b = await startServer({ env: { AUTO_JOIN_ROOMS: '', DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1', REDIS_URL: a.env.REDIS_URL!, REDIS_PREFIX: a.env.REDIS_PREFIX! } });
  db = await connectDatabase(a);
  return { a, b, db, admin: await userWithRole(a.baseUrl, db, 'admin') };
}
