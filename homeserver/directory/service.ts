import { MatrixError, notFound } from '../http/errors.ts';
import { isValidServerName } from '../protocol/identifiers.ts';
import type { RoomService } from '../rooms/service.ts';
import type { DirectoryBound, RoomReader, RoomStats } from '../rooms/reader.ts';

export interface PublicRoomsQuery {
  limit?: number;
  since?: string;
  server?: string;
  filter?: { generic_search_term?: string; room_types?: Array<string | null> };
  include_all_networks?: boolean;
  third_party_instance_id?: string;
}

/** Where a page of the directory starts: just after (forward) or before (backward) this room. */
interface Bound extends DirectoryBound {
  forward: boolean;
}

export function encodeSince(b: Bound): string {
  return Buffer.from(JSON.stringify([b.members, b.roomId, b.forward ? 1 : 0])).toString('base64url');
}

export function decodeSince(raw: string): Bound {
  try {
    const [members, roomId, forward] = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as unknown[];
    if (Number.isSafeInteger(members) && typeof roomId === 'string' && (forward === 0 || forward === 1)) {
      return { members: members as number, roomId, forward: forward === 1 };
    }
  } catch {
    // fall through
  }
  throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid since token');
}

/** A page is never larger than this, whatever the client asks. */
const MAX_LIMIT = 10_000;

/** Rooms whose details anyone may see in the directory, as Synapse lists them. */
const LISTABLE_JOIN_RULES = new Set(['public', 'knock', 'knock_restricted']);

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The plain-text topic: the text/plain representation in `m.topic`, else `topic`. */
export function plainTopic(content: Record<string, unknown> | undefined): string | undefined {
  if (!content) return undefined;
  const blocks = (content['m.topic'] as { 'm.text'?: unknown } | undefined)?.['m.text'];
  if (Array.isArray(blocks)) {
    for (const b of blocks) {
      if (b && typeof b === 'object' && typeof b.body === 'string' && (b.mimetype === undefined || b.mimetype === 'text/plain')) return b.body;
    }
  }
  return str(content.topic);
}

/** The published room directory entry (PublishedRoomsChunk) of a room; absent fields are omitted. */
export function roomEntry(s: RoomStats): Record<string, unknown> {
  const c = (type: string) => s.state.get(type);
  const e: Record<string, unknown> = { room_id: s.room_id };
  const name = str(c('m.room.name')?.name);
  if (name) e.name = name;
  const topic = plainTopic(c('m.room.topic'));
  if (topic !== undefined) e.topic = topic;
  const alias = str(c('m.room.canonical_alias')?.alias);
  if (alias) e.canonical_alias = alias;
  e.num_joined_members = s.joined_members;
  const avatar = str(c('m.room.avatar')?.url);
  if (avatar) e.avatar_url = avatar;
  e.world_readable = c('m.room.history_visibility')?.history_visibility === 'world_readable';
  e.guest_can_join = c('m.room.guest_access')?.guest_access === 'can_join';
  const joinRule = str(c('m.room.join_rules')?.join_rule);
  if (joinRule) e.join_rule = joinRule;
  const type = str(c('m.room.create')?.type);
  if (type) e.room_type = type;
  return e;
}

/** The published room directory (/publicRooms) and room summaries (/room_summary). */
export class DirectoryService {
  /** issue 11: another server's directory, asked over federation (set when federation runs). */
  remote: ((server: string, q: Omit<PublicRoomsQuery, 'server'>) => Promise<Record<string, unknown>>) | undefined;

  constructor(private reader: RoomReader, private rooms: RoomService, private serverName: string) {}

