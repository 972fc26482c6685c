import type { Bindings, Db } from '../storage/db.ts';

export interface AuditRow {
  id: number;
  ts: number;
  actor: string;
  action: string;
  target: string | null;
  ip: string | null;
  outcome: string;
  details: Record<string, unknown>;
}

export interface AuditFilter {
  actor?: string;
  /** Exact, or a prefix ending in `.` / `*` (`user.` → every user action). */
  action?: string;
  target?: string;
  outcome?: string;
  since?: number;
  until?: number;
  /** Paging: entries older than this id (newest first). */
  from?: number;
  limit: number;
}

/** The audit log (migration 014); only this file runs SQL on `admin_audit_log`. */
export class AuditStore {
  constructor(private db: Db) {}

  async insert(e: Omit<AuditRow, 'id'>): Promise<void> {
    await this.db.raw(
      'INSERT INTO admin_audit_log (ts, actor, action, target, ip, outcome, details) VALUES (?, ?, ?, ?, ?, ?, ?::jsonb)',
      [e.ts, e.actor, e.action, e.target, e.ip, e.outcome, JSON.stringify(e.details)],
    );
  }

  async list(f: AuditFilter): Promise<{ entries: AuditRow[]; next: number | null }> {
    const where: string[] = [];
    const params: Bindings = [];
    if (f.actor) { where.push('actor = ?'); params.push(f.actor); }
    if (f.action) {
      if (f.action.endsWith('*') || f.action.endsWith('.')) { where.push('action LIKE ?'); params.push(`${f.action.replace(/\*$/, '').replace(/[%_\\]/g, '\\$&')}%`); }
      else { where.push('action = ?'); params.push(f.action); }
    }
    if (f.target) { where.push('target = ?'); params.push(f.target); }
    if (f.outcome) { where.push('outcome = ?'); params.push(f.outcome); }
    if (f.since !== undefined) { where.push('ts >= ?'); params.push(f.since); }
    if (f.until !== undefined) { where.push('ts < ?'); params.push(f.until); }
    if (f.from !== undefined) { where.push('id < ?'); params.push(f.from); }
    params.push(f.limit + 1);
    const r = await this.db.raw(
      `SELECT id, ts, actor, action, target, ip, outcome, details FROM admin_audit_log
       ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`,
      params,
    );
    const rows = (r.rows as AuditRow[]).map((x) => ({ ...x, id: Number(x.id) }));
    const more = rows.length > f.limit;
    const entries = more ? rows.slice(0, f.limit) : rows;
    return { entries, next: more ? entries[entries.length - 1]!.id : null };
  }
}
