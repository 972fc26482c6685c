// The users admin (issue 9): what Synapse's users admin API and ours do to accounts, on top of
// accounts/ (which owns and enforces the account states) and roles.ts (the admin flag is a role).
import type { AccountService } from '../accounts/service.ts';
import { LruCache } from '../cache/lru.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import { isValidLocalpart } from '../protocol/identifiers.ts';
import type { RoleService } from './roles.ts';
import type { AdminActor } from './guard.ts';
import type { AdminUserRow, AdminUserStore, UserFilter } from './users-store.ts';

/** What users.ts needs from profiles/ and rooms/ (main.ts wires them). */
export interface UserAdminDeps {
  setProfile(userId: string, field: 'displayname' | 'avatar_url', value: string | null): Promise<void>;
  joinedRoomIds(userId: string): Promise<string[]>;
  /** After a role change: the server's rooms follow (server-rooms.ts). */
  rolesChanged(userIds: string[]): Promise<void>;
}

/** Synapse's user object (GET /_synapse/admin/v2/users/{userId}, list entries), plus our states. */
export function userJson(u: AdminUserRow): Record<string, unknown> {
  return {
    name: u.user_id,
    displayname: u.displayname,
    avatar_url: u.avatar_url,
    is_guest: u.is_guest,
    admin: u.is_admin,
    user_type: null,
    deactivated: u.deactivated,
    erased: u.erased,
    shadow_banned: u.shadow_banned,
    locked: u.locked,
    suspended: u.suspended,
    approved: u.approved,
    creation_ts: Number(u.created_ts),
    last_seen_ts: u.last_seen_ts === null ? null : Number(u.last_seen_ts),
    // ours: the server role (issue 9)
    role: u.role ?? (u.is_admin ? 'admin' : 'user'),
  };
}

/** See UserAdmin.list. */
const LARGE_TOTAL = 10_000;
const TOTAL_REUSE_MS = 10_000;

export class UserAdmin {
  constructor(
    readonly accounts: AccountService,
    readonly roles: RoleService,
    private store: AdminUserStore,
    private deps: UserAdminDeps,
    readonly serverName: string,
  ) {}

  /** A local user id from a path parameter: 400 for a malformed or remote one. */
  localUserId(raw: string | undefined): string {
    const id = raw ?? '';
    const m = /^@([^:]+):(.+)$/.exec(id);
    if (!m) throw new MatrixError(400, 'M_INVALID_PARAM', `user_id: ${id} is not a user ID`);
    if (m[2] !== this.serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'user_id: can only act on local users');
    return id;
  }

  /**
   * A page of the user list and the total. Counting a large list costs more than reading its page
   * (100,000 accounts: tens of ms), and a dashboard pages through one list: a total of at least
   * LARGE_TOTAL is reused for TOTAL_REUSE_MS by the pages of the same list (smaller ones are exact).
   */
  async list(f: UserFilter): Promise<{ users: AdminUserRow[]; total: number }> {
    const key = JSON.stringify({ ...f, from: 0, limit: 0 });
    const known = this.totals.get(key);
    const fresh = known && Date.now() - known.at < TOTAL_REUSE_MS ? known.total : undefined;
    const r = await this.store.list(f, fresh === undefined);
    const total = r.total ?? fresh!;
    if (r.total !== undefined && r.total >= LARGE_TOTAL) this.totals.set(key, { total: r.total, at: Date.now() });
    return { users: r.users, total: Math.max(total, f.from + r.users.length) };
  }

  private totals = new LruCache<string, { total: number; at: number }>(256);

  async user(userId: string): Promise<AdminUserRow> {
    const u = await this.store.user(userId);
    if (!u) throw notFound('User not found');
    return u;
  }

  async details(userId: string): Promise<Record<string, unknown>> {
    const u = await this.user(userId);
    return { ...userJson(u), threepids: await this.store.threepids(userId), external_ids: [], appservice_id: null, consent_server_notice_sent: null, consent_version: null, consent_ts: null };
  }

