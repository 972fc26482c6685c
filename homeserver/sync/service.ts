import type { Bindings } from '../storage/db.ts';
import type { Requester } from '../http/context.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { AccountDataStore } from '../accountdata/store.ts';
import { EVENT_COLUMNS, EVENT_JOINS, type EventRow, type RoomStore } from '../rooms/store.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { Visibility } from '../rooms/visibility.ts';
import { formatEvents, type ClientEvent } from '../rooms/format.ts';
import { filterSql, roomAllowed, type RoomEventFilter } from '../rooms/filter.ts';
import { posToken } from './token.ts';
import type { SyncFilter } from './filter.ts';

interface MembershipRow {
  room_nid: number;
  room_id: string;
  membership: string;
  event_nid: number;
  stream_pos: number;
  forgotten: boolean;
}

export interface SyncRequest {
  since?: number;
  timeoutMs: number;
  fullState: boolean;
  filter: SyncFilter;
}

/** Stripped state shown with invites and knocks. */
const STRIPPED_TYPES = ['m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic'];

/**
 * /sync: starts from the user's memberships, reads each room's events between the two positions
 * and the state it needs; long-polls on the notifier until something is there or time is up.
 */
export class SyncService {
  constructor(
    private store: RoomStore,
    private reader: RoomReader,
    private visibility: Visibility,
    private accountData: AccountDataStore,
    private tracker: StreamTracker,
    private notifier: Notifier,
  ) {}

  private membershipCache = new Map<string, MembershipRow[]>();
  private membershipVersion = new Map<string, number>();

  async sync(me: Requester, req: SyncRequest, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const deadline = Date.now() + req.timeoutMs;
    let since = req.since;
    for (;;) {
      const to = this.tracker.current();
      const keys = [me.userId, ...(await this.memberships(me.userId)).map((m) => m.room_id)];
      // The notifier knows when nothing happened for this user: then there is nothing to read.
      const quiet = since !== undefined && !req.fullState && this.notifier.changedSince(keys, since) === false;
      const res = quiet ? emptyResponse(to) : await this.compute(me, { ...req, since }, to);
      const remaining = deadline - Date.now();
      if (since === undefined || req.fullState || !isEmpty(res) || remaining <= 0 || signal?.aborted) return res;
      // Nothing new: wait on the user and each of their rooms, from the position we read up to.
      const woken = await this.notifier.wait(keys, to, remaining, signal);
      if (!woken) return res;
      since = to;
    }
  }

  /** A user's memberships, cached until a member event about them is persisted. */
  async memberships(userId: string): Promise<MembershipRow[]> {
    const hit = this.membershipCache.get(userId);
    if (hit) return hit;
    const version = this.membershipVersion.get(userId) ?? 0;
    const r = await this.store.db.raw(
      `SELECT m.room_nid, r.room_id, m.membership, m.event_nid, m.stream_pos, m.forgotten
       FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ?`,
      [userId],
    );
    // A membership written while we read must not be hidden by what we read before it.
    if ((this.membershipVersion.get(userId) ?? 0) === version) {
      if (this.membershipCache.size > 100_000) this.membershipCache.clear();
      this.membershipCache.set(userId, r.rows);
    }
    return r.rows;
  }

  /** Called when a member event about `userId` is persisted (or the room is forgotten). */
  membershipChanged(userId: string): void {
    this.membershipCache.delete(userId);
    this.membershipVersion.set(userId, (this.membershipVersion.get(userId) ?? 0) + 1);
  }

