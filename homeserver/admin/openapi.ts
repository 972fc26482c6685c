// The OpenAPI 3.1 description of /_super/admin/v1 (issue 9), served at GET /_super/admin/v1/openapi.json:
// what the admin dashboard (and anyone scripting the server) builds on. Each operation names the
// permission it needs (`x-permission`); errors are Matrix errors ({errcode, error}).
import { PERMISSIONS } from './permissions.ts';
import { SERVER_VERSION } from './synapse-routes.ts';

type Schema = Record<string, unknown>;
const str = { type: 'string' };
const int = { type: 'integer' };
const bool = { type: 'boolean' };
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const obj = (properties: Record<string, Schema>, required: string[] = []): Schema => ({ type: 'object', properties, required, additionalProperties: false });

const q = (name: string, schema: Schema, description: string) => ({ name, in: 'query', required: false, schema, description });
const p = (name: string, description: string) => ({ name, in: 'path', required: true, schema: str, description });
const paging = [q('from', str, 'next_token of the previous page'), q('limit', { ...int, minimum: 0, maximum: 1000, default: 100 }, 'entries per page')];

/** One operation: its summary, the permission it needs (null: none), parameters, body, answer. */
export interface AdminOperation { summary: string; permission: string | null; params?: unknown[]; body?: Schema; response: Schema; status?: string }
type Op = AdminOperation;

const ops: Record<string, Record<string, Op>> = {
  '/openapi.json': { get: { summary: 'This document', permission: null, response: { type: 'object' } } },
  '/me': { get: { summary: "The caller's server role, rank and permissions", permission: null, response: ref('EffectiveRole') } },
  '/permissions': { get: { summary: 'Every permission', permission: 'users.read', response: obj({ permissions: { type: 'array', items: ref('Permission') } }) } },
  '/roles': {
    get: { summary: 'Roles, built-in and defined, highest rank first', permission: 'users.read', response: obj({ roles: { type: 'array', items: ref('Role') } }) },
    post: { summary: 'Define a role (rank below yours, only permissions you hold)', permission: 'roles.assign', body: ref('RoleInput'), response: ref('Role'), status: '201' },
  },
  '/roles/{name}': {
    put: { summary: 'Change a defined role', permission: 'roles.assign', params: [p('name', 'role name')], body: ref('RoleChange'), response: ref('Role') },
    delete: { summary: 'Delete a defined role nobody holds (409 M_ROLE_IN_USE otherwise)', permission: 'roles.assign', params: [p('name', 'role name')], response: obj({}) },
  },
  '/roles/assignments': { get: { summary: 'Who holds which role', permission: 'users.read', params: [q('role', str, 'only this role')], response: obj({ assignments: { type: 'array', items: ref('Assignment') } }) } },
  '/users/{userId}/role': {
    get: { summary: "A user's role", permission: 'users.read', params: [p('userId', 'local user id')], response: ref('EffectiveRole') },
    put: { summary: 'Give a user a role (you must outrank their current and new role, and hold its permissions; owners only by owners)', permission: 'roles.assign', params: [p('userId', 'local user id')], body: obj({ role: str }, ['role']), response: obj({ user_id: str, from: str, to: str }) },
  },
  '/audit': {
    get: {
      summary: 'The audit log, newest first', permission: 'audit.read',
      params: [q('actor', str, 'user id of the actor'), q('action', str, 'exact action, or a prefix ending in . or *'), q('target', str, 'user id, room id, role…'),
        q('outcome', { enum: ['ok', 'denied', 'failed'] }, 'outcome'), q('since', int, 'ms since epoch, inclusive'), q('until', int, 'ms since epoch, exclusive'), ...paging],
      response: obj({ entries: { type: 'array', items: ref('AuditEntry') }, next_token: str }),
    },
  },
  '/online_users': { get: { summary: 'Users seen recently', permission: 'users.read', params: [q('within_ms', int, 'seen within (default 5 minutes)'), q('limit', int, 'at most')], response: ref('OnlineUsers') } },
  '/registration/queue': { get: { summary: 'Accounts waiting for approval (REGISTRATION_APPROVAL=on), oldest first', permission: 'registration.manage', params: paging, response: obj({ users: { type: 'array', items: ref('User') }, total: int, next_token: str }) } },
  '/registration/queue/{userId}/approve': { post: { summary: 'Approve a waiting account', permission: 'registration.manage', params: [p('userId', 'local user id')], response: obj({}) } },
  '/registration/queue/{userId}/reject': { post: { summary: 'Reject a waiting account (deactivated and erased)', permission: 'registration.manage', params: [p('userId', 'local user id')], response: obj({}) } },
  '/commands/ping': { post: { summary: 'Is the server there', permission: 'users.read', response: obj({ pong: bool, ts: int, user_id: str, server_version: str }) } },
  '/commands/verify_user': { post: { summary: 'Vouch for a waiting account (approve it)', permission: 'registration.manage', body: obj({ user_id: str }, ['user_id']), response: obj({ user_id: str, approved: bool }) } },
  '/commands/set_user': {
    post: {
      summary: 'Change an account: profile and password (users.write); locked, suspended, shadow_banned, deactivated (users.ban)', permission: 'users.write',
      body: obj({ user_id: str, displayname: { type: ['string', 'null'] }, avatar_url: { type: ['string', 'null'] }, password: str, logout_devices: bool, locked: bool, suspended: bool, shadow_banned: bool, deactivated: bool }, ['user_id']),
      response: ref('User'),
    },
  },
  '/commands/create_user': { post: { summary: 'Create an account (a role other than user needs roles.assign)', permission: 'users.write', body: obj({ username: str, password: str, displayname: str, role: str }, ['username', 'password']), response: ref('User'), status: '201' } },
  '/commands/change_permission_level': { post: { summary: "Change a user's server role", permission: 'roles.assign', body: obj({ user_id: str, role: str }, ['user_id', 'role']), response: obj({ user_id: str, from: str, to: str }) } },
  '/commands/show_online_users': { post: { summary: 'Users seen recently', permission: 'users.read', body: obj({ within_ms: int, limit: int }), response: ref('OnlineUsers') } },
  '/commands/kill_server': { post: { summary: 'Graceful shutdown: stop accepting, drain, flush, exit', permission: 'server.shutdown', body: obj({ reason: str }), response: obj({ shutting_down: bool }), status: '202' } },
};

