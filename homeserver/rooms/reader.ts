import type { Bindings } from '../storage/db.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow, type RoomRow, type RoomStore } from './store.ts';
import { formatEvents, type ClientEvent } from './format.ts';
import type { Visibility } from './visibility.ts';
import { filterSql, type RoomEventFilter } from './filter.ts';
import { posToken } from '../sync/token.ts';

type Membership = { membership: string; event_nid: number; stream_pos: number; forgotten: boolean };

/** The read side of rooms: state, members, single events, /messages and /context. */
export class RoomReader {
  constructor(readonly store: RoomStore, readonly visibility: Visibility) {}

  private async roomAndMembership(userId: string, roomId: string): Promise<{ room: RoomRow; m: Membership | undefined }> {
    const room = await this.store.roomMeta(roomId);
    if (!room) throw forbidden(`User ${userId} not in room ${roomId}, or room does not exist`);
    return { room, m: await this.store.membership(userId, room.room_nid) };
  }

  private async isWorldReadable(room: RoomRow): Promise<boolean> {
    const rows = await this.store.currentStateFor(this.store.db, room.room_nid, [['m.room.history_visibility', '']]);
    return rows.some((r) => JSON.parse(r.json).content?.history_visibility === 'world_readable');
  }

  /**
   * The state a user may see: the current state while joined; the state when they left after
   * leaving or being banned; world-readable rooms to anyone.
   */
  async visibleState(userId: string, roomId: string): Promise<EventRow[]> {
    const { room, m } = await this.roomAndMembership(userId, roomId);
    if (m?.membership === 'join') return this.store.currentState(this.store.db, room.room_nid);
    if (m && (m.membership === 'leave' || m.membership === 'ban')) {
      const ev = (await this.store.eventsByNid([Number(m.event_nid)]))[0]!;
      return this.store.stateAtGroup(this.store.db, Number(ev.state_after));
    }
    if (await this.isWorldReadable(room)) return this.store.currentState(this.store.db, room.room_nid);
    throw forbidden(`User ${userId} not in room ${roomId}`);
  }

  async state(me: Requester, roomId: string): Promise<ClientEvent[]> {
    return formatEvents(this.store, await this.visibleState(me.userId, roomId));
  }

  async stateEvent(me: Requester, roomId: string, type: string, key: string): Promise<ClientEvent> {
    const rows = await this.visibleState(me.userId, roomId);
    const row = rows.find((r) => r.type === type && r.state_key === key);
    if (!row) throw notFound('Event not found.');
    return (await formatEvents(this.store, [row]))[0]!;
  }

  async event(me: Requester, roomId: string, eventId: string): Promise<ClientEvent> {
    const { m } = await this.roomAndMembership(me.userId, roomId);
    const row = await this.store.eventById(eventId);
    if (!row || row.room_id !== roomId) throw notFound('Event not found.');
    const visible = await this.visibility.filter([row], me.userId, m);
    if (!visible.length) throw notFound('Event not found.');
    return (await formatEvents(this.store, visible, { userId: me.userId, deviceId: me.deviceId, aggregations: true }))[0]!;
  }