  async publicRooms(q: PublicRoomsQuery): Promise<Record<string, unknown>> {
    if (q.server !== undefined && q.server !== this.serverName) {
      if (!isValidServerName(q.server)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid server name ${q.server}`);
      if (!this.remote) throw new MatrixError(502, 'M_UNKNOWN', 'Failed to fetch room list');
      const { server, ...rest } = q;
      return this.remote(server, rest);
    }
    if (q.limit !== undefined && q.limit < 0) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must not be negative');
    let bridgedOnly = false;
    if (q.third_party_instance_id !== undefined) {
      if (q.include_all_networks) throw new MatrixError(400, 'M_INVALID_PARAM', "Can't use include_all_networks with an explicit network");
      if (q.third_party_instance_id.split('|').length !== 2) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ID ${q.third_party_instance_id}`);
      // A bridged network's rooms: no application service publishes any here.
      bridgedOnly = true;
    }
    const since = q.since !== undefined ? decodeSince(q.since) : undefined;
    const limit = q.limit ? Math.min(q.limit, MAX_LIMIT) : undefined; // 0 means no limit, as in Synapse

    const term = q.filter?.generic_search_term?.toLowerCase();
    if (term?.includes('\0')) throw new MatrixError(400, 'M_INVALID_PARAM', 'generic_search_term may not contain NUL');
    const forward = since?.forward ?? true;
    // Ordered, filtered and cut by PostgreSQL; one more than asked tells whether more follow.
    const page = bridgedOnly
      ? { rooms: [], total: 0 }
      : await this.reader.publishedPage({
        after: since && forward ? since : undefined,
        before: since && !forward ? since : undefined,
        limit: limit === undefined ? undefined : limit + 1,
        term: term || undefined,
        roomTypes: q.filter?.room_types?.length ? q.filter.room_types : undefined,
      });
    const moreToCome = limit !== undefined && page.rooms.length > limit;
    const shown = !moreToCome ? page.rooms : forward ? page.rooms.slice(0, limit) : page.rooms.slice(page.rooms.length - limit!);
    const chunk = (await this.reader.roomStatsOf(shown.map((r) => r.room_id))).map(roomEntry);
    const total = page.total;
    // Tokens carry the position each room had in the order the page was cut in.
    const key = (r: { room_id: string; joined_members: number }) => ({ members: r.joined_members, roomId: r.room_id });

    const out: Record<string, unknown> = { chunk };
    if (shown.length) {
      const first = key(shown[0]!);
      const last = key(shown[shown.length - 1]!);
      const next = encodeSince({ ...last, forward: true });
      const prev = encodeSince({ ...first, forward: false });
      if (forward) {
        if (since) out.prev_batch = prev;
        if (moreToCome) out.next_batch = next;
      } else {
        if (since) out.next_batch = next;
        if (moreToCome) out.prev_batch = prev;
      }
    }
    out.total_room_count_estimate = total;
    return out;
  }

  /**
   * A room's summary for a user (or for anyone, unauthenticated): rooms anyone may join or knock
   * on, world-readable rooms, and rooms the user is joined or invited to, or may join through a
   * restricted join rule. Anything else looks like no room at all.
   */
  async summary(userId: string | undefined, idOrAlias: string): Promise<Record<string, unknown>> {
    const roomId = await this.rooms.resolveRoom(idOrAlias);
    const s = await this.reader.roomStats(roomId);
    if (!s) throw notFound('Room not found.');
    const joinRules = s.state.get('m.room.join_rules');
    const joinRule = str(joinRules?.join_rule);
    const allowed = joinRule === 'restricted' || joinRule === 'knock_restricted' ? allowedRooms(joinRules) : [];
    const membership = userId ? (await this.reader.membership(userId, s.room_nid))?.membership : undefined;
    let accessible = (joinRule !== undefined && LISTABLE_JOIN_RULES.has(joinRule))
      || s.state.get('m.room.history_visibility')?.history_visibility === 'world_readable'
      || membership === 'join' || membership === 'invite';
    if (!accessible && userId && allowed.length) {
      const mine = new Set(await this.reader.joinedRoomIds(userId));
      accessible = allowed.some((r) => mine.has(r));
    }
    if (!accessible) throw notFound('Room not found or is not accessible');
    const out = roomEntry(s);
    if (allowed.length) out.allowed_room_ids = allowed;
    const algorithm = str(s.state.get('m.room.encryption')?.algorithm);
    if (algorithm) out.encryption = algorithm;
    out.room_version = s.room_version;
    if (userId) out.membership = membership ?? 'leave';
    return out;
  }
}

function allowedRooms(joinRules: Record<string, unknown> | undefined): string[] {
  const allow = joinRules?.allow;
  if (!Array.isArray(allow)) return [];
  return allow
    .filter((a): a is { type: string; room_id: string } => a && typeof a === 'object' && a.type === 'm.room_membership' && typeof a.room_id === 'string')
    .map((a) => a.room_id);
}
