import { MatrixError } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import type { ClientEvent, EventRow, RoomReader, SearchHit, SearchQuery } from '../rooms/reader.ts';
import { roomAllowed, type RoomEventFilter } from '../rooms/filter.ts';
import { posToken } from '../storage/stream-token.ts';
import { highlightsIn, parseSearchTerm } from './query.ts';

/** A room the searcher may search, and the last stream position persisted when the search began. */
interface SearchRoom {
  room_nid: number;
  room_id: string;
  membership: string;
  stream_pos: number;
  ceiling: number;
}

export const SEARCH_KEYS = ['content.body', 'content.name', 'content.topic'] as const;

export interface RoomEventsCriteria {
  search_term: string;
  keys?: string[];
  filter?: RoomEventFilter;
  order_by?: 'rank' | 'recent';
  event_context?: { before_limit?: number; after_limit?: number; include_profile?: boolean };
  include_state?: boolean;
  groupings?: { group_by?: Array<{ key: 'room_id' | 'sender' }> };
}

const DEFAULT_LIMIT = 10;
const MAX_LIMIT = 1000;
const MAX_CONTEXT = 100;
/** Matches looked at to count what the user may see. */
const COUNT_SCANNED = 1000;
/** Hops followed back through room upgrades when a filter names rooms. */
const MAX_PREDECESSORS = 10;

/** Where a search continues: which group ("all" or one room) and the last match returned. */
interface Batch {
  group: 'all' | 'room_id';
  groupKey: string;
  after: Cursor;
}

/** The last match of a page: its rank (rank ordering) and stream position. */
interface Cursor {
  rank?: number;
  pos: number;
}

export function encodeBatch(group: 'all' | 'room_id', groupKey: string, c: Cursor): string {
  const at = c.rank !== undefined ? `r${c.rank}:${c.pos}` : `s${c.pos}`;
  return Buffer.from(`${group}\n${groupKey}\n${at}`, 'utf8').toString('base64url');
}

export function decodeBatch(raw: string): Batch {
  const parts = Buffer.from(raw, 'base64url').toString('utf8').split('\n');
  const [group, groupKey, at] = parts;
  const m = /^(?:r(-?[0-9.e+-]+):|s)(\d+)$/.exec(at ?? '');
  const rank = m?.[1] !== undefined ? Number(m[1]) : undefined;
  if (parts.length !== 3 || (group !== 'all' && group !== 'room_id') || !m || (rank !== undefined && !Number.isFinite(rank))) {
    throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid next_batch');
  }
  return { group, groupKey: groupKey!, after: { rank, pos: Number(m[2]) } };
}

/** Server-side search (POST /search), room_events category, as Synapse answers it. */
export class SearchService {
  constructor(private reader: RoomReader, private current: () => number) {}

