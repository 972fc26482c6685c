import { Topic } from '../subscriptions/topic.ts';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { MatrixError, forbidden, invalidParam, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import { defaultPowerLevels, type PowerLevelsContent } from '../protocol/power-levels.ts';
import { isValidRoomAlias, isValidRoomId, isValidUserId } from '../protocol/identifiers.ts';
import { AuthError, checkRedaction, stateKey, type PDU } from '../protocol/auth.ts';
import { hashedRoomId, type RoomEngine, type EventDraft, type PersistedEvent } from './engine.ts';
import { pduOf, type RoomStore, type RoomRow } from './store.ts';
import type { AliasStore } from './alias-store.ts';
import { RoomAdminStore, type PurgeCounts } from './admin-store.ts'; // issue 9 (mod9)

/**
 * Issue 9 (mod9): a check a join or an invite passes before its event is built (blocked rooms,
 * policy lists, invite-spam controls). It throws to refuse; 'drop' answers the inviter as if the
 * invite were sent, but nothing is sent (an invite silently dropped).
 */
export type MembershipGate = (m: { kind: 'join' | 'invite'; sender: string; roomId: string; target: string }) => Promise<'allow' | 'drop'>;

export interface Profile {
  displayname?: string | null;
  avatar_url?: string | null;
}

export interface CreateRoomRequest {
  visibility?: 'public' | 'private';
  room_alias_name?: string;
  name?: string;
  topic?: string;
  invite?: string[];
  invite_3pid?: unknown[];
  room_version?: string;
  creation_content?: Record<string, unknown>;
  initial_state?: Array<{ type: string; state_key?: string; content: Record<string, unknown> }>;
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  is_direct?: boolean;
  power_level_content_override?: Record<string, unknown>;
}

const PRESETS = {
  private_chat: { joinRule: 'invite', history: 'shared', guestCanJoin: true, inviteesHaveOps: false },
  trusted_private_chat: { joinRule: 'invite', history: 'shared', guestCanJoin: true, inviteesHaveOps: true },
  public_chat: { joinRule: 'public', history: 'shared', guestCanJoin: false, inviteesHaveOps: false },
} as const;

/** Room operations a client asks for: creation, membership, sending, state. Reads live elsewhere. */
/** Rooms of other servers (issue 11: federation sets it; the room engine never imports federation). */
export interface RemoteRooms {
  /** A remote alias's room and the servers to ask. */
  resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }>;
  /** Joins a room this server is not in, through one of `servers`: make_join, send_join, persist. */
  join(userId: string, roomId: string, servers: string[], content: Record<string, unknown>): Promise<void>;
  /** Invites a remote user: the invite signed here, sent to their server (/invite v2), then persisted. */
  invite(sender: string, roomId: string, target: string, content: Record<string, unknown>): Promise<void>;
  /** Tells a remote invitee's server of an invite persisted here (/invite v2). */
  invited(roomId: string, invite: PDU): Promise<void>;
  /** Leaves (or rejects an invite to) a room this server has no state of: make_leave, send_leave. */
  leave(userId: string, roomId: string, content: Record<string, unknown>): Promise<void>;
  /** Knocks on a room this server is not in, through one of `servers`: make_knock, send_knock. */
  knock(userId: string, roomId: string, servers: string[], content: Record<string, unknown>): Promise<void>;
  /** Fetches history before the room's backfill points from its other servers: whether any came. */
  backfill(roomId: string): Promise<boolean>;
}

export class RoomService {
  /** Set by federation: rooms of other servers. */
  remote?: RemoteRooms;

  /** Called after a user forgets a room (caches of memberships listen). */
  /** Published when a user forgets a room (their /sync memberships change). */
  readonly forgotten = new Topic<string>('room forgotten');
  /** issue 9 (mod9): the checks joins and invites pass (moderation registers them). */
  readonly membershipGates: MembershipGate[] = [];
  /** issue 9 (mod9): published with the users that had a membership of a room just purged. */
  readonly purged = new Topic<{ roomId: string; members: string[] }>('room purged');
  /**
   * Asked before an invite to a DM (an is_direct invite, or one that makes a room of two): throws
   * to refuse it (issue 13: friends' "only friends may start a DM with me"). Set by main.ts.
   */
  directInviteCheck?: (sender: string, target: string) => Promise<void>;

