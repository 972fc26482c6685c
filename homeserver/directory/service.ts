import { MatrixError, notFound } from '../http/errors.ts';
import { isValidServerName } from '../protocol/identifiers.ts';
import type { RoomService } from '../rooms/service.ts';
import type { DirectoryStore, RoomStats } from './store.ts';

export interface PublicRoomsQuery {
  limit?: number;
  since?: string;
  server?: string;
  filter?: { generic_search_term?: string; room_types?: Array<string | null> };
  include_all_networks?: boolean;
  third_party_instance_id?: string;
}

/** Where a page of the directory starts: just after (forward) or before (backward) this room. */
interface Bound {
  members: number;
  roomId: string;
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
  constructor(private store: DirectoryStore, private rooms: RoomService, private serverName: string) {}

  async publicRooms(q: PublicRoomsQuery): Promise<Record<string, unknown>> {
    if (q.server !== undefined && q.server !== this.serverName) {
      if (!isValidServerName(q.server)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid server name ${q.server}`);
      // Asking another server needs the federation client, which this server does not have yet.
      throw new MatrixError(502, 'M_UNKNOWN', 'Failed to fetch room list');
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
    const limit = q.limit ? q.limit : undefined; // 0 means no limit, as in Synapse

    const types = q.filter?.room_types?.length ? new Set(q.filter.room_types) : undefined;
    const listed = bridgedOnly ? [] : (await this.store.stats({ published: true }))
      .filter((s) => {
        const joinRule = s.state.get('m.room.join_rules')?.join_rule;
        const worldReadable = s.state.get('m.room.history_visibility')?.history_visibility === 'world_readable';
        return s.joined_members > 0 && ((typeof joinRule === 'string' && LISTABLE_JOIN_RULES.has(joinRule)) || worldReadable);
      })
      .map(roomEntry)
      .filter((e) => !types || types.has((e.room_type as string | undefined) ?? null));
    const total = listed.length;

    const term = q.filter?.generic_search_term?.toLowerCase();
    const matching = term
      ? listed.filter((e) => [e.name, e.topic, e.canonical_alias].some((v) => typeof v === 'string' && v.toLowerCase().includes(term)))
      : listed;
    // Largest first; the room ID breaks ties.
    const order = (a: Record<string, unknown>, b: Record<string, unknown>) =>
      (b.num_joined_members as number) - (a.num_joined_members as number) || ((b.room_id as string) < (a.room_id as string) ? -1 : (b.room_id as string) > (a.room_id as string) ? 1 : 0);
    matching.sort(order);

    const key = (e: Record<string, unknown>) => ({ members: e.num_joined_members as number, roomId: e.room_id as string });
    const at = (b: Bound) => ({ num_joined_members: b.members, room_id: b.roomId });
    const after = (e: Record<string, unknown>, b: Bound) => order(at(b), e) < 0;
    const before = (e: Record<string, unknown>, b: Bound) => order(e, at(b)) < 0;
    const forward = since?.forward ?? true;
    let chunk: Array<Record<string, unknown>>;
    let moreToCome: boolean;
    if (forward) {
      const rest = since ? matching.filter((e) => after(e, since)) : matching;
      chunk = limit === undefined ? rest : rest.slice(0, limit);
      moreToCome = limit !== undefined && rest.length > limit;
    } else {
      const rest = matching.filter((e) => before(e, since!));
      chunk = limit === undefined ? rest : rest.slice(Math.max(0, rest.length - limit));
      moreToCome = limit !== undefined && rest.length > limit;
    }

    const out: Record<string, unknown> = { chunk };
    if (chunk.length) {
      const first = key(chunk[0]!);
      const last = key(chunk[chunk.length - 1]!);
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
    const [s] = await this.store.stats({ roomId });
    if (!s) throw notFound('Room not found.');
    const joinRules = s.state.get('m.room.join_rules');
    const joinRule = str(joinRules?.join_rule);
    const allowed = joinRule === 'restricted' || joinRule === 'knock_restricted' ? allowedRooms(joinRules) : [];
    const membership = userId ? (await this.rooms.store.membership(userId, s.room_nid))?.membership : undefined;
    let accessible = (joinRule !== undefined && LISTABLE_JOIN_RULES.has(joinRule))
      || s.state.get('m.room.history_visibility')?.history_visibility === 'world_readable'
      || membership === 'join' || membership === 'invite';
    if (!accessible && userId && allowed.length) {
      const mine = new Set(await this.rooms.store.joinedRoomIds(userId));
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
