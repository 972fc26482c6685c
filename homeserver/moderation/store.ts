// The moderation tables (migration 015): blocked rooms, room deletions, reports, IP bans, server
// notice rooms, user redaction jobs, invites sent. The SQL of homeserver/moderation/ lives here.
import type { Db } from '../storage/db.ts';

export interface DeletionRow {
  delete_id: string;
  room_id: string;
  status: 'scheduled' | 'active' | 'complete' | 'failed';
  params: string;
  result: string | null;
  error: string | null;
  created_ts: number;
}

export interface ReportRow {
  id: number;
  kind: 'event' | 'room' | 'user';
  reporter: string;
  room_id: string | null;
  event_id: string | null;
  target_user: string | null;
  reason: string | null;
  score: number | null;
  received_ts: number;
  resolved_by: string | null;
  resolved_ts: number | null;
}

export interface BanRow {
  id: number;
  cidr: string;
  reason: string | null;
  created_by: string;
  created_ts: number;
  expires_ts: number | null;
}

export interface RedactionRow {
  redact_id: string;
  user_id: string;
  status: 'scheduled' | 'active' | 'complete' | 'failed';
  failed: string;
}

export interface ReportQuery {
  from: number;
  limit: number;
  dir: 'f' | 'b';
  roomId?: string;
  userId?: string;
  eventSenderUserId?: string;
  /** true: only resolved; false: only open; undefined: both. */
  resolved?: boolean;
  kind?: 'event' | 'room' | 'user';
}

export class ModerationStore {
  constructor(private db: Db) {}

  // ---- blocked rooms
  async block(roomId: string, by: string, now: number): Promise<void> {
    await this.db.raw('INSERT INTO moderation_room_blocks (room_id, blocked_by, blocked_ts) VALUES (?, ?, ?) ON CONFLICT (room_id) DO NOTHING', [roomId, by, now]);
  }

  async unblock(roomId: string): Promise<void> {
    await this.db.raw('DELETE FROM moderation_room_blocks WHERE room_id = ?', [roomId]);
  }

  async blockOf(roomId: string): Promise<{ blocked_by: string } | undefined> {
    return (await this.db.raw('SELECT blocked_by FROM moderation_room_blocks WHERE room_id = ?', [roomId])).rows[0];
  }

  // ---- room deletions
  async insertDeletion(d: { deleteId: string; roomId: string; requester: string; params: unknown; now: number }): Promise<void> {
    await this.db.raw(
      "INSERT INTO moderation_room_deletions (delete_id, room_id, requester, status, params, created_ts) VALUES (?, ?, ?, 'scheduled', ?, ?)",
      [d.deleteId, d.roomId, d.requester, JSON.stringify(d.params), d.now]);
  }

  async updateDeletion(deleteId: string, status: DeletionRow['status'], result: unknown, error: string | null, now: number): Promise<void> {
    await this.db.raw(
      'UPDATE moderation_room_deletions SET status = ?, result = ?, error = ?, finished_ts = ? WHERE delete_id = ?',
      [status, result === undefined ? null : JSON.stringify(result), error, status === 'complete' || status === 'failed' ? now : null, deleteId]);
  }

  async deletion(deleteId: string): Promise<DeletionRow | undefined> {
    return (await this.db.raw('SELECT * FROM moderation_room_deletions WHERE delete_id = ?', [deleteId])).rows[0];
  }

  async deletionsOf(roomId: string): Promise<DeletionRow[]> {
    return (await this.db.raw('SELECT * FROM moderation_room_deletions WHERE room_id = ? ORDER BY created_ts', [roomId])).rows;
  }

  /** A deletion of the room not yet finished. */
  async runningDeletion(roomId: string): Promise<DeletionRow | undefined> {
    return (await this.db.raw("SELECT * FROM moderation_room_deletions WHERE room_id = ? AND status IN ('scheduled', 'active') LIMIT 1", [roomId])).rows[0];
  }

