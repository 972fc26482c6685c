import type { Bindings, Db } from '../storage/db.ts';

/** One account as the admin API lists it (Synapse's user list entry, plus our states). */
export interface AdminUserRow {
  user_id: string;
  is_guest: boolean;
  is_admin: boolean;
  deactivated: boolean;
  erased: boolean;
  shadow_banned: boolean;
  locked: boolean;
  suspended: boolean;
  approved: boolean;
  created_ts: number;
  displayname: string | null;
  avatar_url: string | null;
  last_seen_ts: number | null;
  role: string | null;
}

export type UserOrder = 'name' | 'is_guest' | 'admin' | 'user_type' | 'deactivated' | 'shadow_banned' | 'displayname' | 'avatar_url' | 'creation_ts' | 'last_seen_ts' | 'locked';

export const USER_ORDERS: readonly UserOrder[] = ['name', 'is_guest', 'admin', 'user_type', 'deactivated', 'shadow_banned', 'displayname', 'avatar_url', 'creation_ts', 'last_seen_ts', 'locked'];

export interface UserFilter {
  /** user_id contains (ignored with `name`, as Synapse) */
  userId?: string;
  /** localpart or displayname contains */
  name?: string;
  guests: boolean;
  deactivated: boolean;
  locked: boolean;
  admins?: boolean;
  /** Only accounts waiting for approval. */
  awaitingApproval?: boolean;
  orderBy: UserOrder;
  dir: 'f' | 'b';
  from: number;
  limit: number;
}

const ORDER_SQL: Record<UserOrder, string> = {
  name: 'u.user_id',
  is_guest: 'u.is_guest',
  admin: 'u.is_admin',
  user_type: 'u.user_id', // no user types here: every account is a plain user
  deactivated: 'u.deactivated',
  shadow_banned: 'u.shadow_banned',
  displayname: 'p.displayname',
  avatar_url: 'p.avatar_url',
  creation_ts: 'u.created_ts',
  last_seen_ts: 'u.last_seen_ts',
  locked: 'u.locked',
};

const COLUMNS = `u.user_id, u.is_guest, u.is_admin, u.deactivated, u.erased, u.shadow_banned, u.locked, u.suspended, u.approved, u.created_ts,
  p.displayname, p.avatar_url, u.last_seen_ts, a.role`;
const FROM = 'users u LEFT JOIN profiles p ON p.user_id = u.user_id LEFT JOIN admin_role_assignments a ON a.user_id = u.user_id';

function like(s: string): string {
  return `%${s.replace(/[\\%_]/g, '\\$&')}%`;
}

/** The admin API's reads of accounts (users, profiles, devices are owned by accounts/ and profiles/: read only here). */
export class AdminUserStore {
  constructor(private db: Db) {}