  async search(me: Requester, criteria: RoomEventsCriteria | undefined, nextBatch: string | undefined): Promise<Record<string, unknown>> {
    if (!criteria) return { search_categories: {} };
    const batch = nextBatch !== undefined ? decodeBatch(nextBatch) : undefined;
    const filter = criteria.filter ?? {};
    const limit = Math.min(Math.max(filter.limit ?? DEFAULT_LIMIT, 0), MAX_LIMIT);
    const orderBy = criteria.order_by ?? 'rank';
    const keys = criteria.keys ?? [...SEARCH_KEYS];
    const groupKeys = new Set((criteria.groupings?.group_by ?? []).map((g) => g.key));
    const parsed = parseSearchTerm(criteria.search_term);

    const rooms = await this.searchableRooms(me.userId, filter, batch);
    const empty = { results: [], count: 0, highlights: [] };
    if (!parsed.tsquery || !rooms.length || limit === 0 || !keys.length) return { search_categories: { room_events: empty } };

    const q: SearchQuery = { rooms, tsquery: parsed.tsquery, keys, filter };
    const byNid = new Map(rooms.map((r) => [r.room_nid, r]));
    if (batch && (batch.after.rank !== undefined) !== (orderBy === 'rank')) throw new MatrixError(400, 'M_INVALID_PARAM', 'next_batch belongs to another ordering');
    const { rows, more, last } = await this.collect(me.userId, q, byNid, orderBy, batch?.after, limit);
    const count = await this.countVisible(me.userId, q, byNid);

    const rankOf = new Map(rows.map((x) => [x.row.event_nid, x.rank]));
    const events = rows.map((x) => x.row);
    const formatted = await this.reader.format(events, { userId: me.userId, deviceId: me.deviceId, aggregations: true });
    const highlights = new Set<string>();
    for (const e of events) {
      const c = JSON.parse(e.json).content ?? {};
      for (const k of keys) {
        const text = c[k.slice('content.'.length)];
        if (typeof text === 'string') for (const h of highlightsIn(text, parsed)) highlights.add(h);
      }
    }

    const contexts = criteria.event_context ? await this.contexts(me, events, filter, byNid, criteria.event_context) : undefined;
    const results = formatted.map((ev, i) => {
      const res: Record<string, unknown> = { rank: rankOf.get(events[i]!.event_nid), result: ev };
      if (contexts) res.context = contexts[i];
      return res;
    });
    const out: Record<string, unknown> = { results, count, highlights: [...highlights] };

    if (more && last) {
      // A token from inside a group keeps paging inside that group.
      out.next_batch = batch?.group === 'room_id' ? encodeBatch('room_id', batch.groupKey, last) : encodeBatch('all', '', last);
    }
    if (groupKeys.size) {
      const groups: Record<string, Record<string, Record<string, unknown>>> = {};
      if (groupKeys.has('room_id')) {
        const g: Record<string, { results: string[]; order: number; next_batch?: string }> = {};
        for (const e of events) {
          const entry = (g[e.room_id] ??= { results: [], order: 0 });
          entry.results.push(e.event_id);
          if (more && last) entry.next_batch = encodeBatch('room_id', e.room_id, last);
        }
        groups.room_id = orderGroups(g);
      }
      if (groupKeys.has('sender')) {
        const g: Record<string, { results: string[]; order: number }> = {};
        for (const e of events) (g[e.sender] ??= { results: [], order: 0 }).results.push(e.event_id);
        groups.sender = orderGroups(g);
      }
      out.groups = groups;
    }
    if (criteria.include_state) {
      const state: Record<string, ClientEvent[]> = {};
      for (const roomId of new Set(events.map((e) => e.room_id))) {
        // A user who never joined may see some events (`invited` history) but not the room's state.
        const rows = await this.reader.state(me, roomId).catch((err: unknown) => {
          if (err instanceof MatrixError && err.status === 403) return undefined;
          throw err;
        });
        if (rows) state[roomId] = rows;
      }
      out.state = state;
    }
    return { search_categories: { room_events: out } };
  }

  /** The user's rooms narrowed by the filter (plus the rooms those were upgraded from) and the batch's group. */
  private async searchableRooms(userId: string, filter: RoomEventFilter, batch: Batch | undefined): Promise<SearchRoom[]> {
    let wanted: { rooms?: string[]; not_rooms?: string[] } = filter;
    if (filter.rooms) {
      const all = new Set(filter.rooms);
      for (const roomId of filter.rooms) {
        let cur: string | undefined = roomId;
        for (let i = 0; i < MAX_PREDECESSORS && cur; i++) {
          cur = await this.reader.predecessor(cur);
          if (cur) all.add(cur);
        }
      }
      wanted = { rooms: [...all], not_rooms: filter.not_rooms };
    }
    // Rooms the user is in, or was in (up to leaving), not forgotten. History visibility decides
    // event by event (a user who left still sees world_readable events), so each goes up to now.
    const ceiling = this.current();
    const mine = await this.reader.roomsWithMembership(userId, ['join', 'leave', 'ban'], false);
    let rooms: SearchRoom[] = mine.filter((r) => roomAllowed(wanted, r.room_id)).map((r) => ({ ...r, ceiling }));
    if (batch?.group === 'room_id') rooms = rooms.filter((r) => r.room_id === batch.groupKey);
    return rooms;
  }

  /**
   * Walks the matches in order, keeping those the user may see (history visibility), until
   * `limit` are kept. Returns the last match walked and whether more may follow.
   */
  private async collect(userId: string, q: SearchQuery, rooms: Map<number, SearchRoom>, orderBy: 'rank' | 'recent', from: Cursor | undefined, limit: number): Promise<{ rows: Array<{ row: EventRow; rank: number }>; more: boolean; last: Cursor | undefined }> {
    const kept: Array<{ row: EventRow; rank: number }> = [];
    const batchSize = Math.min(Math.max(limit * 2, 20), 500);
    let last = from;
    for (let round = 0; round < 10; round++) {
      const hits: SearchHit[] = orderBy === 'rank'
        ? await this.reader.searchByRank(q, last as { rank: number; pos: number } | undefined, batchSize)
        : await this.reader.searchByRecent(q, last?.pos, batchSize);
      const visible = await this.visible(userId, hits, rooms);
      for (let i = 0; i < hits.length; i++) {
        const h = hits[i]!;
        last = orderBy === 'rank' ? { rank: h.rank, pos: h.stream_pos } : { pos: h.stream_pos };
        const row = visible.get(h.event_nid);
        if (row) kept.push({ row, rank: h.rank });
        if (kept.length === limit) return { rows: kept, more: i < hits.length - 1 || hits.length === batchSize, last };
      }
      if (hits.length < batchSize) return { rows: kept, more: false, last };
    }
    return { rows: kept, more: true, last };
  }

