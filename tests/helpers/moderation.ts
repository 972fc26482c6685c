// Helpers of the moderation tests (issue 9): an admin made in the database, audit entries counted.
import type pg from 'pg';
import { registerUser, type Credentials } from './client.ts';

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
