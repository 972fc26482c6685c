import { LruCache } from '../cache/lru.ts';
import type { Bindings } from '../storage/db.ts';
import type { Requester } from '../http/context.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { AccountDataService } from '../accountdata/service.ts';
import type { ClientEvent, EventRow, MembershipRow, RoomReader } from '../rooms/reader.ts';
import { roomAllowed, type RoomEventFilter } from '../rooms/filter.ts';
import { STREAMS, formatSyncToken, posToken, type SyncToken } from '../storage/stream-token.ts';
import type { SyncFilter } from './filter.ts';
import type { SyncPart, SyncPartOutput } from './parts.ts';

/** Users whose memberships /sync keeps in memory (the most recently syncing ones). */
const MEMBERSHIP_CACHE_USERS = 100_000;

export interface SyncRequest {
  since?: SyncToken;
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
    private rooms: RoomReader,
    private accountData: AccountDataService,
    private tracker: StreamTracker,
    private notifier: Notifier,
    private parts: SyncPart[] = [],
  ) {}

  /** Adds a stream or field of /sync (composition root only, before serving). */
  addPart(part: SyncPart): void {
    this.parts.push(part);
  }

  /** Up to where every stream is readable now. */
  current(): SyncToken {
    const events = this.tracker.current();
    const out = { events, accountData: events } as SyncToken;
    for (const s of STREAMS) out[s] ??= 0;
    for (const p of this.parts) if (p.stream && p.current) out[p.stream] = p.current();
    return out;
  }

  private membershipCache = new LruCache<string, MembershipRow[]>(MEMBERSHIP_CACHE_USERS);
  private membershipVersion = new LruCache<string, number>(MEMBERSHIP_CACHE_USERS);

  async sync(me: Requester, req: SyncRequest, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const deadline = Date.now() + req.timeoutMs;
    let since = req.since;
    // A token made by a worker further ahead: wait (bounded) until this one has caught up, so a
    // client moving between workers never reads backwards.
    if (since && since.events > this.tracker.current()) await this.tracker.untilReadable(since.events, 2_000);
    if (since) for (const p of this.parts) if (p.acknowledge) await p.acknowledge(me, since);
    for (;;) {
      const to = this.current();
      // A token from before a restart may be ahead in a stream kept in memory: never go backwards.
      if (since) for (const s of STREAMS) if (since[s] > to[s] && s !== 'events' && s !== 'accountData') to[s] = since[s];
      const keys = this.waitKeys(me, await this.memberships(me.userId));
      // The notifier knows when nothing happened for this user: then there is nothing to read.
      const quiet = since !== undefined && !req.fullState && STREAMS.every((s) => this.notifier.changedSince(s, keys, since![s]) === false);
      const res = quiet ? emptyResponse(to) : await this.compute(me, { ...req, since }, to);
      const remaining = deadline - Date.now();
      if (since === undefined || req.fullState || !isEmpty(res) || remaining <= 0 || signal?.aborted) return res;
      // Nothing new: wait on the user and each of their rooms, from the positions we read up to.
      const woken = await this.notifier.wait(keys, to, remaining, signal);
      if (!woken) return res;
      since = to;
    }
  }

  /** What a long-poll of this user waits on: its rooms, its user id, and what the parts add. */
  private waitKeys(me: Requester, memberships: MembershipRow[]): string[] {
    const keys = [me.userId, ...memberships.map((m) => m.room_id)];
    for (const p of this.parts) if (p.waitKeys) keys.push(...p.waitKeys(me));
    return keys;
  }

  /** A user's memberships, cached until a member event about them is persisted. */
  async memberships(userId: string): Promise<MembershipRow[]> {
    const hit = this.membershipCache.get(userId);
    if (hit) return hit;
    const version = this.membershipVersion.get(userId) ?? 0;
    const rows = await this.rooms.memberships(userId);
    // A membership written while we read must not be hidden by what we read before it.
    if ((this.membershipVersion.get(userId) ?? 0) === version) {
      this.membershipCache.set(userId, rows);
    }
    return rows;
  }

  /** Called when a member event about `userId` is persisted (or the room is forgotten). */
  membershipChanged(userId: string): void {
    this.membershipCache.delete(userId);
    this.membershipVersion.set(userId, (this.membershipVersion.get(userId) ?? 0) + 1);
  }

  /** Any user's memberships may have changed (cross-worker invalidations were missed while Redis was away). */
  allMembershipsChanged(): void {
    for (const [userId] of [...this.membershipCache.entries()]) this.membershipChanged(userId);
  }

  private async compute(me: Requester, req: SyncRequest, toToken: SyncToken): Promise<Record<string, unknown>> {
    const sinceToken = req.since;
    const since = sinceToken?.events;
    const to = toToken.events;
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
    const adSince = sinceToken?.accountData;
    const adChanged = req.fullState || adSince === undefined || this.notifier.changedSince('accountData', [me.userId], adSince) !== false;
    for (const row of adChanged ? await this.accountData.changed(me.userId, req.fullState ? undefined : adSince, toToken.accountData) : []) {
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
    let joinedBefore = new Set<number>();
    if (since !== undefined && !req.fullState) {
      const known = joined.map((m) => [m, this.notifier.changedSince('events', [m.room_id], since)] as const);
      if (known.every(([, changed]) => changed !== undefined)) {
        active = new Set(known.filter(([, changed]) => changed).map(([m]) => Number(m.room_nid)));
      } else {
        active = await this.rooms.roomsWithEvents([...active], since, to);
      }
      // A membership that moved since `since` is a new join only if the user was not joined then
      // (a profile change moves it too, and must not send the room's whole state again).
      const moved = joined.filter((m) => Number(m.stream_pos) > since);
      joinedBefore = await this.rooms.joinedAt(moved.map((m) => Number(m.event_nid)), since);
    }

    // What the other streams add (typing, receipts, presence, counts, …), read alongside.
    const partsRead = Promise.all(this.parts.map((p) => p.read({
      me, since: sinceToken, to: toToken, fullState: req.fullState, filter: req.filter, joinedRoomIds: joined.map((m) => m.room_id),
    })));

    // The rooms of this sync, their timelines read together, then each room's visibility and state.
    const plans: RoomPlan[] = [];
    for (const m of joined) {
      const nid = Number(m.room_nid);
      const newlyJoined = since === undefined || req.fullState || (Number(m.stream_pos) > since && !joinedBefore.has(nid));
      const ad = roomAccountData.get(m.room_id);
      if (!newlyJoined && !active.has(nid) && !ad) continue;
      plans.push({ m, full: newlyJoined, upper: to, lower: timelineLower(newlyJoined, since, m) });
    }
    const joinedSections = await this.roomSections(me, plans, since, limit, timelineFilter, lazy, roomFilter.state, sections);
    const outputs = await partsRead;
    const ephemeral = new Map<string, ClientEvent[]>();
    for (const o of outputs) for (const [roomId, events] of o.ephemeral ?? []) if (events.length) ephemeral.set(roomId, [...(ephemeral.get(roomId) ?? []), ...events]);
    const planned = new Set(plans.map((p) => p.m.room_id));
    for (const m of joined) if (!planned.has(m.room_id) && ephemeral.has(m.room_id)) plans.push({ m, full: false, upper: to, lower: since, quiet: true });
    plans.forEach((plan, i) => {
      const m = plan.m;
      const room = plan.quiet ? undefined : joinedSections[i];
      const ad = roomAccountData.get(m.room_id);
      const eph = ephemeral.get(m.room_id);
      if (!room && !ad && !eph) return;
      join[m.room_id] = {
        ...(room ?? { timeline: { events: [], limited: false, prev_batch: posToken(to) }, state: { events: [] } }),
        summary: room?.summary ?? {},
        account_data: { events: ad ?? [] },
        ephemeral: { events: eph ?? [] },
      };
    });
    for (const o of outputs) for (const [roomId, fields] of o.roomFields ?? []) if (join[roomId]) Object.assign(join[roomId] as object, fields);

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
        const plan: RoomPlan = { m, full: since === undefined, upper: Number(m.stream_pos), lower: timelineLower(since === undefined, since, m) };
        const [room] = await this.roomSections(me, [plan], since, limit, timelineFilter, lazy, roomFilter.state, sections);
        // A left room has no summary (spec: LeftRoom); its heroes would name members to users who never joined.
        if (room) delete room.summary;
        leave[m.room_id] = { ...(room ?? { timeline: { events: [], limited: false }, state: { events: [] } }), account_data: { events: roomAccountData.get(m.room_id) ?? [] } };
      }
    }

    const opts = { userId: me.userId, deviceId: me.deviceId, omitRoomId: true };
    // Formatting's lookups are shared with the other syncs reading up to the same position.
    const [timelines, states] = await Promise.all([
      this.rooms.formatAt(sections.flatMap((s) => s.timeline.events as EventRow[]), { ...opts, aggregations: true }, to),
      this.rooms.formatAt(sections.flatMap((s) => s.state.events as EventRow[]), opts, to),
    ]);
    let t = 0;
    let st = 0;
    for (const s of sections) {
      s.timeline.events = timelines.slice(t, (t += s.timeline.events.length));
      s.state.events = states.slice(st, (st += s.state.events.length));
    }

    // A part that paged (to-device) delivered its stream only up to where its page ends.
    const next = { ...toToken };
    outputs.forEach((o, i) => { const s = this.parts[i]!.stream; if (s && o.upTo !== undefined && o.upTo < next[s]) next[s] = o.upTo; });
    const res: Record<string, unknown> = {
      next_batch: formatSyncToken(next),
      account_data: { events: globalAccountData },
      presence: { events: [] },
      to_device: { events: [] },
      rooms: { join, invite, knock, leave },
    };
    mergeTop(res, outputs);
    if (outputs.some((o) => o.news)) newsOf.add(res);
    return res;
  }

  /**
   * Timeline and state of each planned room; undefined for a room with nothing new. The timelines
   * and summaries of all the rooms are read together; visibility and state per room, a few rooms
   * at a time.
   */
  private async roomSections(
    me: Requester,
    plans: RoomPlan[],
    since: number | undefined,
    limit: number,
    timelineFilter: RoomEventFilter,
    lazy: boolean,
    stateFilter: RoomEventFilter | undefined,
    sections: RawSection[],
  ): Promise<Array<RawSection | undefined>> {
    // One more than the limit tells whether the timeline was cut.
    const timelines = await this.rooms.timelines(plans.map((p) => ({ roomNid: Number(p.m.room_nid), lower: p.lower, upper: p.upper })), limit + 1, timelineFilter);
    // The state snapshots the rooms will read (at each timeline's start), read together.
    const wanted: Array<{ roomNid: number; group: number; upper: number }> = [];
    for (const p of plans) {
      const rows = timelines.get(Number(p.m.room_nid)) ?? [];
      const first = rows.slice(0, limit).at(-1);
      if (first && (p.full || lazy)) wanted.push({ roomNid: Number(p.m.room_nid), group: Number(first.state_before), upper: p.upper });
    }
    this.rooms.prefetchState(wanted);
    const out = new Array<RawSection | undefined>(plans.length);
    await eachLimited(plans.length, ROOMS_AT_ONCE, async (i) => {
      const plan = plans[i]!;
      out[i] = await this.roomSection(me, plan, timelines.get(Number(plan.m.room_nid)) ?? [], since, limit, lazy, stateFilter);
    });
    const needSummary = plans.filter((_, i) => out[i]?.needsSummary).map((p) => Number(p.m.room_nid));
    const summaries = await this.rooms.summaries(needSummary, me.userId);
    plans.forEach((plan, i) => {
      const section = out[i];
      if (!section) return;
      const s = section.needsSummary ? summaries.get(Number(plan.m.room_nid)) : undefined;
      delete section.needsSummary;
      if (s) section.summary = { 'm.heroes': s.heroes, 'm.joined_member_count': s.joined, 'm.invited_member_count': s.invited };
      // Rows for now: compute() formats the rows of every room together, with one set of lookups.
      sections.push(section);
    });
    return out;
  }

  /** Timeline and state of one room for this sync; undefined when nothing is new in it. */
  private async roomSection(
    me: Requester,
    plan: RoomPlan,
    rows: EventRow[],
    since: number | undefined,
    limit: number,
    lazy: boolean,
    stateFilter: RoomEventFilter | undefined,
  ): Promise<RawSection | undefined> {
    const { m, full } = plan;
    const roomNid = Number(m.room_nid);
    const limited = rows.length > limit;
    const page = rows.slice(0, limit).reverse();
    const current = { membership: m.membership, stream_pos: Number(m.stream_pos) };
    const visible = await this.rooms.visibility.filter(page, me.userId, current);
    if (!full && visible.length === 0) return undefined;

    const first = page[0];
    let stateRows: EventRow[] = [];
    const lazyMembers = lazy ? [...new Set([...visible.map((e) => e.sender), me.userId])] : undefined;
    if (full) {
      // The state at the start of the timeline; the timeline carries what changes after it.
      const group = first ? Number(first.state_before) : await this.rooms.stateGroupAt(roomNid, plan.upper);
      if (group !== undefined) stateRows = await this.rooms.stateForSync(roomNid, group, plan.upper, { members: lazyMembers, filter: stateFilter });
    } else if (limited && first) {
      // The gap between `since` and the timeline: the state that changed in it.
      stateRows = await this.rooms.stateChanges(roomNid, since ?? 0, Number(first.stream_pos), stateFilter);
      if (lazyMembers) {
        const have = new Set(stateRows.filter((s) => s.type === 'm.room.member').map((s) => s.state_key));
        const extra = await this.rooms.stateForSync(roomNid, Number(first.state_before), plan.upper, { pairs: lazyMembers.filter((u) => !have.has(u)).map((u) => ['m.room.member', u]) });
        stateRows.push(...extra);
        stateRows = stateRows.filter((s) => s.type !== 'm.room.member' || lazyMembers.includes(s.state_key!));
      }
    } else if (lazyMembers && first) {
      // Lazy loading: the members of the timeline's senders, at the timeline's start.
      stateRows = await this.rooms.stateForSync(roomNid, Number(first.state_before), plan.upper, { pairs: lazyMembers.map((u) => ['m.room.member', u]) });
    }
    stateRows = await this.rooms.visibility.filterState(stateRows, me.userId, roomNid, current);
    const timelineIds = new Set(visible.map((e) => e.event_id));
    stateRows = stateRows.filter((s) => !timelineIds.has(s.event_id));

    return {
      timeline: { events: visible, limited, prev_batch: posToken(first ? Number(first.stream_pos) - 1 : plan.upper) },
      state: { events: stateRows },
      needsSummary: full || visible.some((e) => e.type === 'm.room.member') || stateRows.some((e) => e.type === 'm.room.member'),
    };
  }

  private async strippedState(m: MembershipRow): Promise<Array<Record<string, unknown>>> {
    const rows = await this.rooms.currentStateFor(Number(m.room_nid), STRIPPED_TYPES.map((t) => [t, '']));
    const own = await this.rooms.eventsByNid([Number(m.event_nid)]);
    const stripped = rows.map((r) => {
      const pdu = JSON.parse(r.json);
      return { type: r.type, state_key: r.state_key, content: pdu.content, sender: pdu.sender };
    });
    for (const o of own) {
      const pdu = JSON.parse(o.json);
      // issue 11: an invite or knock of a room this server is not in carries the room's stripped state from its server.
      const remote = pdu.unsigned?.invite_room_state ?? pdu.unsigned?.knock_room_state;
      if (!rows.length && Array.isArray(remote)) {
        for (const e of remote) if (e && typeof e === 'object' && typeof e.type === 'string' && !(e.type === o.type && e.state_key === o.state_key)) stripped.push({ type: e.type, state_key: e.state_key, content: e.content, sender: e.sender });
      }
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
  /** Until summaries are read: whether this room's section carries one. */
  needsSummary?: boolean;
}

/** A room this sync reads: its membership, whether it sends the full state, its timeline window. */
interface RoomPlan {
  m: MembershipRow;
  /** In the response for what the parts add only (no timeline read). */
  quiet?: boolean;
  full: boolean;
  lower: number | undefined;
  upper: number;
}

/** Rooms whose visibility and state are worked out at once (their lookups are batched per turn; state comes from the cache). */
const ROOMS_AT_ONCE = 32;

/** full_state on an incremental sync sends all the state, but the timeline still starts at `since`. */
function timelineLower(full: boolean, since: number | undefined, m: MembershipRow): number | undefined {
  return full && (since === undefined || Number(m.stream_pos) > since) ? undefined : since;
}

/** Runs `fn` for 0..n-1, at most `concurrency` at a time. */
async function eachLimited(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) await fn(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

/** Responses that carry something a part calls news (a top-level event list a client must see). */
const newsOf = new WeakSet<object>();

/** Merges the parts' top-level sections: lists of events are concatenated, objects merged. */
function mergeTop(res: Record<string, unknown>, outputs: SyncPartOutput[]): void {
  for (const o of outputs) {
    for (const [key, value] of Object.entries(o.top ?? {})) {
      const have = res[key] as Record<string, unknown> | undefined;
      const v = value as Record<string, unknown>;
      if (have && Array.isArray(have.events) && Array.isArray(v.events)) have.events = [...have.events, ...v.events];
      else if (have && typeof have === 'object' && typeof v === 'object') res[key] = { ...have, ...v };
      else res[key] = value;
    }
  }
}

function emptyResponse(to: SyncToken): Record<string, unknown> {
  return {
    next_batch: formatSyncToken(to),
    account_data: { events: [] },
    presence: { events: [] },
    to_device: { events: [] },
    rooms: { join: {}, invite: {}, knock: {}, leave: {} },
  };
}

function isEmpty(res: Record<string, unknown>): boolean {
  if (newsOf.has(res)) return false;
  const rooms = res.rooms as Record<string, Record<string, unknown>>;
  const ad = res.account_data as { events: Bindings };
  return ad.events.length === 0 && Object.values(rooms).every((section) => Object.keys(section).length === 0);
}
