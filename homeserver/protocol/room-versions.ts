// Room versions 1..12 (spec content/rooms/v1.md .. v12.md). Each flag names one behaviour that
// changed between versions, so algorithms branch on the behaviour rather than on version numbers.
// ROOM_VERSIONS (1-12) are the versions the server knows; which of them it offers to create rooms
// with is isSupportedVersion's business (rooms/service.ts).

export interface RoomVersion {
  id: string;
  /** v1: server-assigned `$opaque:domain`; v3: reference hash, standard base64; v4: URL-safe base64. */
  eventIdFormat: 'v1' | 'v3' | 'v4';
  /** v1 uses the original state resolution algorithm, v2-v11 the "v2" algorithm, v12 its
   *  revision ("v2.1": iterative auth checks start from an empty map; conflicted state subgraph). */
  stateResolution: 'v1' | 'v2' | 'v2.1';
  /** v5+: a signing key's valid_until_ts must cover the event's origin_server_ts. */
  enforceKeyValidity: boolean;
  /** v1-v5: m.room.aliases has its own auth rule and keeps `aliases` on redaction. */
  specialCaseAliasesAuth: boolean;
  /** v1-v2: m.room.redaction is checked against the redact level by the auth rules. */
  redactionAuthRule: boolean;
  /** v6+: events must be strict canonical JSON (in particular no float power levels). */
  strictCanonicalJson: boolean;
  /** v6+: changes to `notifications` in m.room.power_levels are power-checked like `events`. */
  limitNotificationsPowerLevels: boolean;
  /** v7+: `knock` join rule and membership. */
  knockJoinRule: boolean;
  /** v8+: `restricted` join rule (join_authorised_via_users_server); join_rules keeps `allow` on redaction. */
  restrictedJoinRule: boolean;
  /** v9+: the v8 fix - m.room.member keeps `join_authorised_via_users_server` on redaction. */
  restrictedJoinRuleFix: boolean;
  /** v10+: `knock_restricted` join rule. */
  knockRestrictedJoinRule: boolean;
  /** v10+: power level values must be real integers (no stringy values). */
  strictIntegerPowerLevels: boolean;
  /** v11+: the room creator is the create event's `sender`; `content.creator` is not required. */
  implicitRoomCreator: boolean;
  /** v11+: updated redaction rules (MSC2176/MSC3821/MSC3989). */
  updatedRedactionRules: boolean;
  /** v11+: m.room.redaction carries `redacts` in `content` instead of at top level. */
  redactsInContent: boolean;
  /** v12+: the room ID is the create event's ID with the `!` sigil; the create event has no
   *  `room_id` and is never listed in `auth_events` (it is implied by the room ID). */
  roomIdIsCreateEventHash: boolean;
  /** v12+: the creators (create `sender` plus `content.additional_creators`) have infinite power
   *  and may not appear in m.room.power_levels `users`. */
  creatorsHaveInfinitePower: boolean;
}

function make(id: string, n: number): RoomVersion {
  return {
    id,
    eventIdFormat: n <= 2 ? 'v1' : n === 3 ? 'v3' : 'v4',
    stateResolution: n === 1 ? 'v1' : n >= 12 ? 'v2.1' : 'v2',
    enforceKeyValidity: n >= 5,
    specialCaseAliasesAuth: n <= 5,
    redactionAuthRule: n <= 2,
    strictCanonicalJson: n >= 6,
    limitNotificationsPowerLevels: n >= 6,
    knockJoinRule: n >= 7,
    restrictedJoinRule: n >= 8,
    restrictedJoinRuleFix: n >= 9,
    knockRestrictedJoinRule: n >= 10,
    strictIntegerPowerLevels: n >= 10,
    implicitRoomCreator: n >= 11,
    updatedRedactionRules: n >= 11,
    redactsInContent: n >= 11,
    roomIdIsCreateEventHash: n >= 12,
    creatorsHaveInfinitePower: n >= 12,
  };
}

export const ROOM_VERSIONS: Readonly<Record<string, RoomVersion>> = Object.freeze(
  Object.fromEntries(
    Array.from({ length: 12 }, (_, i) => {
      const v = make(String(i + 1), i + 1);
      return [v.id, Object.freeze(v)];
    }),
  ),
);

/** Room version 12 (create-event-derived room IDs, creators with infinite power). */
export const ROOM_VERSION_12: RoomVersion = ROOM_VERSIONS['12']!;

/** Every version the protocol layer implements (1-12): the same as ROOM_VERSIONS. */
export const PROTOCOL_ROOM_VERSIONS: Readonly<Record<string, RoomVersion>> = ROOM_VERSIONS;

export const DEFAULT_ROOM_VERSION = '10';

export function getRoomVersion(id: string): RoomVersion | undefined {
  // hasOwn: ids like "constructor" must not resolve through the prototype chain.
  return Object.hasOwn(ROOM_VERSIONS, id) ? ROOM_VERSIONS[id] : undefined;
}

/** The same as getRoomVersion (kept for callers from when version 12 was protocol-only). */
export function getProtocolRoomVersion(id: string): RoomVersion | undefined {
  return Object.hasOwn(PROTOCOL_ROOM_VERSIONS, id) ? PROTOCOL_ROOM_VERSIONS[id] : undefined;
}

/** The version a create event's content names (`room_version`, "1" when absent), if known. */
export function versionOfCreate(create: { content: Record<string, unknown> } | undefined): RoomVersion | undefined {
  if (!create) return undefined;
  const v = create.content.room_version;
  return getRoomVersion(v === undefined ? '1' : typeof v === 'string' ? v : '');
}
