import type { Knex } from 'knex';

/**
 * Issue 9 (roles9): server roles, their assignments and the audit log (owned by homeserver/admin/);
 * the account states admins set (suspended, locked, shadow-banned, awaiting approval) on `users`
 * (owned by homeserver/accounts/, which enforces them).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- Roles defined by admins (the built-in ones — owner, admin, moderator, support, user — live in
    -- homeserver/admin/permissions.ts and cannot be changed).
    CREATE TABLE admin_roles (
      name         TEXT PRIMARY KEY,
      rank         INTEGER NOT NULL,
      permissions  TEXT[] NOT NULL,
      description  TEXT NOT NULL DEFAULT '',
      created_by   TEXT NOT NULL,
      created_ts   BIGINT NOT NULL
    );

    -- A user's server role; none: 'admin' when users.is_admin, else 'user'. users.is_admin follows
    -- the assigned role's rank (Synapse's admin flag).
    CREATE TABLE admin_role_assignments (
      user_id      TEXT PRIMARY KEY REFERENCES users(user_id),
      role         TEXT NOT NULL,
      assigned_by  TEXT NOT NULL,
      assigned_ts  BIGINT NOT NULL
    );
    CREATE INDEX admin_role_assignments_role ON admin_role_assignments (role);

    -- One row per admin action (who, what, on what, when, from where, outcome).
    CREATE TABLE admin_audit_log (
      id       BIGSERIAL PRIMARY KEY,
      ts       BIGINT NOT NULL,
      actor    TEXT NOT NULL,
      action   TEXT NOT NULL,
      target   TEXT,
      ip       TEXT,
      outcome  TEXT NOT NULL,
      details  JSONB NOT NULL DEFAULT '{}'
    );
    CREATE INDEX admin_audit_log_actor ON admin_audit_log (actor, id);
    CREATE INDEX admin_audit_log_target ON admin_audit_log (target, id);
    CREATE INDEX admin_audit_log_action ON admin_audit_log (action text_pattern_ops, id);
    CREATE INDEX admin_audit_log_ts ON admin_audit_log (ts);

    ALTER TABLE users
      ADD COLUMN suspended       BOOLEAN NOT NULL DEFAULT FALSE,
      ADD COLUMN locked          BOOLEAN NOT NULL DEFAULT FALSE,
      ADD COLUMN shadow_banned   BOOLEAN NOT NULL DEFAULT FALSE,
      ADD COLUMN approved        BOOLEAN NOT NULL DEFAULT TRUE,
      ADD COLUMN erased          BOOLEAN NOT NULL DEFAULT FALSE,
      -- The newest last_seen_ts of the account's devices (written with them, in batches).
      ADD COLUMN last_seen_ts    BIGINT;
    UPDATE users u SET last_seen_ts = d.ts FROM (SELECT user_id, max(last_seen_ts) AS ts FROM devices GROUP BY user_id) d WHERE d.user_id = u.user_id;
    CREATE INDEX users_last_seen ON users (last_seen_ts DESC NULLS LAST, user_id DESC);
    -- The admin user list: newest / oldest first, and the approval queue.
    CREATE INDEX users_created_ts ON users (created_ts, user_id);
    CREATE INDEX users_awaiting_approval ON users (created_ts) WHERE NOT approved;
    -- The admin user search (name: the localpart or display name contains …): trigram indexes, so
    -- that a search over 100,000 accounts does not read them all.
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX users_localpart_trgm ON users USING gin (localpart gin_trgm_ops);
    CREATE INDEX profiles_displayname_trgm ON profiles USING gin (displayname gin_trgm_ops);
  `);
}
