// m.room.power_levels semantics (event schema m.room.power_levels.yaml, server-server-api
// "Definitions"). Values are read leniently: room versions 1-9 allow stringy integers and
// v1-v5 floats; the auth rules reject malformed values when a power levels event is accepted.
import type { RoomVersion } from './room-versions.ts';

export interface PowerLevelsContent {
  ban?: number;
  kick?: number;
  invite?: number;
  redact?: number;
  events_default?: number;
  state_default?: number;
  users_default?: number;
  events?: Record<string, number>;
  users?: Record<string, number>;
  notifications?: Record<string, number>;
}

/**
 * Interprets a power level value. Without a version it is as lenient as any room version allows;
 * with one it applies that version's rules (v10+: integers only; v6+: no floats; v1-v9: strings
 * like " +100 " allowed). Returns undefined for values that are not a valid power level.
 */
export function toPowerLevel(value: unknown, version?: RoomVersion): number | undefined {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value)) return value === 0 ? 0 : value; // normalise -0
    if (!Number.isFinite(value) || version?.strictCanonicalJson) return undefined;
    return Math.trunc(value) || 0; // v1-v5 "floaty" power levels truncate at the decimal point
  }
  if (typeof value === 'string' && !version?.strictIntegerPowerLevels) {
    if (!/^\s*[+-]?[0-9]+\s*$/.test(value)) return undefined;
    const n = Number(value.trim());
    return Number.isSafeInteger(n) ? n || 0 : undefined;
  }
  return undefined;
}

function mapEntry(map: unknown, key: string): unknown {
  if (map === null || typeof map !== 'object' || !Object.hasOwn(map, key)) return undefined;
  return (map as Record<string, unknown>)[key];
}

/** v12+: the power level of a room creator, higher than any integer a power levels event holds. */
export const CREATOR_POWER_LEVEL = Number.POSITIVE_INFINITY;

/**
 * The room's creators: from v12 the create event's `sender` plus the valid user IDs in
 * `content.additional_creators`; before, the one creator (`sender` from v11, `content.creator`
 * before that).
 */
export function roomCreators(createEvent: { sender: string; content: Record<string, unknown> }, version: RoomVersion): string[] {
  if (!version.implicitRoomCreator) return typeof createEvent.content.creator === 'string' ? [createEvent.content.creator] : [];
  const out = [createEvent.sender];
  const extra = version.creatorsHaveInfinitePower ? createEvent.content.additional_creators : undefined;
  if (Array.isArray(extra)) for (const u of extra) if (typeof u === 'string' && !out.includes(u)) out.push(u);
  return out;
}

/**
 * The user's power level. From v12 the room's creators have CREATOR_POWER_LEVEL (Infinity: callers
 * that put a level in JSON must handle it). With no power levels event the room creator has 100 and everyone else
 * 0. The creator is `content.creator` before v11 and the create event's `sender` from v11; pass
 * `version` to get this exactly (without it, `content.creator` is used when present).
 */
export function userLevel(
  pl: PowerLevelsContent | undefined,
  userId: string,
  createEvent?: { sender: string; content: Record<string, unknown> },
  version?: RoomVersion,
): number {
  if (version?.creatorsHaveInfinitePower && createEvent && roomCreators(createEvent, version).includes(userId)) return CREATOR_POWER_LEVEL;
  if (pl) {
    return toPowerLevel(mapEntry(pl.users, userId)) ?? toPowerLevel(pl.users_default) ?? 0;
  }
  if (!createEvent) return 0;
  const creator =
    version?.implicitRoomCreator || (!version && typeof createEvent.content.creator !== 'string')
      ? createEvent.sender
      : createEvent.content.creator;
  return creator === userId ? 100 : 0;
}

/** The "required power level" for sending an event of this type (state_default is 50 and
 *  events_default 0, whether or not a power levels event exists). */
export function requiredLevelForEvent(pl: PowerLevelsContent | undefined, type: string, isState: boolean): number {
  const explicit = toPowerLevel(mapEntry(pl?.events, type));
  if (explicit !== undefined) return explicit;
  return isState ? (toPowerLevel(pl?.state_default) ?? 50) : (toPowerLevel(pl?.events_default) ?? 0);
}

/** Invite defaults to 0; kick, ban and redact to 50. */
export function actionLevel(pl: PowerLevelsContent | undefined, action: 'ban' | 'kick' | 'invite' | 'redact'): number {
  return toPowerLevel(pl?.[action]) ?? (action === 'invite' ? 0 : 50);
}

/** Synapse's power levels for a new room. `invite` is 50 like Synapse's base default; callers
 *  apply presets (Synapse's private_chat preset overrides it to 0). v1-v11 all get the same
 *  content; v12 does not list the creator in `users`. */
export function defaultPowerLevels(creator: string, version: RoomVersion): PowerLevelsContent {
  return {
    // v12: creators have infinite power and must not be listed (auth rule 10.4).
    users: version.creatorsHaveInfinitePower ? {} : { [creator]: 100 },
    users_default: 0,
    events: {
      'm.room.name': 50,
      'm.room.power_levels': 100,
      'm.room.history_visibility': 100,
      'm.room.canonical_alias': 50,
      'm.room.avatar': 50,
      // v12: above every admin (spec createRoom: explicitly higher than state_default; Synapse 150).
      'm.room.tombstone': version.creatorsHaveInfinitePower ? 150 : 100,
      'm.room.server_acl': 100,
      'm.room.encryption': 100,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: 50,
    notifications: { room: 50 },
  };
}
