// Server roles (issue 9): built-in and admin-defined roles, who holds which, and the rank rules.
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { RoleLookup } from './guard.ts';
import { ADMIN_RANK, BUILTIN_ROLES, implicitRole, isPermission, missingPermissions, type Permission, type Role } from './permissions.ts';
import type { RoleStore } from './roles-store.ts';

export interface EffectiveRole { role: string; rank: number; permissions: Permission[] }

/** Names of roles: lowercase, as permissions. */
const ROLE_NAME = /^[a-z][a-z0-9_.-]{0,63}$/;

export class RoleService implements RoleLookup {
  constructor(private store: RoleStore) {}

  async roles(): Promise<Role[]> {
    const custom = await this.store.customRoles();
    return [...BUILTIN_ROLES, ...custom.map(toRole)].sort((a, b) => b.rank - a.rank || a.name.localeCompare(b.name));
  }

  async role(name: string): Promise<Role | undefined> {
    const builtin = BUILTIN_ROLES.find((r) => r.name === name);
    if (builtin) return builtin;
    const row = await this.store.customRole(name);
    return row ? toRole(row) : undefined;
  }

  async roleOf(userId: string): Promise<EffectiveRole | undefined> {
    const row = await this.store.userRole(userId);
    if (!row) return undefined;
    const name = row.role ?? implicitRole(row.is_admin);
    // A custom role deleted under its holder cannot happen (deleteRole refuses); an unknown name reads as user.
    const role = (await this.role(name)) ?? BUILTIN_ROLES.find((r) => r.name === 'user')!;
    return { role: role.name, rank: role.rank, permissions: [...role.permissions] };
  }

  /**
   * Gives `userId` the role `roleName`, as `actor` (roles.assign checked by the route): the actor
   * must outrank the user's current role (an owner may demote another owner), hold every
   * permission of the new role and outrank it (an owner may make owners).
   */
  async assign(actor: { userId: string; role: string; rank: number; permissions: Permission[] }, userId: string, roleName: string): Promise<{ from: string; to: string }> {
    const current = await this.roleOf(userId);
    if (!current) throw notFound('User not found');
    const next = await this.role(roleName);
    if (!next) throw new MatrixError(400, 'M_INVALID_PARAM', `role: no role named ${roleName}`);
    const actorIsOwner = actor.role === 'owner';
    if (userId === actor.userId && next.rank > current.rank) throw forbidden('You cannot raise your own role');
    if (userId !== actor.userId && !(actor.rank > current.rank || (actorIsOwner && current.role === 'owner'))) {
      throw forbidden(`${userId} has the role ${current.role} (rank ${current.rank}), not below yours (${actor.role}, rank ${actor.rank})`);
    }
    if (!(actor.rank > next.rank || actorIsOwner)) throw forbidden(`You cannot grant the role ${next.name} (rank ${next.rank}): it is not below yours`);
    const missing = missingPermissions(actor.permissions, next.permissions);
    if (missing.length) throw forbidden(`You cannot grant permissions you do not hold: ${missing.join(', ')}`);
    await this.store.assign(userId, next.name, next.rank >= ADMIN_RANK, actor.userId);
    return { from: current.role, to: next.name };
  }

  /** The CLI's assignment (the operator of the machine): no rank rules. */
  async assignAsOperator(userId: string, roleName: string, by: string): Promise<void> {
    const next = await this.role(roleName);
    if (!next) throw new MatrixError(400, 'M_INVALID_PARAM', `role: no role named ${roleName}`);
    await this.store.assign(userId, next.name, next.rank >= ADMIN_RANK, by);
  }

  /** Validated shape of a role an actor defines: below their rank, only permissions they hold. */
  private checkDefinable(actor: EffectiveRole, rank: number, permissions: string[]): Permission[] {
    const unknown = permissions.filter((p) => !isPermission(p));
    if (unknown.length) throw new MatrixError(400, 'M_INVALID_PARAM', `permissions: unknown permission ${unknown.join(', ')}`);
    if (rank >= actor.rank) throw forbidden(`rank: a role you define must rank below yours (${actor.rank})`);
    const perms = permissions as Permission[];
    const missing = missingPermissions(actor.permissions, perms);
    if (missing.length) throw forbidden(`You cannot grant permissions you do not hold: ${missing.join(', ')}`);
    return [...new Set(perms)];
  }

  async define(actor: EffectiveRole & { userId: string }, name: string, rank: number, permissions: string[], description: string): Promise<Role> {
    if (!ROLE_NAME.test(name)) throw new MatrixError(400, 'M_INVALID_PARAM', 'name: lowercase letters, digits, _ . - (at most 64)');
    if (BUILTIN_ROLES.some((r) => r.name === name)) throw new MatrixError(400, 'M_INVALID_PARAM', `name: ${name} is a built-in role`);
    const perms = this.checkDefinable(actor, rank, permissions);
    const created = await this.store.insertRole({ name, rank, permissions: perms, description, created_by: actor.userId, created_ts: Date.now() });
    if (!created) throw new MatrixError(409, 'M_ROLE_IN_USE', `A role named ${name} exists`, {}, {});
    return { name, rank, permissions: perms, description, builtin: false };
  }

  async update(actor: EffectiveRole & { userId: string }, name: string, rank: number, permissions: string[], description: string): Promise<Role> {
    if (BUILTIN_ROLES.some((r) => r.name === name)) throw new MatrixError(400, 'M_INVALID_PARAM', `name: ${name} is a built-in role and cannot be changed`);
    const existing = await this.store.customRole(name);
    if (!existing) throw notFound(`No role named ${name}`);
    if (existing.rank >= actor.rank) throw forbidden(`The role ${name} (rank ${existing.rank}) is not below yours`);
    const perms = this.checkDefinable(actor, rank, permissions);
    await this.store.updateRole(name, rank, perms, description);
    return { name, rank, permissions: perms, description, builtin: false };
  }

  async remove(actor: EffectiveRole, name: string): Promise<void> {
    if (BUILTIN_ROLES.some((r) => r.name === name)) throw new MatrixError(400, 'M_INVALID_PARAM', `${name} is a built-in role and cannot be deleted`);
    const existing = await this.store.customRole(name);
    if (!existing) throw notFound(`No role named ${name}`);
    if (existing.rank >= actor.rank) throw forbidden(`The role ${name} (rank ${existing.rank}) is not below yours`);
    if (!(await this.store.deleteRole(name))) throw new MatrixError(409, 'M_ROLE_IN_USE', `Some users hold the role ${name}: assign them another first`);
  }

  /** Who holds which role (explicit assignments, and the admin-flagged users without one). */
  async assignments(role?: string): Promise<Array<{ user_id: string; role: string; assigned_by: string | null; assigned_ts: number | null }>> {
    const rows = await this.store.assignments(role);
    const out: Array<{ user_id: string; role: string; assigned_by: string | null; assigned_ts: number | null }> = rows.map((r) => ({ user_id: r.user_id, role: r.role, assigned_by: r.assigned_by, assigned_ts: Number(r.assigned_ts) }));
    if (!role || role === 'admin') for (const u of await this.store.implicitAdmins()) out.push({ user_id: u, role: 'admin', assigned_by: null, assigned_ts: null });
    return out;
  }
}

function toRole(r: { name: string; rank: number; permissions: string[]; description: string }): Role {
  return { name: r.name, rank: r.rank, permissions: r.permissions.filter(isPermission), description: r.description, builtin: false };
}
