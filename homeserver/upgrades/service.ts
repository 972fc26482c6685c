import { randomUUID } from 'node:crypto';
import { LocalState, type SharedState } from '../coordination/shared-state.ts';
import type { Logger } from 'pino';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import { actionLevel, defaultPowerLevels, requiredLevelForEvent, toPowerLevel, userLevel, type PowerLevelsContent } from '../protocol/power-levels.ts';
import type { EventDraft } from '../rooms/engine.ts';
import type { ClientEvent, RoomReader } from '../rooms/reader.ts';
import { additionalCreators, isSupportedVersion, profileContent, type Profile, type RoomService } from '../rooms/service.ts';
import { hashedRoomId } from '../rooms/engine.ts';
import type { AccountDataService } from '../accountdata/service.ts';
import type { PushRulesService } from '../push/service.ts';
import { copyRoomRules } from '../push/rules.ts';

/** State copied to the replacement room, in the order Synapse sends it (join rules first). */
const COPIED_STATE = [
  'm.room.join_rules',
  'm.room.history_visibility',
  'm.room.guest_access',
  'm.room.name',
  'm.room.topic',
  'm.room.avatar',
  'm.room.encryption',
  'm.room.server_acl',
];

/**
 * Power levels as integers (rooms before v10 allow numeric strings, later versions do not);
 * values that are not power levels at all are dropped. As Synapse's
 * copy_and_fixup_power_levels_contents, which raises on them instead.
 */
export function fixupPowerLevels(content: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(content)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const inner: Record<string, number> = {};
      for (const [k1, v1] of Object.entries(v)) {
        const n = typeof v1 === 'boolean' ? undefined : toPowerLevel(v1);
        if (n !== undefined) inner[k1] = n;
      }
      out[k] = inner;
    } else {
      const n = typeof v === 'boolean' ? undefined : toPowerLevel(v);
      if (n !== undefined) out[k] = n;
    }
  }
  return out;
}

/** Takes these users out of a power levels content's `users` (v12+: creators may not be listed). */
function withoutUsers(pl: Record<string, unknown>, users: string[]): void {
  const map = pl.users;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) return;
  const kept = { ...(map as Record<string, unknown>) };
  for (const u of users) delete kept[u];
  pl.users = kept;
}

/** How long a room's upgrade lock lasts at most (a worker that died mid-upgrade releases it then). */
const UPGRADE_LOCK_MS = 120_000;

/** Room upgrades (POST /rooms/{roomId}/upgrade), following the spec's server behaviour and Synapse. */
export class UpgradeService {
  private inProgress = new Map<string, { userId: string; result: Promise<string> }>();

  constructor(
    private rooms: RoomService,
    private reader: RoomReader,
    private push: PushRulesService,
    private accountData: AccountDataService,
    private profileOf: (userId: string) => Promise<Profile | undefined>,
    private serverName: string,
    private log: Logger,
    /** Shared with the other workers: an upgrade of a room runs on one of them at a time. */
    private shared: SharedState = new LocalState(),
  ) {}

  /** `extraCreators`: the request's additional_creators (only room versions 12+ have them). */
  async upgrade(me: Requester, roomId: string, newVersion: string, extraCreators?: unknown): Promise<string> {
    const version = getRoomVersion(newVersion);
    if (!version || !isSupportedVersion(version)) {
      throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', 'Your homeserver does not support this room version');
    }
    // Ignored by versions without additional creators (spec); else an array of user IDs or 400.
    const extra = version.creatorsHaveInfinitePower ? additionalCreators(extraCreators) : undefined;
    const room = await this.reader.roomMeta(roomId);
    if (!room) throw notFound(`Unknown room id ${roomId}`);
    // The same user asking again while an upgrade runs gets the same answer, as in Synapse.
    const running = this.inProgress.get(roomId);
    if (running) {
      if (running.userId !== me.userId) throw new MatrixError(400, 'M_UNKNOWN', 'An upgrade for this room is currently in progress');
      return running.result;
    }
    // Across workers: the room's upgrade lock (lapses if its worker dies mid-way).
    const token = `${me.userId}|${randomUUID()}`;
    const lock = await this.shared.tryLock(`upgrade:${roomId}`, token, UPGRADE_LOCK_MS);
    if (!lock.ok) throw new MatrixError(400, 'M_UNKNOWN', 'An upgrade for this room is currently in progress');
    const result = this.run(me, roomId, version, extra);
    this.inProgress.set(roomId, { userId: me.userId, result });
    try {
      return await result;
    } finally {
      this.inProgress.delete(roomId);
      await this.shared.unlock(`upgrade:${roomId}`, token).catch(() => {});
    }
  }