  /** A page (and, when `withTotal`, how many match in all). */
  async list(f: UserFilter, withTotal = true): Promise<{ users: AdminUserRow[]; total?: number }> {
    const where: string[] = [];
    const params: Bindings = [];
    // A search reads the matching ids from the trigram indexes first (user_id, display name), so
    // that it never walks every account; the rest filters and orders those few.
    let matches = '';
    const searchParams: Bindings = [];
    const searches: string[] = [];
    if (f.userId && !f.name) { searches.push('SELECT user_id FROM users WHERE user_id ILIKE ?'); searchParams.push(like(f.userId)); }
    if (f.name) {
      searches.push('(SELECT user_id FROM users WHERE localpart ILIKE ? UNION SELECT user_id FROM profiles WHERE displayname ILIKE ?)');
      searchParams.push(like(f.name), like(f.name));
    }
    if (searches.length) matches = `WITH m AS (${searches[0]}) `;
    if (!f.guests) where.push('NOT u.is_guest');
    if (!f.deactivated) where.push('NOT u.deactivated');
    if (!f.locked) where.push('NOT u.locked');
    if (f.admins !== undefined) where.push(f.admins ? 'u.is_admin' : 'NOT u.is_admin');
    if (f.awaitingApproval) where.push('NOT u.approved');
    const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const from = matches ? 'm JOIN users u ON u.user_id = m.user_id' : 'users u';
    const dir = f.dir === 'b' ? 'DESC' : 'ASC';
    const nulls = dir === 'ASC' ? 'NULLS FIRST' : 'NULLS LAST';
    // The page's ids first, from users alone (and only the join the order needs); then the page's
    // rows with their profile, last use and role: a deep page does not build the skipped rows.
    const order = ORDER_SQL[f.orderBy];
    const innerJoin = order.startsWith('p.') ? 'LEFT JOIN profiles p ON p.user_id = u.user_id' : '';
    // NULLS only where a column has them: on NOT NULL columns the indexes serve both directions.
    const nullable = order.startsWith('p.') || order === 'u.last_seen_ts';
    const orderBy = order === 'u.user_id' ? `u.user_id ${dir}` : `${order} ${dir}${nullable ? ` ${nulls}` : ''}, u.user_id ${dir}`;
    // A search counts its matches in the same query (a window over the few matching rows), so the
    // trigram indexes are read once; a plain list counts apart (in parallel).
    const pageSql = `${matches}SELECT ${COLUMNS}, page.total FROM (SELECT u.user_id, ${matches ? 'count(*) OVER ()' : 'NULL::int'} AS total
         FROM ${from} ${innerJoin} ${clause} ORDER BY ${orderBy} LIMIT ? OFFSET ?) page
         JOIN users u ON u.user_id = page.user_id LEFT JOIN profiles p ON p.user_id = u.user_id LEFT JOIN admin_role_assignments a ON a.user_id = u.user_id
         ORDER BY ${orderBy}`;
    const countSql = `${matches}SELECT count(*)::int AS n FROM ${from} ${clause}`;
    const pageParams = [...searchParams, ...params, f.limit, f.from];
    const countParams = [...searchParams, ...params];
    let rows: Array<AdminUserRow & { total: number | null }>;
    let total: number | undefined;
    if (matches) {
      // The planner misjudges how many rows an ILIKE '%…%' keeps and would read every profile and
      // account (100,000: ~100 ms) instead of the trigram indexes (~5 ms): a search reads through them.
      [rows, total] = await this.db.transaction(async (trx) => {
        await trx.raw('SET LOCAL enable_seqscan = off');
        const page = (await trx.raw(pageSql, pageParams)).rows as Array<AdminUserRow & { total: number | null }>;
        // A page past the end has no row to carry the count.
        const n = page.length ? Number(page[0]!.total) : withTotal ? (await trx.raw(countSql, countParams)).rows[0].n as number : undefined;
        return [page, n] as const;
      });
    } else {
      const [page, count] = await Promise.all([this.db.raw(pageSql, pageParams), withTotal ? this.db.raw(countSql, countParams) : undefined]);
      rows = page.rows;
      total = count ? (count.rows[0].n as number) : undefined;
    }
    const users = rows.map(({ total: _t, ...u }) => u as AdminUserRow);
    return { users, ...(total !== undefined ? { total } : {}) };
  }

  async user(userId: string): Promise<AdminUserRow | undefined> {
    const r = await this.db.raw(`SELECT ${COLUMNS} FROM ${FROM} WHERE u.user_id = ?`, [userId]);
    return r.rows[0];
  }

  async threepids(userId: string): Promise<Array<{ medium: string; address: string; added_at: number; validated_at: number }>> {
    const r = await this.db.raw('SELECT medium, address, added_at, validated_at FROM user_threepids WHERE user_id = ? ORDER BY added_at', [userId]);
    return r.rows;
  }

  /** Sessions for whois: every device with its last address and time. */
  async sessions(userId: string): Promise<Array<{ device_id: string; last_seen_ip: string | null; last_seen_ts: number | null }>> {
    const r = await this.db.raw('SELECT device_id, last_seen_ip, last_seen_ts FROM devices WHERE user_id = ? ORDER BY last_seen_ts DESC NULLS LAST', [userId]);
    return r.rows;
  }

  /** Users seen since `since` (online users): newest first. */
  async seenSince(since: number, limit: number): Promise<Array<{ user_id: string; last_seen_ts: number; last_seen_ip: string | null; devices: number }>> {
    const r = await this.db.raw(
      `SELECT u.user_id, u.last_seen_ts, d.ip AS last_seen_ip, d.n AS devices FROM users u
       CROSS JOIN LATERAL (SELECT (array_agg(last_seen_ip ORDER BY last_seen_ts DESC NULLS LAST))[1] AS ip, count(*)::int AS n FROM devices WHERE user_id = u.user_id) d
       WHERE u.last_seen_ts >= ? AND d.n > 0 ORDER BY u.last_seen_ts DESC LIMIT ?`,
      [since, limit],
    );
    return r.rows;
  }
}