const schemas: Record<string, Schema> = {
  Permission: { type: 'string', enum: [...PERMISSIONS] },
  Role: obj({ name: str, rank: int, permissions: { type: 'array', items: ref('Permission') }, builtin: bool, description: str }, ['name', 'rank', 'permissions', 'builtin']),
  RoleInput: obj({ name: { type: 'string', pattern: '^[a-z][a-z0-9_.-]{0,63}$' }, rank: { type: 'integer', minimum: 0, maximum: 1000 }, permissions: { type: 'array', items: ref('Permission') }, description: str }, ['name', 'rank', 'permissions']),
  RoleChange: obj({ rank: { type: 'integer', minimum: 0, maximum: 1000 }, permissions: { type: 'array', items: ref('Permission') }, description: str }, ['rank', 'permissions']),
  EffectiveRole: obj({ user_id: str, role: str, rank: int, permissions: { type: 'array', items: ref('Permission') } }),
  Assignment: obj({ user_id: str, role: str, assigned_by: { type: ['string', 'null'] }, assigned_ts: { type: ['integer', 'null'] } }),
  AuditEntry: obj({ id: int, ts: int, actor: str, action: str, target: { type: ['string', 'null'] }, ip: { type: ['string', 'null'] }, outcome: { enum: ['ok', 'denied', 'failed'] }, details: { type: 'object' } }),
  OnlineUsers: obj({ users: { type: 'array', items: obj({ user_id: str, last_seen_ts: int, last_seen_ip: { type: ['string', 'null'] }, devices: int }) }, total: int, within_ms: int }),
  User: {
    type: 'object', description: "Synapse's admin user object, plus role / suspended / approved",
    properties: { name: str, displayname: { type: ['string', 'null'] }, avatar_url: { type: ['string', 'null'] }, is_guest: bool, admin: bool, deactivated: bool, erased: bool, shadow_banned: bool, locked: bool, suspended: bool, approved: bool, creation_ts: int, last_seen_ts: { type: ['integer', 'null'] }, role: str },
  },
  Error: obj({ errcode: str, error: str }, ['errcode', 'error']),
};

const errors = {
  '400': { description: 'Bad request (M_INVALID_PARAM, M_BAD_JSON, M_MISSING_PARAM naming the field)', content: { 'application/json': { schema: ref('Error') } } },
  '401': { description: 'No or unknown access token', content: { 'application/json': { schema: ref('Error') } } },
  '403': { description: 'M_FORBIDDEN: the permission is missing, or the target does not rank below you', content: { 'application/json': { schema: ref('Error') } } },
  '404': { description: 'M_NOT_FOUND: no such user or role', content: { 'application/json': { schema: ref('Error') } } },
};

/**
 * Other capabilities describe their /_super/admin/v1 endpoints here (e.g. moderation's IP bans and
 * the message_user command), before the server answers: `describeAdminOperations({ '/commands/message_user': { post: {...} } })`.
 */
export function describeAdminOperations(more: Record<string, Record<string, AdminOperation>>, moreSchemas: Record<string, Schema> = {}): void {
  for (const [path, methods] of Object.entries(more)) ops[path] = { ...ops[path], ...methods };
  Object.assign(schemas, moreSchemas);
}

export function adminOpenApi(): Record<string, unknown> {
  const paths: Record<string, unknown> = {};
  for (const [path, methods] of Object.entries(ops)) {
    const item: Record<string, unknown> = {};
    for (const [method, op] of Object.entries(methods)) {
      item[method] = {
        summary: op.summary,
        operationId: `${method}${path.replace(/[{}]/g, '').replace(/[/._](\w)/g, (_, c: string) => c.toUpperCase())}`,
        'x-permission': op.permission,
        ...(op.permission === null && path === '/openapi.json' ? { security: [] } : {}),
        ...(op.params ? { parameters: op.params } : {}),
        ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: op.body } } } } : {}),
        responses: { [op.status ?? '200']: { description: 'OK', content: { 'application/json': { schema: op.response } } }, ...errors },
      };
    }
    paths[path] = item;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'super-server admin API', version: SERVER_VERSION, description: 'Server roles, audit log, approval queue and server commands. Synapse-compatible endpoints live under /_synapse/admin.' },
    servers: [{ url: '/_super/admin/v1' }],
    security: [{ accessToken: [] }],
    paths,
    components: { schemas, securitySchemes: { accessToken: { type: 'http', scheme: 'bearer' } } },
  };
}