  private async run(me: Requester, oldRoomId: string, version: RoomVersion, extraCreators: string[] | undefined): Promise<string> {
    const { room: old, version: oldVersion } = await this.rooms.room(oldRoomId);
    const m = await this.reader.membership(me.userId, old.room_nid);
    if (m?.membership !== 'join') throw forbidden(`User ${me.userId} not in room ${oldRoomId}`);

    const state = await this.currentState(old.room_nid);
    const create = state.get('m.room.create')!;
    const oldPl = state.get('m.room.power_levels')?.content as PowerLevelsContent | undefined;
    // The spec's first step: the upgrader must be allowed to send the tombstone.
    const mine = userLevel(oldPl, me.userId, create, oldVersion);
    if (mine < requiredLevelForEvent(oldPl, 'm.room.tombstone', true)) throw forbidden('You cannot upgrade this room');

    const creationContent: Record<string, unknown> = {
      room_version: version.id,
      predecessor: { room_id: oldRoomId, event_id: await this.reader.lastEventId(old.room_nid) },
    };
    if (!version.implicitRoomCreator) creationContent.creator = me.userId;
    // v12+: the creators are not carried over: the request names them all (spec room upgrades).
    if (extraCreators) creationContent.additional_creators = [...new Set(extraCreators)];
    if (create.content['m.federate'] === false) creationContent['m.federate'] = false;
    const roomType = create.content.type;
    if (roomType !== undefined) creationContent.type = roomType;

    // The upgrader may need more power in the new room to copy all the state; they get it back below.
    const restoredPl = oldPl ? fixupPowerLevels(oldPl as Record<string, unknown>) : undefined;
    const initialPl = restoredPl ? structuredClone(restoredPl) : (defaultPowerLevels(me.userId, version) as Record<string, unknown>);
    if (restoredPl) {
      // Enough to send any state event and to ban (the bans copied below), as Synapse grants.
      const pl = initialPl as PowerLevelsContent;
      const needed = Math.max(
        toPowerLevel(pl.state_default) ?? 50,
        actionLevel(pl, 'ban'),
        ...Object.keys(pl.events ?? {}).map((type) => requiredLevelForEvent(pl, type, true)),
        0,
      );
      if (userLevel(pl, me.userId) < needed) initialPl.users = { ...(pl.users ?? {}), [me.userId]: needed };
    }
    // v12+: the new room's creators have infinite power and may not be listed in `users` (Synapse
    // removes them from both the initial and the restored power levels).
    const newCreators = [me.userId, ...(extraCreators ?? [])];
    if (version.creatorsHaveInfinitePower) {
      withoutUsers(initialPl, newCreators);
      if (restoredPl) withoutUsers(restoredPl, newCreators);
    } else if (oldVersion.creatorsHaveInfinitePower && restoredPl && mine === Number.POSITIVE_INFINITY) {
      // From a creator's infinite power to a room without it: the highest level the room lists
      // (at least 100, and enough to upgrade again), rather than users_default.
      const levels = Object.values((restoredPl as PowerLevelsContent).users ?? {}).map((v) => toPowerLevel(v) ?? 0);
      const top = Math.max(100, requiredLevelForEvent(restoredPl as PowerLevelsContent, 'm.room.tombstone', true), ...levels);
      restoredPl.users = { ...((restoredPl as PowerLevelsContent).users ?? {}), [me.userId]: top };
      if (userLevel(initialPl as PowerLevelsContent, me.userId) < top) initialPl.users = { ...((initialPl as PowerLevelsContent).users ?? {}), [me.userId]: top };
    }

    const s = (type: string, content: Record<string, unknown>, key = ''): EventDraft => ({ type, sender: me.userId, content, stateKey: key });
    const createDraft = s('m.room.create', creationContent);
    // v12+: the new room is named by its create event's hash.
    if (version.roomIdIsCreateEventHash) createDraft.originServerTs = Date.now();
    const newRoomId = version.roomIdIsCreateEventHash ? hashedRoomId(createDraft as EventDraft & { originServerTs: number }, version) : this.rooms.newRoomId();
    const drafts: EventDraft[] = [
      createDraft,
      s('m.room.member', { membership: 'join', ...profileContent((await this.profileOf(me.userId)) ?? {}) }, me.userId),
      s('m.room.power_levels', initialPl),
    ];
    // Rooms without these state events behave as if they had these defaults; make them explicit.
    if (!state.has('m.room.join_rules')) drafts.push(s('m.room.join_rules', { join_rule: 'invite' }));
    if (!state.has('m.room.history_visibility')) drafts.push(s('m.room.history_visibility', { history_visibility: 'shared' }));
    for (const type of COPIED_STATE) {
      const ev = state.get(type);
      if (ev) drafts.push(s(type, ev.content));
    }
    if (roomType === 'm.space') {
      for (const child of await this.reader.currentState(old.room_nid, ['m.space.child'])) {
        const [ev] = await this.reader.format([child]);
        if (ev && Object.keys(ev.content).length) drafts.push(s('m.space.child', ev.content, ev.state_key as string));
      }
    }
    await this.rooms.engine.createRoom(newRoomId, version, me.userId, drafts);
    if (old.published) await this.rooms.setPublished(newRoomId, true);

    // Bans carry over; a ban the auth rules refuse (a target above the upgrader) is skipped.
    for (const member of await this.reader.currentState(old.room_nid, ['m.room.member'])) {
      if (member.membership !== 'ban') continue;
      const [ev] = await this.reader.format([member]);
      await this.rooms.engine.send(newRoomId, s('m.room.member', ev!.content, member.state_key!))
        .catch((err) => this.log.warn({ err, roomId: newRoomId, user: member.state_key }, 'could not copy ban to upgraded room'));
    }

    await this.rooms.engine.send(oldRoomId, s('m.room.tombstone', { body: 'This room has been replaced', replacement_room: newRoomId }));

    await this.moveAliases(me, oldRoomId, newRoomId, state.get('m.room.canonical_alias'));
    await this.copyMembersState(await this.reader.localJoined(old.room_nid, this.serverName), oldRoomId, newRoomId)
      .catch((err) => this.log.warn({ err, roomId: oldRoomId }, 'could not copy members\' state to the upgraded room'));
    if (old.published) await this.rooms.setPublished(oldRoomId, false);

    if (restoredPl) {
      // Stop ordinary users from talking or inviting in the old room.
      const pl = fixupPowerLevels(oldPl as Record<string, unknown>) as PowerLevelsContent & Record<string, unknown>;
      const restricted = Math.max((toPowerLevel(pl.users_default) ?? 0) + 1, 50);
      let changed = false;
      if (actionLevel(pl, 'invite') < restricted) {
        pl.invite = restricted;
        changed = true;
      }
      if ((toPowerLevel(pl.events_default) ?? 0) < restricted) {
        pl.events_default = restricted;
        changed = true;
      }
      if (changed) {
        await this.rooms.engine.send(oldRoomId, s('m.room.power_levels', pl))
          .catch((err) => this.log.warn({ err, roomId: oldRoomId }, 'could not restrict power levels of the upgraded room'));
      }
      await this.rooms.engine.send(newRoomId, s('m.room.power_levels', restoredPl));
    }
    return newRoomId;
  }

