import type { Knex } from 'knex';
import type { Db } from '../storage/db.ts';

export interface CustomRoleRow { name: string; rank: number; permissions: string[]; description: string; created_by: string; created_ts: number }
export interface AssignmentRow { user_id: string; role: string; assigned_by: string; assigned_ts: number }

/** Roles defined by admins and role assignments (migration 014); only this file runs SQL on them. */
export class RoleStore {
  constructor(readonly db: Db) {}

  /** The user's admin flag and assigned role; undefined for an unknown user. */
  async userRole(userId: string): Promise<{ is_admin: boolean; role: string | null } | undefined> {
    const r = await this.db.raw(
      'SELECT u.is_admin, a.role FROM users u LEFT JOIN admin_role_assignments a ON a.user_id = u.user_id WHERE u.user_id = ?',
      [userId],
    );
    return r.rows[0];
  }

  async customRoles(): Promise<CustomRoleRow[]> {
    const r = await this.db.raw('SELECT * FROM admin_roles ORDER BY rank DESC, name');
    return r.rows;
  }

  async customRole(name: string, db: Knex = this.db): Promise<CustomRoleRow | undefined> {
    const r = await db.raw('SELECT * FROM admin_roles WHERE name = ?', [name]);
    return r.rows[0];
  }

  async insertRole(row: CustomRoleRow): Promise<boolean> {
    const r = await this.db.raw(
      `INSERT INTO admin_roles (name, rank, permissions, description, created_by, created_ts) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT DO NOTHING RETURNING name`,
      [row.name, row.rank, row.permissions, row.description, row.created_by, row.created_ts],
    );
    return r.rows.length > 0;
  }

  async updateRole(name: string, rank: number, permissions: string[], description: string): Promise<void> {
    await this.db.raw('UPDATE admin_roles SET rank = ?, permissions = ?, description = ? WHERE name = ?', [rank, permissions, description, name]);
  }

  /** Deletes a role no one holds; false when someone still holds it. */
  async deleteRole(name: string): Promise<boolean> {
    return this.db.transaction(async (trx) => {
      const held = await trx.raw('SELECT 1 FROM admin_role_assignments WHERE role = ? LIMIT 1', [name]);
      if (held.rows.length) return false;
      await trx.raw('DELETE FROM admin_roles WHERE name = ?', [name]);
      return true;
    });
  }

  async assignments(role?: string): Promise<AssignmentRow[]> {
    const r = role
      ? await this.db.raw('SELECT * FROM admin_role_assignments WHERE role = ? ORDER BY assigned_ts, user_id', [role])
      : await this.db.raw('SELECT * FROM admin_role_assignments ORDER BY assigned_ts, user_id');
    return r.rows;
  }

  /** Users with the admin flag but no assignment (they hold 'admin' implicitly). */
  async implicitAdmins(): Promise<string[]> {
    const r = await this.db.raw(
      'SELECT u.user_id FROM users u LEFT JOIN admin_role_assignments a ON a.user_id = u.user_id WHERE u.is_admin AND a.user_id IS NULL ORDER BY u.user_id',
    );
    return r.rows.map((x: { user_id: string }) => x.user_id);
  }

  /** Assigns a role (`user`: removes the assignment) and sets the admin flag to follow it, in one transaction. */
  async assign(userId: string, role: string, isAdmin: boolean, by: string): Promise<void> {
    await this.db.transaction(async (trx) => {
      if (role === 'user') await trx.raw('DELETE FROM admin_role_assignments WHERE user_id = ?', [userId]);
      else {
        await trx.raw(
          `INSERT INTO admin_role_assignments (user_id, role, assigned_by, assigned_ts) VALUES (?, ?, ?, ?)
           ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, assigned_by = EXCLUDED.assigned_by, assigned_ts = EXCLUDED.assigned_ts`,
          [userId, role, by, Date.now()],
        );
      }
      await trx.raw('UPDATE users SET is_admin = ? WHERE user_id = ?', [isAdmin, userId]);
    });
  }
}