  /** Member events, at a stream position when `at` is given, filtered by membership. */
  async members(me: Requester, roomId: string, opts: { at?: number; membership?: string; notMembership?: string }): Promise<ClientEvent[]> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    let rows: EventRow[];
    if (opts.at !== undefined || (m && m.membership !== 'join')) {
      let limit = opts.at ?? Infinity;
      if (m && m.membership !== 'join') {
        if (m.membership !== 'leave' && m.membership !== 'ban') throw forbidden(`User ${me.userId} not in room ${roomId}`);
        limit = Math.min(limit, Number(m.stream_pos));
      } else if (!m && !(await this.isWorldReadable(room))) throw forbidden(`User ${me.userId} not in room ${roomId}`);
      const r = await this.store.db.raw(
        'SELECT state_after FROM events WHERE room_nid = ? AND stream_pos <= ? ORDER BY stream_pos DESC LIMIT 1',
        [room.room_nid, Number.isFinite(limit) ? limit : Number.MAX_SAFE_INTEGER],
      );
      if (!r.rows[0]) return [];
      rows = await this.store.stateAtGroup(this.store.db, Number(r.rows[0].state_after), { types: ['m.room.member'] });
    } else {
      rows = await this.store.currentState(this.store.db, room.room_nid, ['m.room.member']);
    }
    rows = rows.filter((r) => (!opts.membership || r.membership === opts.membership) && (!opts.notMembership || r.membership !== opts.notMembership));
    return formatEvents(this.store, rows);
  }

  async joinedMembers(me: Requester, roomId: string): Promise<Record<string, { display_name?: string; avatar_url?: string }>> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    if (m?.membership !== 'join') throw forbidden(`User ${me.userId} not in room ${roomId}`);
    const rows = await this.store.currentState(this.store.db, room.room_nid, ['m.room.member']);
    const joined: Record<string, { display_name?: string; avatar_url?: string }> = {};
    for (const r of rows) {
      if (r.membership !== 'join') continue;
      const c = JSON.parse(r.json).content ?? {};
      joined[r.state_key!] = {
        ...(typeof c.displayname === 'string' ? { display_name: c.displayname } : {}),
        ...(typeof c.avatar_url === 'string' ? { avatar_url: c.avatar_url } : {}),
      };
    }
    return joined;
  }

  /** Room events between positions, newest first (dir b) or oldest first (dir f). */
  async eventsBetween(roomNid: number, from: number, to: number | undefined, dir: 'b' | 'f', limit: number, filter?: RoomEventFilter): Promise<EventRow[]> {
    const f = filterSql(filter);
    const range = dir === 'b' ? 'e.stream_pos <= ?' + (to !== undefined ? ' AND e.stream_pos > ?' : '') : 'e.stream_pos > ?' + (to !== undefined ? ' AND e.stream_pos <= ?' : '');
    const params: Bindings = [roomNid, from];
    if (to !== undefined) params.push(to);
    const r = await this.store.db.raw(
      `SELECT ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
       WHERE e.room_nid = ? AND ${range} AND NOT e.outlier AND NOT e.rejected ${f.sql}
       ORDER BY e.stream_pos ${dir === 'b' ? 'DESC' : 'ASC'} LIMIT ?`,
      [...params, ...f.params, limit],
    );
    return r.rows;
  }

  async messages(me: Requester, roomId: string, opts: { from?: number; to?: number; dir: 'b' | 'f'; limit: number; filter: RoomEventFilter; current: number }): Promise<{ chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] }> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    if (!m && !(await this.isWorldReadable(room))) throw forbidden(`User ${me.userId} not in room ${roomId}`);
    const limit = Math.min(Math.max(opts.limit, 0), 1000);
    let from = opts.from ?? (opts.dir === 'b' ? opts.current : 0);
    // Someone who left sees nothing after leaving.
    const ceiling = m && m.membership !== 'join' && m.membership !== 'invite' && m.membership !== 'knock' ? Number(m.stream_pos) : opts.current;
    if (opts.dir === 'b') from = Math.min(from, ceiling);
    const to = opts.dir === 'f' ? Math.min(opts.to ?? ceiling, ceiling) : opts.to;
    const rows = limit === 0 ? [] : await this.eventsBetween(room.room_nid, from, to, opts.dir, limit, opts.filter);
    const visible = await this.visibility.filter(rows, me.userId, m);
    const chunk = await formatEvents(this.store, visible, { userId: me.userId, deviceId: me.deviceId, aggregations: true });
    const out: { chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] } = { chunk, start: posToken(from) };
    if (rows.length === limit && limit > 0) {
      const last = Number(rows[rows.length - 1]!.stream_pos);
      out.end = posToken(opts.dir === 'b' ? last - 1 : last);
    }
    if (opts.filter.lazy_load_members) out.state = await this.memberEventsFor(room, visible);
    return out;
  }

  /** The current member events of the senders of some events (lazy-loading members). */
  async memberEventsFor(room: RoomRow, events: EventRow[], exclude = new Set<string>()): Promise<ClientEvent[]> {
    const senders = [...new Set(events.map((e) => e.sender))].filter((s) => !exclude.has(s));
    if (!senders.length) return [];
    const rows = await this.store.currentStateFor(this.store.db, room.room_nid, senders.map((s) => ['m.room.member', s]));
    const full = await this.store.eventsByNid(rows.map((r) => Number(r.event_nid)));
    return formatEvents(this.store, full);
  }

  async context(me: Requester, roomId: string, eventId: string, limit: number, filter: RoomEventFilter): Promise<Record<string, unknown>> {
    const { room, m } = await this.roomAndMembership(me.userId, roomId);
    const target = await this.store.eventById(eventId);
    if (!target || target.room_id !== roomId) throw notFound('Event not found.');
    if (!(await this.visibility.filter([target], me.userId, m)).length) throw notFound('Event not found.');
    const pos = Number(target.stream_pos);
    const before = Math.floor(limit / 2);
    const after = limit - before;
    const [b, a] = await Promise.all([
      this.eventsBetween(room.room_nid, pos - 1, undefined, 'b', before, filter),
      this.eventsBetween(room.room_nid, pos, undefined, 'f', after, filter),
    ]);
    const [vb, va] = await Promise.all([this.visibility.filter(b, me.userId, m), this.visibility.filter(a, me.userId, m)]);
    const fmt = (rows: EventRow[]) => formatEvents(this.store, rows, { userId: me.userId, deviceId: me.deviceId, aggregations: true });
    const stateRows = await this.store.stateAtGroup(this.store.db, Number(target.state_after));
    let state = stateRows;
    if (filter.lazy_load_members) {
      const senders = new Set([target, ...vb, ...va].map((e) => e.sender));
      state = stateRows.filter((r) => r.type !== 'm.room.member' || senders.has(r.state_key!));
    }
    const lastAfter = a.length ? Number(a[a.length - 1]!.stream_pos) : pos;
    const firstBefore = b.length ? Number(b[b.length - 1]!.stream_pos) - 1 : pos - 1;
    return {
      event: (await fmt([target]))[0],
      events_before: await fmt(vb),
      events_after: await fmt(va),
      start: posToken(firstBefore),
      end: posToken(lastAfter),
      state: await formatEvents(this.store, state),
    };
  }
}

export function parseLimit(raw: unknown, dflt: number, max = 1000): number {
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be a non-negative integer');
  return Math.min(n, max);
}