  /** The current state of the types an upgrade reads, as client events (redactions applied). */
  private async currentState(roomNid: number): Promise<Map<string, ClientEvent>> {
    const rows = await this.reader.currentState(roomNid, ['m.room.create', 'm.room.power_levels', 'm.room.canonical_alias', ...COPIED_STATE]);
    const events = await this.reader.format(rows.filter((r) => r.state_key === ''));
    return new Map(events.map((e) => [e.type, e]));
  }

  /**
   * Moves the local aliases to the new room; the canonical alias event moves the local aliases
   * (main and alternative) from the old room's event to a new event in the new room.
   */
  private async moveAliases(me: Requester, oldRoomId: string, newRoomId: string, canonical: ClientEvent | undefined): Promise<void> {
    await this.rooms.moveAliases(oldRoomId, newRoomId);
    if (!canonical) return;
    const local = (a: unknown): a is string => typeof a === 'string' && a.endsWith(`:${this.serverName}`);
    const oldContent: Record<string, unknown> = { ...canonical.content };
    const newContent: Record<string, unknown> = {};
    if (local(oldContent.alias)) {
      newContent.alias = oldContent.alias;
      delete oldContent.alias;
    }
    if (Array.isArray(oldContent.alt_aliases) && oldContent.alt_aliases.length) {
      const alt = oldContent.alt_aliases as unknown[];
      newContent.alt_aliases = alt.filter(local);
      const remaining = alt.filter((a) => !local(a));
      if (remaining.length) oldContent.alt_aliases = remaining;
      else delete oldContent.alt_aliases;
    }
    const send = (roomId: string, content: Record<string, unknown>) =>
      this.rooms.engine.send(roomId, { type: 'm.room.canonical_alias', sender: me.userId, content, stateKey: '' })
        .catch((err) => this.log.warn({ err, roomId }, 'could not update the canonical alias during a room upgrade'));
    await send(oldRoomId, oldContent);
    await send(newRoomId, newContent);
  }

  /**
   * The members' tags, DM marks and room push rules follow the room to its replacement: tags and
   * DM marks for all members in one set-based write (the global room has every user in it), push
   * rules only for the few members whose rules name the old room.
   */
  private async copyMembersState(members: string[], oldRoomId: string, newRoomId: string): Promise<void> {
    await this.accountData.copyToUpgradedRoom(members, oldRoomId, newRoomId);
    for (const userId of await this.accountData.usersMentioning(members, 'm.push_rules', oldRoomId)) {
      await this.push.update(userId, (rules) => copyRoomRules(rules, oldRoomId, newRoomId))
        .catch((err) => this.log.warn({ err, userId }, 'could not copy room push rules to the upgraded room'));
    }
  }
}