  constructor(
    readonly engine: RoomEngine,
    readonly store: RoomStore,
    readonly aliases: AliasStore,
    private serverName: string,
    private defaultVersion: string,
    private profileOf: (userId: string) => Promise<Profile | undefined>,
    private log: Logger,
  ) {}

  newRoomId(): string {
    return `!${randomBytes(18).toString('base64url')}:${this.serverName}`;
  }

  async room(roomId: string): Promise<{ room: RoomRow; version: RoomVersion }> {
    return this.engine.version(roomId);
  }

  /** Current state entries by key for a few (type, state_key) pairs. */
  async stateFor(roomNid: number, pairs: Array<[string, string]>): Promise<Map<string, ReturnType<typeof pduOf>>> {
    const rows = await this.store.currentStateFor(this.store.db, roomNid, pairs);
    return new Map(rows.map((r) => [stateKey(r.type, r.state_key), pduOf(r)]));
  }

  async createRoom(creator: string, req: CreateRoomRequest): Promise<{ room_id: string; room_alias?: string }> {
    const versionId = req.room_version ?? this.defaultVersion;
    const version = getRoomVersion(versionId);
    if (!version || !isSupportedVersion(version)) throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${versionId} is not supported`);
    const visibility = req.visibility ?? 'private';
    const preset = PRESETS[req.preset ?? (visibility === 'public' ? 'public_chat' : 'private_chat')];
    const invitees = req.invite ?? [];
    for (const u of invitees) if (!isValidUserId(u)) throw invalidParam(`Invalid user ID ${u}`);
    let alias: string | undefined;
    if (req.room_alias_name !== undefined) {
      alias = `#${req.room_alias_name}:${this.serverName}`;
      if (!isValidRoomAlias(alias) || /[:\s#]/.test(req.room_alias_name)) throw invalidParam('Invalid characters in room alias');
      // A quick refusal; the claim that counts is made with the room, in its transaction.
      if (await this.aliases.resolve(alias)) throw new MatrixError(400, 'M_ROOM_IN_USE', 'Room alias already taken');
    }
    const creationContent = { ...(req.creation_content ?? {}) };
    if (creationContent['m.federate'] !== undefined && typeof creationContent['m.federate'] !== 'boolean') {
      throw new MatrixError(400, 'M_BAD_JSON', "'m.federate' must be a boolean");
    }
    // A DM: is_direct, or a room of two (its creator and one invitee).
    if (this.directInviteCheck && (req.is_direct || invitees.length === 1)) for (const u of invitees) await this.directInviteCheck(creator, u);
    const profile = (await this.profileOf(creator)) ?? {};

    const createContent: Record<string, unknown> = { ...creationContent, room_version: version.id };
    if (!version.implicitRoomCreator) createContent.creator = creator;
    if (version.creatorsHaveInfinitePower) {
      const extra = additionalCreators(createContent.additional_creators);
      // trusted_private_chat: the invitees are creators too (spec createRoom; Synapse).
      if (req.preset === 'trusted_private_chat' && invitees.length) createContent.additional_creators = [...new Set([...(extra ?? []), ...invitees])];
    }
    const pl: PowerLevelsContent & Record<string, unknown> = { ...defaultPowerLevels(creator, version) };
    pl.invite = req.preset === undefined && visibility === 'public' ? 50 : preset.joinRule === 'invite' ? 0 : 50;
    // v12+: invitees with ops are creators already, who may not be listed.
    if (preset.inviteesHaveOps && !version.creatorsHaveInfinitePower) for (const u of invitees) pl.users = { ...pl.users, [u]: 100 };
    Object.assign(pl, req.power_level_content_override ?? {});

    const s = (type: string, content: Record<string, unknown>, key = ''): EventDraft => ({ type, sender: creator, content, stateKey: key });
    const createDraft = s('m.room.create', createContent);
    // v12+: the room is named by its create event's hash (the event's timestamp makes it unique).
    let roomId: string;
    if (version.roomIdIsCreateEventHash) {
      createDraft.originServerTs = Date.now();
      roomId = hashedRoomId(createDraft as EventDraft & { originServerTs: number }, version);
    } else roomId = this.newRoomId();
    const drafts: EventDraft[] = [
      createDraft,
      s('m.room.member', { membership: 'join', ...profileContent(profile) }, creator),
      s('m.room.power_levels', pl),
    ];
    if (alias) drafts.push(s('m.room.canonical_alias', { alias }));
    const initial = new Map<string, EventDraft>();
    initial.set('m.room.join_rules\0', s('m.room.join_rules', { join_rule: preset.joinRule }));
    initial.set('m.room.history_visibility\0', s('m.room.history_visibility', { history_visibility: preset.history }));
    if (preset.guestCanJoin) initial.set('m.room.guest_access\0', s('m.room.guest_access', { guest_access: 'can_join' }));
    for (const ev of req.initial_state ?? []) {
      if (typeof ev?.type !== 'string' || typeof ev.content !== 'object') throw new MatrixError(400, 'M_BAD_JSON', 'Invalid initial_state event');
      if (ev.type === 'm.room.create' || ev.type === 'm.room.member' || ev.type === 'm.room.power_levels') {
        throw new MatrixError(400, 'M_BAD_JSON', `${ev.type} cannot be set in initial_state`);
      }
      initial.set(`${ev.type}\0${ev.state_key ?? ''}`, s(ev.type, ev.content, ev.state_key ?? ''));
    }
    drafts.push(...initial.values());
    if (req.name !== undefined) drafts.push(s('m.room.name', { name: req.name }));
    if (req.topic !== undefined) drafts.push(s('m.room.topic', { topic: req.topic }));
    for (const u of invitees) {
      const content: Record<string, unknown> = { membership: 'invite', ...profileContent((await this.profileOf(u)) ?? {}) };
      if (req.is_direct) content.is_direct = true;
      drafts.push({ type: 'm.room.member', sender: creator, content, stateKey: u });
    }
    let persisted: PersistedEvent[];
    for (let attempt = 1; ; attempt++) {
      try {
        persisted = await this.engine.createRoom(roomId, version, creator, drafts, alias);
        break;
      } catch (err) {
        // v12+: the same creator made the same room in the same millisecond: another timestamp, another ID.
        if (!version.roomIdIsCreateEventHash || !isUniqueViolation(err) || attempt >= 3) throw err;
        createDraft.originServerTs! += 1;
        roomId = hashedRoomId(createDraft as EventDraft & { originServerTs: number }, version);
      }
    }
    // Remote invitees hear of their invites from their servers (issue 11: /invite v2).
    if (this.remote) {
      for (const e of persisted) {
        if (e.pdu.type === 'm.room.member' && e.pdu.content?.membership === 'invite' && typeof e.pdu.state_key === 'string' && !e.pdu.state_key.endsWith(`:${this.serverName}`)) {
          await this.remote.invited(roomId, e.pdu).catch((err) => this.log.warn({ err, roomId, invitee: e.pdu.state_key }, 'remote invite not delivered'));
        }
      }
    }
    if (visibility === 'public') await this.store.setPublished(roomId, true);
    return alias ? { room_id: roomId, room_alias: alias } : { room_id: roomId };
  }

  /** A room id, or the room an alias points at. */
  async resolveRoom(idOrAlias: string): Promise<string> {
    if (idOrAlias.startsWith('#')) {
      if (!isValidRoomAlias(idOrAlias)) throw invalidParam(`Invalid room alias ${idOrAlias}`);
      const roomId = await this.aliases.resolve(idOrAlias);
      if (!roomId) throw notFound(`Room alias ${idOrAlias} not found`);
      return roomId;
    }
    if (!isValidRoomId(idOrAlias)) throw invalidParam(`Invalid room ID ${idOrAlias}`);
    return idOrAlias;
  }

  async membershipOf(userId: string, roomId: string): Promise<{ membership: string; event_nid: number; stream_pos: number; forgotten: boolean } | undefined> {
    const { room } = await this.room(roomId);
    return this.store.membership(userId, room.room_nid);
  }

  async requireJoined(userId: string, roomId: string): Promise<RoomRow> {
    const room = await this.store.roomMeta(roomId);
    const m = room && (await this.store.membership(userId, room.room_nid));
    if (!room || m?.membership !== 'join') throw forbidden(`User ${userId} not in room ${roomId}`);
    return room;
  }

  private async membershipEvent(sender: string, roomId: string, target: string, membership: string, extra: Record<string, unknown> = {}): Promise<PersistedEvent> {
    await this.room(roomId);
    const content: Record<string, unknown> = { membership, ...extra };
    return this.engine.send(roomId, { type: 'm.room.member', sender, content, stateKey: target });
  }

  /** A room ID or alias as a room ID, and the servers to ask for it: `via`, and a remote alias's. */
  private async resolveWithServers(idOrAlias: string, via: string[]): Promise<{ roomId: string; servers: string[] }> {
    if (this.remote && idOrAlias.startsWith('#') && isValidRoomAlias(idOrAlias) && !idOrAlias.endsWith(`:${this.serverName}`)) {
      const r = await this.remote.resolveAlias(idOrAlias);
      return { roomId: r.roomId, servers: [...via, ...r.servers] };
    }
    return { roomId: await this.resolveRoom(idOrAlias), servers: [...via] };
  }

  /** The other servers to ask for a room: those given, and the one its ID names (up to room version 11; v12's is the create event's hash). */
  private otherServers(roomId: string, servers: string[]): string[] {
    const all = [...servers];
    if (roomId.includes(':') && !roomId.endsWith(`:${this.serverName}`)) all.push(roomId.slice(roomId.indexOf(':') + 1));
    return [...new Set(all)].filter((s) => s !== this.serverName);
  }

  async join(userId: string, idOrAlias: string, reason?: string, extra: Record<string, unknown> = {}, via: string[] = []): Promise<string> {
    const { roomId, servers } = await this.resolveWithServers(idOrAlias, via);
    const room = await this.store.roomMeta(roomId);
    if (!room && !this.remote) {
      await this.gate('join', userId, roomId, userId); // issue 9 (mod9): a purged, blocked room answers "blocked"
      throw notFound(`Unknown room ${roomId}`);
    }
    const profile = (await this.profileOf(userId)) ?? {};
    const content: Record<string, unknown> = { ...extra, ...profileContent(profile) };
    if (reason !== undefined) content.reason = reason;
    // A room this server is not in (unknown, or known only by an invite): joined through another server.
    if (this.remote && (!room || !(await this.store.hasJoinedMember(room.room_nid, this.serverName)))) {
      const current = room && (await this.store.membership(userId, room.room_nid));
      if (current?.membership === 'join') return roomId;
      if (room && current?.membership === 'invite') {
        const invite = (await this.store.eventsByNid([current.event_nid]))[0];
        if (invite) servers.push(invite.sender.slice(invite.sender.indexOf(':') + 1));
      }
      const others = this.otherServers(roomId, servers);
      // With no other server to ask, a room of ours is joined here as before.
      if (others.length || !room) {
        await this.gate('join', userId, roomId, userId); // a blocked room is not joined remotely either
        if (!others.length) throw notFound(`Unknown room ${roomId}`);
        await this.remote.join(userId, roomId, others, { membership: 'join', ...content });
        return roomId;
      }
    }
    if (!room) throw notFound(`Unknown room ${roomId}`);
    const current = await this.store.membership(userId, room.room_nid);
    // An invite's is_direct carries over, so the client keeps treating the room as a DM.
    if (current?.membership === 'join') {
      // Joining again is a no-op in Synapse unless the profile changed; keep the event stream quiet.
      return roomId;
    }
    await this.gate('join', userId, roomId, userId);
    await this.membershipEvent(userId, roomId, userId, 'join', content);
    return roomId;
  }

  async invite(sender: string, roomId: string, target: string, reason?: string): Promise<void> {
    if (!isValidUserId(target)) throw invalidParam(`Invalid user ID ${target}`);
    const { room } = await this.room(roomId);
    const m = await this.store.membership(target, room.room_nid);
    if (m?.membership === 'join') throw forbidden(`${target} is already in the room.`);
    if (m?.membership === 'ban') throw forbidden(`${target} is banned from the room`);
    if ((await this.gate('invite', sender, roomId, target)) === 'drop') return;
    if (this.directInviteCheck) {
      // A room whose only member is the inviter becomes a room of two: a DM.
      const members = await this.store.joinedMembers(room.room_nid);
      if (members.filter((u) => u !== target).length <= 1) await this.directInviteCheck(sender, target);
    }
    const extra: Record<string, unknown> = profileContent((await this.profileOf(target)) ?? {});
    if (reason !== undefined) extra.reason = reason;
    // A remote invitee's server is asked first (it may refuse): issue 11.
    if (this.remote && !target.endsWith(`:${this.serverName}`)) {
      await this.remote.invite(sender, roomId, target, extra);
      return;
    }
    await this.membershipEvent(sender, roomId, target, 'invite', extra);
  }

  async leave(userId: string, roomId: string, reason?: string): Promise<void> {
    const { room } = await this.room(roomId).catch(() => {
      throw notFound(`Unknown room ${roomId}`);
    });
    const m = await this.store.membership(userId, room.room_nid);
    if (!m || m.membership === 'leave') throw forbidden(`User ${userId} is not in room ${roomId}`);
    // An invite (or knock) to a room this server is not in: left through the room's servers.
    if (this.remote && m.membership !== 'join' && !(await this.store.hasJoinedMember(room.room_nid, this.serverName))) {
      await this.remote.leave(userId, roomId, reason !== undefined ? { membership: 'leave', reason } : { membership: 'leave' });
      return;
    }
    await this.membershipEvent(userId, roomId, userId, 'leave', reason !== undefined ? { reason } : {});
  }

  async kick(sender: string, roomId: string, target: string, reason?: string): Promise<void> {
    const { room } = await this.room(roomId);
    const m = await this.store.membership(target, room.room_nid);
    if (!m || !['join', 'invite', 'knock'].includes(m.membership)) throw forbidden(`${target} is not in the room`);
    await this.membershipEvent(sender, roomId, target, 'leave', reason !== undefined ? { reason } : {});
  }

  async ban(sender: string, roomId: string, target: string, reason?: string): Promise<void> {
    if (!isValidUserId(target)) throw invalidParam(`Invalid user ID ${target}`);
    await this.membershipEvent(sender, roomId, target, 'ban', reason !== undefined ? { reason } : {});
  }

  async unban(sender: string, roomId: string, target: string, reason?: string): Promise<void> {
    const { room } = await this.room(roomId);
    const m = await this.store.membership(target, room.room_nid);
    if (m?.membership !== 'ban') throw forbidden(`${target} is not banned`);
    await this.membershipEvent(sender, roomId, target, 'leave', reason !== undefined ? { reason } : {});
  }

  async knock(userId: string, idOrAlias: string, reason?: string, via: string[] = []): Promise<string> {
    const { roomId, servers } = await this.resolveWithServers(idOrAlias, via);
    // A room this server is not in: knocked on through its servers (issue 11).
    const known = await this.store.roomMeta(roomId);
    if (this.remote && (!known || !(await this.store.hasJoinedMember(known.room_nid, this.serverName)))) {
      const others = this.otherServers(roomId, servers);
      if (others.length) {
        const content: Record<string, unknown> = { membership: 'knock', ...profileContent((await this.profileOf(userId)) ?? {}) };
        if (reason !== undefined) content.reason = reason;
        await this.remote.knock(userId, roomId, others, content);
        return roomId;
      }
    }
    const { version } = await this.room(roomId);
    if (!version.knockJoinRule) throw forbidden(`Room version ${version.id} does not support knocking`);
    await this.gate('join', userId, roomId, userId); // issue 9 (mod9): blocked rooms, policy lists
    const extra: Record<string, unknown> = profileContent((await this.profileOf(userId)) ?? {});
    if (reason !== undefined) extra.reason = reason;
    await this.membershipEvent(userId, roomId, userId, 'knock', extra);
    return roomId;
  }

  async forget(userId: string, roomId: string): Promise<void> {
    const { room } = await this.room(roomId);
    const m = await this.store.membership(userId, room.room_nid);
    if (!m) throw notFound('Room not found');
    if (m.membership === 'join' || m.membership === 'invite' || m.membership === 'knock') {
      throw new MatrixError(400, 'M_UNKNOWN', 'User must leave the room before forgetting it');
    }
    await this.store.setForgotten(userId, room.room_nid);
    this.forgotten.publishSync(userId);
  }

  /** Sends a message-like event, idempotent per device and transaction id. */
  async send(me: Requester, roomId: string, type: string, content: Record<string, unknown>, txnId?: string): Promise<string> {
    // The engine answers retries of a transaction and checks membership through the auth rules;
    // checking here too would cost two queries on the hottest path.
    if (!(await this.store.roomMeta(roomId))) throw forbidden(`User ${me.userId} not in room ${roomId}`);
    const key = `send|${roomId}|${type}|${txnId}`;
    if (type === 'm.room.redaction') {
      // Clients honour `content.redacts` (room version 11 keeps it there): it goes through the redaction checks.
      if (typeof content.redacts !== 'string') {
        const { version } = await this.room(roomId);
        if (version.redactsInContent) throw new MatrixError(400, 'M_BAD_JSON', 'm.room.redaction needs content.redacts (an event ID)');
      } else {
        return this.sendRedaction(me, roomId, content.redacts, content, key, txnId ?? randomBytes(9).toString('base64url'));
      }
    }
    const draft: EventDraft = { type, sender: me.userId, content };
    if (txnId !== undefined) draft.txn = { deviceId: me.deviceId, txnId, key };
    try {
      return (await this.engine.send(roomId, draft)).eventId;
    } catch (err) {
      // A retry raced the first attempt: answer with the event that won.
      if (txnId !== undefined && isUniqueViolation(err)) {
        const existing = await this.store.txnEvent(me.userId, me.deviceId, key);
        if (existing) return existing;
      }
      throw err;
    }
  }

  async setState(me: Requester, roomId: string, type: string, key: string, content: Record<string, unknown>): Promise<string> {
    if (type === 'm.room.member') return this.setMembershipState(me, roomId, key, content);
    const { room } = await this.room(roomId);
    await this.requireJoined(me.userId, roomId);
    if (type === 'm.room.canonical_alias') await this.checkCanonicalAlias(roomId, content);
    // Setting the same content again makes no new event, as in Synapse.
    const existing = await this.stateFor(room.room_nid, [[type, key]]);
    const prev = existing.get(stateKey(type, key));
    if (prev && prev.sender === me.userId && JSON.stringify(prev.content) === JSON.stringify(content)) return prev.event_id!;
    const ev = await this.engine.send(roomId, { type, sender: me.userId, content, stateKey: key });
    return ev.eventId;
  }

  private async setMembershipState(me: Requester, roomId: string, target: string, content: Record<string, unknown>): Promise<string> {
    const membership = content.membership;
    if (typeof membership !== 'string') throw new MatrixError(400, 'M_BAD_JSON', 'membership must be a string');
    await this.room(roomId);
    // issue 9 (mod9): a join or invite through PUT /state passes the same checks as /join and /invite.
    if (membership === 'join' && target === me.userId) await this.gate('join', me.userId, roomId, target);
    if (membership === 'invite' && (await this.gate('invite', me.userId, roomId, target)) === 'drop') {
      return `$${randomBytes(32).toString('base64url')}`;
    }
    const ev = await this.engine.send(roomId, { type: 'm.room.member', sender: me.userId, content, stateKey: target });
    return ev.eventId;
  }

  private async checkCanonicalAlias(roomId: string, content: Record<string, unknown>): Promise<void> {
    const all = [content.alias, ...(Array.isArray(content.alt_aliases) ? content.alt_aliases : [])].filter((a) => a !== undefined && a !== null);
    for (const a of all) {
      if (typeof a !== 'string' || !isValidRoomAlias(a)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid alias ${String(a)}`);
      if ((await this.aliases.resolve(a)) !== roomId) throw new MatrixError(400, 'M_BAD_ALIAS', `Room alias ${a} does not point to the room`);
    }
  }

  async redact(me: Requester, roomId: string, eventId: string, reason: string | undefined, txnId: string): Promise<string> {
    const content: Record<string, unknown> = {};
    if (reason !== undefined) content.reason = reason;
    return this.sendRedaction(me, roomId, eventId, content, `redact|${roomId}|${eventId}|${txnId}`, txnId);
  }

  /**
   * Every m.room.redaction a client sends (PUT /redact, or /send with `redacts` in content as room
   * version 11 puts it) passes the same power check (protocol checkRedaction) and is applied.
   */
  private async sendRedaction(me: Requester, roomId: string, eventId: string, extra: Record<string, unknown>, key: string, txnId: string): Promise<string> {
    const existing = await this.store.txnEvent(me.userId, me.deviceId, key);
    if (existing) return existing;
    const room = await this.requireJoined(me.userId, roomId);
    const { version } = await this.room(roomId);
    const target = await this.store.eventById(eventId);
    const inRoom = target && target.room_id === roomId ? target : undefined;
    const content: Record<string, unknown> = { ...extra };
    if (version.redactsInContent) content.redacts = eventId;
    const state = await this.stateFor(room.room_nid, [['m.room.power_levels', ''], ['m.room.create', '']]);
    const draftPdu = { type: 'm.room.redaction', sender: me.userId, room_id: roomId, content, redacts: eventId, origin_server_ts: 0 };
    try {
      checkRedaction(draftPdu, state, version, inRoom?.sender);
    } catch (err) {
      if (err instanceof AuthError) throw forbidden("You don't have permission to redact events");
      throw err;
    }
    // A redaction of an unknown event or one in another room is sent but redacts nothing.
    const redacts = inRoom ? eventId : undefined;
    const ev = await this.engine.send(roomId, { type: 'm.room.redaction', sender: me.userId, content, redacts, txn: { deviceId: me.deviceId, txnId, key } });
    if (!redacts && !version.redactsInContent) (ev.pdu as { redacts?: string }).redacts = eventId;
    return ev.eventId;
  }

  /** Lists the room in the published directory, or takes it out. */
  async setPublished(roomId: string, published: boolean): Promise<void> {
    await this.store.setPublished(roomId, published);
  }

  /** Points every local alias of a room at its replacement (a room upgrade). */
  async moveAliases(oldRoomId: string, newRoomId: string): Promise<void> {
    await this.aliases.moveAll(oldRoomId, newRoomId);
  }

  // ---- issue 9 (mod9) ----------------------------------------------------------------------

  private async gate(kind: 'join' | 'invite', sender: string, roomId: string, target: string): Promise<'allow' | 'drop'> {
    let outcome: 'allow' | 'drop' = 'allow';
    for (const g of this.membershipGates) if ((await g({ kind, sender, roomId, target })) === 'drop') outcome = 'drop';
    return outcome;
  }

  /**
   * Removes every row of a room from the engine's tables (one transaction) and drops it from the
   * caches of every worker; the users that had a membership hear of it (their /sync forgets it).
   * Undefined: no such room.
   */
  async purge(roomId: string): Promise<PurgeCounts | undefined> {
    const done = await new RoomAdminStore(this.store.db).purge(roomId);
    this.store.forgetRoom(roomId);
    this.store.roomChanged?.(roomId);
    if (!done) return undefined;
    await this.purged.publish({ roomId, members: done.members });
    return done.counts;
  }

  /** Leaves (or rejects) every room, for deactivation. */
  async leaveAll(userId: string): Promise<void> {
    const rooms = await this.store.roomsWithMembership(userId, ['join', 'invite', 'knock']);
    for (const { room_id } of rooms) {
      await this.leave(userId, room_id).catch((err) => this.log.warn({ err, room_id }, 'leave on deactivation failed'));
    }
  }
}

/** Every known version (1-12) can be created: v1/v2 with server-assigned event IDs. */
export function isSupportedVersion(v: RoomVersion): boolean {
  return getRoomVersion(v.id) === v;
}

/**
 * v12+: a create event's `additional_creators` as given (undefined when absent), or 400 M_BAD_JSON
 * unless it is an array of valid user IDs (the auth rules would refuse the create event).
 */
export function additionalCreators(value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((u) => typeof u === 'string' && isValidUserId(u))) {
    throw new MatrixError(400, 'M_BAD_JSON', 'additional_creators must be an array of user IDs');
  }
  return value as string[];
}

export function profileContent(p: Profile): Record<string, unknown> {
  const c: Record<string, unknown> = {};
  if (p.displayname) c.displayname = p.displayname;
  if (p.avatar_url) c.avatar_url = p.avatar_url;
  return c;
}

function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}
