// Server roles and permissions (issue 9): pure data and rules, no I/O.

/** What a server role may do. Every admin endpoint names the one it needs (guard.ts). */
export const PERMISSIONS = [
  'users.read', // list and read accounts, whois, devices, joined rooms, online users
  'users.write', // create / modify accounts, reset passwords, delete devices, rate-limit overrides
  'users.ban', // deactivate, suspend, lock, shadow-ban, redact a user's events
  'users.impersonate', // log in as another user
  'rooms.read', // rooms list, details, members, state, messages
  'rooms.moderate', // act in rooms with the server's authority (kick, redact, topic), block rooms
  'rooms.delete', // delete / purge rooms
  'media.quarantine', // quarantine and delete media
  'reports.handle', // read and resolve event / room / user reports
  'registration.manage', // registration tokens, the approval queue
  'notices.send', // server notices
  'roles.assign', // define roles, assign them
  'audit.read', // the audit log
  'server.manage', // server-wide settings: IP / CIDR bans, policy lists, statistics
  'server.shutdown', // kill_server
] as const;

export type Permission = (typeof PERMISSIONS)[number];

export function isPermission(p: string): p is Permission {
  return (PERMISSIONS as readonly string[]).includes(p);
}

export interface Role {
  name: string;
  /** Higher outranks lower; nobody acts on a user of equal or higher rank. */
  rank: number;
  permissions: Permission[];
  builtin: boolean;
  description: string;
}

/** The rank from which a role counts as Synapse's "server admin" (`users.is_admin`, `admin: true`). */
export const ADMIN_RANK = 80;

const ALL: Permission[] = [...PERMISSIONS];

export const BUILTIN_ROLES: readonly Role[] = [
  { name: 'owner', rank: 100, permissions: ALL, builtin: true, description: 'Runs the server: every permission' },
  { name: 'admin', rank: ADMIN_RANK, permissions: ALL.filter((p) => p !== 'server.shutdown'), builtin: true, description: "Synapse's server admin: every permission but shutting the server down" },
  {
    name: 'moderator', rank: 50, builtin: true, description: 'Handles people and rooms: bans, reports, room moderation, approvals',
    permissions: ['users.read', 'users.ban', 'rooms.read', 'rooms.moderate', 'media.quarantine', 'reports.handle', 'registration.manage', 'notices.send'],
  },
  { name: 'support', rank: 20, permissions: ['users.read', 'rooms.read', 'reports.handle'], builtin: true, description: 'Looks people and rooms up, reads reports' },
  { name: 'user', rank: 0, permissions: [], builtin: true, description: 'Everyone: no admin permission' },
];

export const DEFAULT_ROLE = 'user';

/** The role a user without an assignment has: Synapse's admin flag → admin, else user. */
export function implicitRole(isAdminFlag: boolean): string {
  return isAdminFlag ? 'admin' : DEFAULT_ROLE;
}

/**
 * Whether `actor` may act on a user holding `target` (rank rules): only on strictly lower ranks.
 * An owner may act on another owner (the one way an owner is demoted).
 */
export function outranks(actor: { rank: number; role: string }, target: { rank: number; role: string }): boolean {
  if (actor.role === 'owner' && target.role === 'owner') return true;
  return actor.rank > target.rank;
}

/** Permissions in `wanted` the actor does not hold (nobody grants what they do not hold). */
export function missingPermissions(held: readonly Permission[], wanted: readonly Permission[]): Permission[] {
  const have = new Set(held);
  return wanted.filter((p) => !have.has(p));
}