  private async compute(me: Requester, req: SyncRequest, to: number): Promise<Record<string, unknown>> {
    const since = req.since;
    const roomFilter = req.filter.room ?? {};
    const timelineFilter: RoomEventFilter = roomFilter.timeline ?? {};
    const limit = Math.max(0, Math.min(timelineFilter.limit ?? 10, 100));
    const lazy = !!roomFilter.state?.lazy_load_members;
    const join: Record<string, unknown> = {};
    const invite: Record<string, unknown> = {};
    const knock: Record<string, unknown> = {};
    const leave: Record<string, unknown> = {};
    const sections: RawSection[] = [];

    const all = (await this.memberships(me.userId)).filter((m) => roomAllowed(roomFilter, m.room_id) && Number(m.stream_pos) <= to);
    const roomAccountData = new Map<string, ClientEvent[]>();
    const globalAccountData: Array<Record<string, unknown>> = [];
    const adChanged = req.fullState || since === undefined || this.notifier.changedSince([me.userId], since) !== false;
    for (const row of adChanged ? await this.accountData.changed(me.userId, req.fullState ? undefined : since, to) : []) {
      const ev = { type: row.type, content: JSON.parse(row.content) };
      if (row.room_id === '') globalAccountData.push(ev);
      else {
        const list = roomAccountData.get(row.room_id) ?? [];
        list.push(ev as ClientEvent);
        roomAccountData.set(row.room_id, list);
      }
    }

    // Which joined rooms have new events at all: one range scan instead of one query per room.
    const joined = all.filter((m) => m.membership === 'join');
    let active = new Set(joined.map((m) => Number(m.room_nid)));
    if (since !== undefined && !req.fullState) {
      const known = joined.map((m) => [m, this.notifier.changedSince([m.room_id], since)] as const);
      if (known.every(([, changed]) => changed !== undefined)) {
        active = new Set(known.filter(([, changed]) => changed).map(([m]) => Number(m.room_nid)));
      } else {
        const r = await this.store.db.raw(
          'SELECT DISTINCT room_nid FROM events WHERE stream_pos > ? AND stream_pos <= ? AND room_nid = ANY(?)',
          [since, to, [...active]],
        );
        active = new Set(r.rows.map((x: { room_nid: number }) => Number(x.room_nid)));
      }
    }

    for (const m of joined) {
      const newlyJoined = since === undefined || Number(m.stream_pos) > since || req.fullState;
      const ad = roomAccountData.get(m.room_id);
      if (!newlyJoined && !active.has(Number(m.room_nid)) && !ad) continue;
      const room = await this.roomSection(me, m, since, to, limit, timelineFilter, lazy, newlyJoined, roomFilter.state, sections);
      if (!room && !ad) continue;
      join[m.room_id] = {
        ...(room ?? { timeline: { events: [], limited: false, prev_batch: posToken(to) }, state: { events: [] } }),
        summary: room?.summary ?? {},
        account_data: { events: ad ?? [] },
        ephemeral: { events: [] },
        // No unread_notifications until push rules are evaluated: counts we cannot back are not sent.
      };
    }

    for (const m of all) {
      const changed = since === undefined || Number(m.stream_pos) > since || req.fullState;
      if ((m.membership === 'invite' || m.membership === 'knock') && changed) {
        const stripped = await this.strippedState(m);
        if (m.membership === 'invite') invite[m.room_id] = { invite_state: { events: stripped } };
        else knock[m.room_id] = { knock_state: { events: stripped } };
      }
      if ((m.membership === 'leave' || m.membership === 'ban') && !m.forgotten) {
        const include = since !== undefined ? Number(m.stream_pos) > since : !!roomFilter.include_leave;
        if (!include) continue;
        // A rejected invite or a left knock shows as a leave with just the member event.
        const room = await this.roomSection(me, m, since, Number(m.stream_pos), limit, timelineFilter, lazy, since === undefined, roomFilter.state, sections);
        // A left room has no summary (spec: LeftRoom); its heroes would name members to users who never joined.
        if (room) delete room.summary;
        leave[m.room_id] = { ...(room ?? { timeline: { events: [], limited: false }, state: { events: [] } }), account_data: { events: roomAccountData.get(m.room_id) ?? [] } };
      }
    }

    const opts = { userId: me.userId, deviceId: me.deviceId, omitRoomId: true };
    const timelines = await formatEvents(this.store, sections.flatMap((s) => s.timeline.events as EventRow[]), { ...opts, aggregations: true });
    const states = await formatEvents(this.store, sections.flatMap((s) => s.state.events as EventRow[]), opts);
    let t = 0;
    let st = 0;
    for (const s of sections) {
      s.timeline.events = timelines.slice(t, (t += s.timeline.events.length));
      s.state.events = states.slice(st, (st += s.state.events.length));
    }

    return {
      next_batch: posToken(to),
      account_data: { events: globalAccountData },
      presence: { events: [] },
      to_device: { events: [] },
      // device_lists and one-time-key counts come with end-to-end encryption: not claimed before.
      rooms: { join, invite, knock, leave },
    };
  }