  /**
   * `count` (the spec: an approximate count) counts only matches the user may see: the newest
   * COUNT_SCANNED matches go through the same visibility decision as the results, so it never
   * reveals history the user cannot read.
   */
  private async countVisible(userId: string, q: SearchQuery, rooms: Map<number, SearchRoom>): Promise<number> {
    const hits = await this.reader.searchByRecent(q, undefined, COUNT_SCANNED);
    return (await this.visible(userId, hits, rooms)).size;
  }

  private async visible(userId: string, hits: SearchHit[], rooms: Map<number, SearchRoom>): Promise<Map<number, EventRow>> {
    const rows = await this.reader.eventsByNid(hits.map((h) => h.event_nid));
    const byRoom = new Map<number, EventRow[]>();
    for (const row of rows) {
      const list = byRoom.get(Number(row.room_nid)) ?? [];
      list.push(row);
      byRoom.set(Number(row.room_nid), list);
    }
    const out = new Map<number, EventRow>();
    for (const [roomNid, list] of byRoom) {
      const room = rooms.get(roomNid)!;
      for (const row of await this.reader.visibility.filter(list, userId, room)) out.set(Number(row.event_nid), row);
    }
    return out;
  }

  private async contexts(me: Requester, events: EventRow[], filter: RoomEventFilter, rooms: Map<number, SearchRoom>, opts: NonNullable<RoomEventsCriteria['event_context']>): Promise<Array<Record<string, unknown>>> {
    const before = Math.min(opts.before_limit ?? 5, MAX_CONTEXT);
    const after = Math.min(opts.after_limit ?? 5, MAX_CONTEXT);
    const fmt = (rows: EventRow[]) => this.reader.format(rows, { userId: me.userId, deviceId: me.deviceId, aggregations: true });
    const out: Array<Record<string, unknown>> = [];
    for (const ev of events) {
      const room = rooms.get(Number(ev.room_nid))!;
      const pos = Number(ev.stream_pos);
      const [b, a] = await Promise.all([
        before ? this.reader.eventsBetween(room.room_nid, pos - 1, undefined, 'b', before, filter) : [],
        after ? this.reader.eventsBetween(room.room_nid, pos, room.ceiling, 'f', after, filter) : [],
      ]);
      const [vb, va] = await Promise.all([
        this.reader.visibility.filter(b, me.userId, room),
        this.reader.visibility.filter(a, me.userId, room),
      ]);
      const ctx: Record<string, unknown> = {
        start: posToken(b.length ? Number(b[b.length - 1]!.stream_pos) - 1 : pos - 1),
        end: posToken(a.length ? Number(a[a.length - 1]!.stream_pos) : pos),
        events_before: await fmt(vb),
        events_after: await fmt(va),
      };
      if (opts.include_profile) ctx.profile_info = await this.profiles([...vb, ev, ...va], va.length ? va[va.length - 1]! : ev);
      out.push(ctx);
    }
    return out;
  }

  /** The senders' display names and avatars as they were at `at` (historic profiles). */
  private async profiles(events: EventRow[], at: EventRow): Promise<Record<string, { displayname?: string; avatar_url?: string }>> {
    const senders = [...new Set(events.map((e) => e.sender))];
    const rows = await this.reader.stateAt(Number(at.state_after), senders.map((s) => ['m.room.member', s]));
    const out: Record<string, { displayname?: string; avatar_url?: string }> = {};
    for (const ev of await this.reader.format(rows)) {
      const p: { displayname?: string; avatar_url?: string } = {};
      if (typeof ev.content.displayname === 'string') p.displayname = ev.content.displayname;
      if (typeof ev.content.avatar_url === 'string') p.avatar_url = ev.content.avatar_url;
      out[ev.state_key as string] = p;
    }
    return out;
  }
}

/** The spec's group `order` is an integer: groups come in result order, so the first gets the highest. */
function orderGroups<G extends { order: number }>(groups: Record<string, G>): Record<string, G> {
  const keys = Object.keys(groups);
  keys.forEach((key, i) => { groups[key]!.order = keys.length - i; });
  return groups;
}