  // ---- reports
  async insertReport(r: Omit<ReportRow, 'id' | 'resolved_by' | 'resolved_ts'>): Promise<number> {
    const res = await this.db.raw(
      `INSERT INTO moderation_reports (kind, reporter, room_id, event_id, target_user, reason, score, received_ts)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      [r.kind, r.reporter, r.room_id, r.event_id, r.target_user, r.reason, r.score, r.received_ts]);
    return Number(res.rows[0].id);
  }

  async reports(q: ReportQuery): Promise<{ rows: ReportRow[]; total: number }> {
    const conds: string[] = ['TRUE'];
    const params: unknown[] = [];
    if (q.roomId !== undefined) { conds.push('strpos(room_id, ?) > 0'); params.push(q.roomId); }
    if (q.userId !== undefined) { conds.push('strpos(reporter, ?) > 0'); params.push(q.userId); }
    if (q.eventSenderUserId !== undefined) { conds.push('target_user = ?'); params.push(q.eventSenderUserId); }
    if (q.kind !== undefined) { conds.push('kind = ?'); params.push(q.kind); }
    if (q.resolved !== undefined) conds.push(q.resolved ? 'resolved_ts IS NOT NULL' : 'resolved_ts IS NULL');
    const dir = q.dir === 'f' ? 'ASC' : 'DESC';
    const r = await this.db.raw(
      `SELECT *, count(*) OVER ()::int AS total FROM moderation_reports WHERE ${conds.join(' AND ')}
       ORDER BY received_ts ${dir}, id ${dir} OFFSET ? LIMIT ?`, [...params, q.from, q.limit] as never);
    let total = r.rows[0]?.total ?? 0;
    if (!r.rows.length && q.from > 0) {
      total = (await this.db.raw(`SELECT count(*)::int AS n FROM moderation_reports WHERE ${conds.join(' AND ')}`, params as never)).rows[0].n;
    }
    return { rows: r.rows.map(({ total: _t, ...row }: ReportRow & { total: number }) => row), total };
  }

  async report(id: number): Promise<ReportRow | undefined> {
    return (await this.db.raw('SELECT * FROM moderation_reports WHERE id = ?', [id])).rows[0];
  }

  /** Marks a report resolved (or open again); false: no such report. */
  async resolveReport(id: number, by: string | null, now: number | null): Promise<boolean> {
    const r = await this.db.raw('UPDATE moderation_reports SET resolved_by = ?, resolved_ts = ? WHERE id = ?', [by, now, id]);
    return (r as { rowCount: number }).rowCount === 1;
  }

  async deleteReport(id: number): Promise<boolean> {
    return ((await this.db.raw('DELETE FROM moderation_reports WHERE id = ?', [id])) as { rowCount: number }).rowCount === 1;
  }

  // ---- IP bans
  async bans(): Promise<BanRow[]> {
    return (await this.db.raw('SELECT * FROM moderation_ip_bans ORDER BY id')).rows;
  }

  async ban(id: number): Promise<BanRow | undefined> {
    return (await this.db.raw('SELECT * FROM moderation_ip_bans WHERE id = ?', [id])).rows[0];
  }

  /** Adds a ban, or replaces the reason and expiry of the same range. */
  async upsertBan(b: { cidr: string; reason: string | null; createdBy: string; now: number; expiresTs: number | null }): Promise<BanRow> {
    const r = await this.db.raw(
      `INSERT INTO moderation_ip_bans (cidr, reason, created_by, created_ts, expires_ts) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (cidr) DO UPDATE SET reason = EXCLUDED.reason, expires_ts = EXCLUDED.expires_ts, created_by = EXCLUDED.created_by, created_ts = EXCLUDED.created_ts
       RETURNING *`, [b.cidr, b.reason, b.createdBy, b.now, b.expiresTs]);
    return r.rows[0];
  }

  async deleteBan(id: number): Promise<BanRow | undefined> {
    return (await this.db.raw('DELETE FROM moderation_ip_bans WHERE id = ? RETURNING *', [id])).rows[0];
  }

  // ---- server notices
  async noticeRoom(userId: string): Promise<string | undefined> {
    return (await this.db.raw('SELECT room_id FROM moderation_notice_rooms WHERE user_id = ?', [userId])).rows[0]?.room_id;
  }

  async setNoticeRoom(userId: string, roomId: string): Promise<void> {
    await this.db.raw('INSERT INTO moderation_notice_rooms (user_id, room_id) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET room_id = EXCLUDED.room_id', [userId, roomId]);
  }

  async forgetNoticeRoom(roomId: string): Promise<void> {
    await this.db.raw('DELETE FROM moderation_notice_rooms WHERE room_id = ?', [roomId]);
  }

  // ---- user redactions
  async insertRedaction(redactId: string, userId: string, requester: string, now: number): Promise<void> {
    await this.db.raw("INSERT INTO moderation_redactions (redact_id, user_id, requester, status, created_ts) VALUES (?, ?, ?, 'scheduled', ?)", [redactId, userId, requester, now]);
  }

  async updateRedaction(redactId: string, status: RedactionRow['status'], failed: Record<string, string>): Promise<void> {
    await this.db.raw('UPDATE moderation_redactions SET status = ?, failed = ? WHERE redact_id = ?', [status, JSON.stringify(failed), redactId]);
  }

  async redaction(redactId: string): Promise<RedactionRow | undefined> {
    return (await this.db.raw('SELECT redact_id, user_id, status, failed FROM moderation_redactions WHERE redact_id = ?', [redactId])).rows[0];
  }

  // ---- invites sent (the per-user invite limit)
  /** Counts the user's invites since `since` and, when below `max`, records this one: false when at the limit. */
  async takeInvite(userId: string, since: number, max: number, now: number): Promise<boolean> {
    return this.db.transaction(async (trx) => {
      // One inviter at a time: two invites at once must not both pass the last free slot.
      await trx.raw('SELECT pg_advisory_xact_lock(hashtext(?))', [`invites|${userId}`]);
      await trx.raw('DELETE FROM moderation_invites_sent WHERE user_id = ? AND sent_ts < ?', [userId, since]);
      const n = Number((await trx.raw('SELECT count(*)::int AS n FROM moderation_invites_sent WHERE user_id = ?', [userId])).rows[0].n);
      if (n >= max) return false;
      await trx.raw('INSERT INTO moderation_invites_sent (user_id, sent_ts) VALUES (?, ?)', [userId, now]);
      return true;
    });
  }
}