  /** Timeline and state of one room for this sync; undefined when nothing is new in it. */
  private async roomSection(
    me: Requester,
    m: MembershipRow,
    since: number | undefined,
    to: number,
    limit: number,
    timelineFilter: RoomEventFilter,
    lazy: boolean,
    full: boolean,
    stateFilter: RoomEventFilter | undefined,
    sections: RawSection[],
  ): Promise<RawSection | undefined> {
    const roomNid = Number(m.room_nid);
    // full_state on an incremental sync sends all the state, but the timeline still starts at `since`.
    const lower = full && (since === undefined || Number(m.stream_pos) > since) ? undefined : since;
    // One more than the limit tells whether the timeline was cut.
    const rows = await this.reader.eventsBetween(roomNid, to, lower, 'b', limit + 1, timelineFilter);
    const limited = rows.length > limit;
    const page = rows.slice(0, limit).reverse();
    const current = { membership: m.membership, stream_pos: Number(m.stream_pos) };
    const visible = await this.visibility.filter(page, me.userId, current);
    if (!full && visible.length === 0) return undefined;

    const first = page[0];
    const stateExtra = filterSql(stateFilter);
    let stateRows: EventRow[] = [];
    const lazyMembers = lazy ? [...new Set([...visible.map((e) => e.sender), me.userId])] : undefined;
    if (full) {
      // The state at the start of the timeline; the timeline carries what changes after it.
      let group: number | undefined;
      if (first) group = Number(first.state_before);
      else {
        const r = await this.store.db.raw('SELECT state_after FROM events WHERE room_nid = ? AND stream_pos <= ? ORDER BY stream_pos DESC LIMIT 1', [roomNid, to]);
        group = r.rows[0] ? Number(r.rows[0].state_after) : undefined;
      }
      if (group !== undefined) stateRows = await this.store.stateAtGroup(this.store.db, group, { members: lazyMembers, extra: stateExtra });
    } else if (limited && first) {
      // The gap between `since` and the timeline: the state that changed in it.
      const r = await this.store.db.raw(
        `SELECT DISTINCT ON (e.type_nid, e.state_key_nid) ${EVENT_COLUMNS} FROM events e ${EVENT_JOINS}
         WHERE e.room_nid = ? AND e.state_key_nid IS NOT NULL AND e.stream_pos > ? AND e.stream_pos < ? ${stateExtra.sql}
         ORDER BY e.type_nid, e.state_key_nid, e.stream_pos DESC`,
        [roomNid, since ?? 0, Number(first.stream_pos), ...stateExtra.params],
      );
      stateRows = r.rows;
      if (lazyMembers) {
        const have = new Set(stateRows.filter((s) => s.type === 'm.room.member').map((s) => s.state_key));
        const extra = await this.store.stateAtGroup(this.store.db, Number(first.state_before), { pairs: lazyMembers.filter((u) => !have.has(u)).map((u) => ['m.room.member', u]) });
        stateRows.push(...extra);
        stateRows = stateRows.filter((s) => s.type !== 'm.room.member' || lazyMembers.includes(s.state_key!));
      }
    } else if (lazyMembers && first) {
      // Lazy loading: the members of the timeline's senders, at the timeline's start.
      stateRows = await this.store.stateAtGroup(this.store.db, Number(first.state_before), { pairs: lazyMembers.map((u) => ['m.room.member', u]) });
    }
    stateRows = await this.visibility.filterState(stateRows, me.userId, roomNid, current);
    const timelineIds = new Set(visible.map((e) => e.event_id));
    stateRows = stateRows.filter((s) => !timelineIds.has(s.event_id));

    // Rows for now: compute() formats the rows of every room together, with one set of lookups.
    const section: RawSection = {
      timeline: { events: visible, limited, prev_batch: posToken(first ? Number(first.stream_pos) - 1 : to) },
      state: { events: stateRows },
    };
    sections.push(section);
    if (full || visible.some((e) => e.type === 'm.room.member') || stateRows.some((e) => e.type === 'm.room.member')) {
      section.summary = await this.summary(roomNid, me.userId);
    }
    return section;
  }

  /** Counts and heroes, for clients to name rooms without a name. */
  private async summary(roomNid: number, userId: string): Promise<Record<string, unknown>> {
    const r = await this.store.db.raw(
      `SELECT membership, count(*)::int AS n FROM room_memberships WHERE room_nid = ? AND membership IN ('join', 'invite') GROUP BY membership`,
      [roomNid],
    );
    const counts = Object.fromEntries(r.rows.map((x: { membership: string; n: number }) => [x.membership, x.n]));
    const heroes = await this.store.db.raw(
      `SELECT user_id FROM room_memberships WHERE room_nid = ? AND user_id <> ? AND membership IN ('join', 'invite')
       ORDER BY stream_pos LIMIT 5`,
      [roomNid, userId],
    );
    return {
      'm.heroes': heroes.rows.map((x: { user_id: string }) => x.user_id),
      'm.joined_member_count': counts.join ?? 0,
      'm.invited_member_count': counts.invite ?? 0,
    };
  }

  private async strippedState(m: MembershipRow): Promise<Array<Record<string, unknown>>> {
    const rows = await this.store.currentStateFor(this.store.db, Number(m.room_nid), STRIPPED_TYPES.map((t) => [t, '']));
    const own = await this.store.eventsByNid([Number(m.event_nid)]);
    const stripped = rows.map((r) => {
      const pdu = JSON.parse(r.json);
      return { type: r.type, state_key: r.state_key, content: pdu.content, sender: pdu.sender };
    });
    for (const o of own) {
      const pdu = JSON.parse(o.json);
      stripped.push({ type: o.type, state_key: o.state_key!, content: pdu.content, sender: o.sender, event_id: o.event_id, origin_server_ts: Number(o.origin_server_ts) } as never);
    }
    return stripped;
  }
}

/** A room's timeline and state, as rows until formatted, then as client events. */
interface RawSection {
  [key: string]: unknown;
  timeline: { events: EventRow[] | ClientEvent[]; limited: boolean; prev_batch: string };
  state: { events: EventRow[] | ClientEvent[] };
  summary?: Record<string, unknown>;
}

function emptyResponse(to: number): Record<string, unknown> {
  return {
    next_batch: posToken(to),
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: [] },
    rooms: { join: {}, invite: {}, knock: {}, leave: {} },
  };
}

function isEmpty(res: Record<string, unknown>): boolean {
  const rooms = res.rooms as Record<string, Record<string, unknown>>;
  const ad = res.account_data as { events: Bindings };
  return ad.events.length === 0 && Object.values(rooms).every((section) => Object.keys(section).length === 0);
}
