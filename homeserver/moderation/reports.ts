// Reports of events, rooms and users by their users (client-server API), and the admins' triage
// queue: listed, read, resolved (or reopened), deleted.
import { notFound } from '../http/errors.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { ModerationStore, ReportQuery, ReportRow } from './store.ts';

export class Reports {
  constructor(private store: ModerationStore, private reader: RoomReader, private userExists: (userId: string) => Promise<boolean>) {}

  /** An event in a room the reporter is joined to (404 otherwise, as the spec says). */
  async reportEvent(reporter: string, roomId: string, eventId: string, reason: string | null, score: number | null): Promise<void> {
    const room = await this.reader.roomMeta(roomId);
    const m = room && (await this.reader.membership(reporter, room.room_nid));
    const event = room && m?.membership === 'join' ? await this.reader.eventById(eventId) : undefined;
    if (!event || event.room_id !== roomId) throw notFound('The event was not found or you are not joined to the room.');
    await this.store.insertReport({ kind: 'event', reporter, room_id: roomId, event_id: eventId, target_user: event.sender, reason, score, received_ts: Date.now() });
  }

  async reportRoom(reporter: string, roomId: string, reason: string): Promise<void> {
    if (!(await this.reader.roomMeta(roomId))) throw notFound('The room was not found.');
    await this.store.insertReport({ kind: 'room', reporter, room_id: roomId, event_id: null, target_user: null, reason, score: null, received_ts: Date.now() });
  }

  async reportUser(reporter: string, userId: string, reason: string): Promise<void> {
    if (!(await this.userExists(userId))) throw notFound('The user was not found.');
    await this.store.insertReport({ kind: 'user', reporter, room_id: null, event_id: null, target_user: userId, reason, score: null, received_ts: Date.now() });
  }

  /** Synapse's event report shape (with our kind and resolution). */
  private async shape(rows: ReportRow[], withEvent: boolean): Promise<Array<Record<string, unknown>>> {
    const roomIds = [...new Set(rows.map((r) => r.room_id).filter((x): x is string => !!x))];
    const details = await this.reader.adminRoomDetails(roomIds, '');
    const out: Array<Record<string, unknown>> = [];
    for (const r of rows) {
      const room = r.room_id ? details.get(r.room_id) : undefined;
      const report: Record<string, unknown> = {
        id: Number(r.id), kind: r.kind, received_ts: Number(r.received_ts), room_id: r.room_id, name: room?.name ?? null,
        canonical_alias: room?.canonical_alias ?? null, event_id: r.event_id, user_id: r.reporter,
        sender: r.kind === 'event' ? r.target_user : null, target_user_id: r.target_user, reason: r.reason, score: r.score,
        resolved: r.resolved_ts !== null, resolved_by: r.resolved_by, resolved_ts: r.resolved_ts === null ? null : Number(r.resolved_ts),
      };
      if (withEvent && r.event_id) {
        const ev = await this.reader.eventById(r.event_id);
        report.event_json = ev ? JSON.parse(ev.json) : null;
      }
      out.push(report);
    }
    return out;
  }

  async list(q: ReportQuery & { kind?: ReportRow['kind'] }): Promise<{ reports: Array<Record<string, unknown>>; total: number; next_token?: number }> {
    const { rows, total } = await this.store.reports(q);
    const reports = await this.shape(rows, false);
    return { reports, total, ...(q.from + rows.length < total ? { next_token: q.from + rows.length } : {}) };
  }

  async get(id: number, kind?: ReportRow['kind']): Promise<Record<string, unknown>> {
    const row = await this.store.report(id);
    if (!row || (kind && row.kind !== kind)) throw notFound('Report not found');
    return (await this.shape([row], true))[0]!;
  }

  async resolve(id: number, by: string, resolved: boolean, kind?: ReportRow['kind']): Promise<void> {
    const row = await this.store.report(id);
    if (!row || (kind && row.kind !== kind)) throw notFound('Report not found');
    await this.store.resolveReport(id, resolved ? by : null, resolved ? Date.now() : null);
  }

  async delete(id: number, kind?: ReportRow['kind']): Promise<void> {
    const row = await this.store.report(id);
    if (!row || (kind && row.kind !== kind)) throw notFound('Report not found');
    await this.store.deleteReport(id);
  }
}