  /**
   * Synapse's PUT /_synapse/admin/v2/users/{userId}: creates the account (true) or modifies it
   * (false). The admin flag is the role admin (set) or user (cleared), under the rank rules.
   */
  async createOrModify(admin: AdminActor, userId: string, b: {
    password?: string; logout_devices?: boolean; displayname?: string | null; avatar_url?: string | null;
    admin?: boolean; deactivated?: boolean; locked?: boolean; suspended?: boolean; role?: string;
  }): Promise<boolean> {
    const existing = await this.store.user(userId);
    const localpart = userId.slice(1, userId.indexOf(':'));
    if (b.password !== undefined) {
      this.accounts.checkPasswordShape(b.password);
      this.accounts.checkPasswordPolicy(b.password, localpart);
    }
    const wantedRole = b.role ?? (b.admin === undefined ? undefined : b.admin ? 'admin' : 'user');
    // Every check before the first change: a refused request changes nothing.
    if (wantedRole !== undefined) {
      const role = await this.roles.role(wantedRole);
      if (!role) throw new MatrixError(400, 'M_INVALID_PARAM', `role: no role named ${wantedRole}`);
      if (!admin.permissions.includes('roles.assign') && wantedRole !== (existing?.role ?? (existing?.is_admin ? 'admin' : 'user'))) {
        throw forbidden('You need the permission roles.assign to change a server role');
      }
      const missing = role.permissions.filter((p) => !admin.permissions.includes(p));
      if (missing.length) throw forbidden(`You cannot grant permissions you do not hold: ${missing.join(', ')}`);
      if (!(admin.rank > role.rank || admin.role === 'owner')) throw forbidden(`You cannot grant the role ${role.name} (rank ${role.rank}): it is not below yours`);
    }
    if (!existing) {
      if (!isValidLocalpart(localpart) || localpart.startsWith('_')) throw new MatrixError(400, 'M_INVALID_USERNAME', "User ID can only contain characters a-z, 0-9, or '=_-./+'");
      if (b.deactivated) throw new MatrixError(400, 'M_INVALID_PARAM', 'deactivated: a new account cannot be created deactivated');
      await this.accounts.register({
        localpart, password: b.password ?? null, isAdmin: false, displayname: b.displayname ?? localpart, inhibitLogin: true,
      });
      if (wantedRole !== undefined && wantedRole !== 'user') await this.assignRole(admin, userId, wantedRole);
      if (b.avatar_url) await this.deps.setProfile(userId, 'avatar_url', b.avatar_url);
      if (b.locked || b.suspended) await this.accounts.setAccountState(userId, { locked: b.locked, suspended: b.suspended }, admin.userId);
      return true;
    }
    if (b.deactivated === false && existing.deactivated && b.password === undefined) {
      throw new MatrixError(400, 'M_MISSING_PARAM', 'password: must be given to reactivate an account');
    }
    if (wantedRole !== undefined) await this.assignRole(admin, userId, wantedRole);
    if (b.deactivated === true && !existing.deactivated) await this.accounts.deactivate(userId);
    if (b.deactivated === false && existing.deactivated) await this.accounts.reactivate(userId, b.password ?? null);
    else if (b.password !== undefined) await this.accounts.setPasswordAsAdmin(userId, b.password, b.logout_devices ?? true);
    if (b.displayname !== undefined) await this.deps.setProfile(userId, 'displayname', b.displayname);
    if (b.avatar_url !== undefined) await this.deps.setProfile(userId, 'avatar_url', b.avatar_url);
    if (b.locked !== undefined || b.suspended !== undefined) await this.accounts.setAccountState(userId, { locked: b.locked, suspended: b.suspended }, admin.userId);
    return false;
  }

  /** Gives a user a role under the rank rules (roles.ts); the server's rooms follow. */
  async assignRole(admin: AdminActor, userId: string, role: string): Promise<{ from: string; to: string }> {
    const change = await this.roles.assign(admin, userId, role);
    await this.deps.rolesChanged([userId]);
    return change;
  }

  async deactivate(userId: string, erase: boolean): Promise<void> {
    await this.user(userId);
    await this.accounts.deactivate(userId, erase);
  }

  async resetPassword(userId: string, password: string, logoutDevices: boolean): Promise<void> {
    const u = await this.user(userId);
    if (u.deactivated) throw new MatrixError(400, 'M_INVALID_PARAM', 'The account is deactivated');
    this.accounts.checkPasswordShape(password);
    this.accounts.checkPasswordPolicy(password, userId.slice(1, userId.indexOf(':')));
    await this.accounts.setPasswordAsAdmin(userId, password, logoutDevices);
  }

  /** `by`: the admin (issue 12: a restriction set here is listed with them as its author, without reason or expiry). */
  async setState(userId: string, state: Partial<Record<'suspended' | 'locked' | 'shadow_banned' | 'approved', boolean>>, by: string | null = null): Promise<void> {
    if (!(await this.accounts.setAccountState(userId, state, by))) throw notFound('User not found');
  }

  async whois(userId: string) {
    await this.user(userId);
    const sessions = await this.store.sessions(userId);
    return {
      user_id: userId,
      devices: Object.fromEntries(sessions.map((s) => [s.device_id, {
        sessions: [{ connections: s.last_seen_ts === null ? [] : [{ ip: s.last_seen_ip, last_seen: Number(s.last_seen_ts), user_agent: null }] }],
      }])),
    };
  }

  async joinedRooms(userId: string): Promise<string[]> {
    await this.user(userId);
    return this.deps.joinedRoomIds(userId);
  }

  async devices(userId: string) {
    await this.user(userId);
    return (await this.accounts.devices(userId)).map((d) => ({
      device_id: d.device_id, display_name: d.display_name, last_seen_ip: d.last_seen_ip,
      last_seen_ts: d.last_seen_ts === null ? null : Number(d.last_seen_ts), last_seen_user_agent: null, user_id: userId,
    }));
  }

  async deleteDevices(userId: string, deviceIds: string[]): Promise<void> {
    await this.user(userId);
    await this.accounts.deleteDevices(userId, deviceIds);
  }

  async loginAs(userId: string, by: string, validUntilMs: number | null): Promise<string> {
    const u = await this.user(userId);
    if (u.deactivated) throw new MatrixError(400, 'M_INVALID_PARAM', 'The account is deactivated');
    if (userId === by) throw new MatrixError(400, 'M_UNKNOWN', 'Cannot use admin API to login as self');
    return this.accounts.impersonate(userId, by, validUntilMs);
  }

  /** Users seen in the last `withinMs` (online users). */
  online(withinMs: number, limit: number) {
    return this.store.seenSince(Date.now() - withinMs, limit);
  }
}
