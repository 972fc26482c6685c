// Event authorisation rules for room versions 1-12 (rooms/fragments/v1-auth-rules.md,
// v3-auth-rules.md, v8-auth-rules.md, rooms/v6,v7,v10,v11,v12.md) and the auth events selection
// algorithm (server-server-api.md "Auth events selection"). Rule numbers below follow v10/v11;
// v12 inserts a rule 2 (the room ID is the create event's ID), shifting the later ones by one.
import type { RoomVersion } from './room-versions.ts';
import { getProtocolRoomVersion } from './room-versions.ts';
import { serverNameOf, isValidUserId } from './identifiers.ts';
import { actionLevel, requiredLevelForEvent, roomCreators, toPowerLevel, userLevel, type PowerLevelsContent } from './power-levels.ts';
import { verifyJsonSignature } from './signing.ts';

export type PDU = {
  event_id?: string;
  room_id: string;
  sender: string;
  type: string;
  state_key?: string;
  content: Record<string, any>;
  origin_server_ts: number;
  prev_events?: string[];
  auth_events?: string[];
  depth?: number;
  hashes?: unknown;
  signatures?: unknown;
  unsigned?: unknown;
  redacts?: string;
};

export type StateMap = Map<string, PDU>;

export function stateKey(type: string, stateKey: string): string {
  // NUL separates the parts; keys could only collide for an event type containing NUL.
  return `${type}\u0000${stateKey}`;
}

/** Builds a StateMap from state events, e.g. an event's auth_events. */
export function stateMapFromEvents(events: Iterable<PDU>): StateMap {
  const map: StateMap = new Map();
  for (const ev of events) if (ev.state_key !== undefined) map.set(stateKey(ev.type, ev.state_key), ev);
  return map;
}

export class AuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthError';
  }
}

function deny(message: string): never {
  throw new AuthError(message);
}

function isObject(v: unknown): v is Record<string, any> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Room versions 1 and 2 may carry prev_events as [event_id, hashes] pairs; we only need the IDs. */
function eventIdsOf(refs: unknown): string[] {
  if (!Array.isArray(refs)) return [];
  return refs.map((r) => (Array.isArray(r) ? r[0] : r)).filter((r): r is string => typeof r === 'string');
}

function creatorOf(create: PDU, version: RoomVersion): unknown {
  return version.implicitRoomCreator ? create.sender : create.content?.creator;
}

export function authEventSelection(
  event: { type: string; sender: string; state_key?: string; content: Record<string, any> },
  version: RoomVersion,
): Array<[string, string]> {
  if (event.type === 'm.room.create') return [];
  // v1-v11 select the create event; from v12 the room ID implies it and it must not be selected.
  const out: Array<[string, string]> = version.roomIdIsCreateEventHash ? [] : [['m.room.create', '']];
  out.push(['m.room.power_levels', ''], ['m.room.member', event.sender]);
  if (event.type === 'm.room.member' && typeof event.state_key === 'string') {
    const content = isObject(event.content) ? event.content : {};
    const membership = content.membership;
    out.push(['m.room.member', event.state_key]);
    if (membership === 'join' || membership === 'invite' || membership === 'knock') out.push(['m.room.join_rules', '']);
    const token = content.third_party_invite?.signed?.token;
    if (membership === 'invite' && typeof token === 'string') out.push(['m.room.third_party_invite', token]);
    const via = content.join_authorised_via_users_server;
    if (membership === 'join' && version.restrictedJoinRule && typeof via === 'string') out.push(['m.room.member', via]);
  }
  const seen = new Set<string>();
  return out.filter(([t, s]) => {
    const k = stateKey(t, s);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * Rule 2 for an event's own auth_events (as fetched): no duplicate (type, state_key), nothing the
 * selection algorithm would not pick, a create event present, all in the event's room. Rule 2.3
 * (auth events that were themselves rejected) needs storage and is left to the caller.
 */
export function checkAuthEventList(event: PDU, authEvents: PDU[], version: RoomVersion): void {
  if (event.type === 'm.room.create') return; // rule 1 decides create events before rule 2
  const selectable = new Set(authEventSelection(event, version).map(([t, s]) => stateKey(t, s)));
  const seen = new Set<string>();
  for (const ae of authEvents) {
    if (ae.state_key === undefined) deny(`auth event ${ae.event_id ?? ae.type} is not a state event`);
    const k = stateKey(ae.type, ae.state_key);
    if (seen.has(k)) deny(`duplicate auth event for (${ae.type}, ${JSON.stringify(ae.state_key)})`);
    seen.add(k);
    if (!selectable.has(k)) deny(`auth event (${ae.type}, ${JSON.stringify(ae.state_key)}) is not one the selection algorithm picks`);
    if (ae.room_id !== event.room_id) deny(`auth event ${ae.event_id ?? ae.type} is from room ${ae.room_id}, not ${event.room_id}`);
  }
  if (!version.roomIdIsCreateEventHash && !seen.has(stateKey('m.room.create', ''))) deny('auth events contain no m.room.create event');
}

/** v12+: the room ID of a room whose create event has this event ID (`$hash` → `!hash`). */
export function roomIdFromCreateEventId(createEventId: string): string {
  if (!createEventId.startsWith('$')) throw new Error(`not an event ID: ${createEventId}`);
  return `!${createEventId.slice(1)}`;
}

/** v12+: the event ID of the create event of a room (`!hash` → `$hash`). */
export function createEventIdFromRoomId(roomId: string): string {
  if (!roomId.startsWith('!')) throw new Error(`not a room ID: ${roomId}`);
  return `$${roomId.slice(1)}`;
}

/**
 * Throws AuthError unless `event` is allowed against `authState` (the state before the event, or
 * the state formed by its auth_events). From v12 the create event is not among an event's
 * auth_events: the caller puts the room's accepted create event (the one createEventIdFromRoomId
 * names) into `authState` all the same. Signature checks, including rule 4.2 (the event must be
 * signed by the server of join_authorised_via_users_server), happen elsewhere; rule 2's checks on
 * the auth_events list itself are in checkAuthEventList.
 */
export function checkEventAuth(event: PDU, authState: StateMap, version: RoomVersion): void {
  const content: Record<string, any> = isObject(event.content) ? event.content : {};

  // Rule 1: m.room.create.
  if (event.type === 'm.room.create') {
    if ((event.prev_events?.length ?? 0) > 0) deny('m.room.create must not have prev_events');
    if (version.roomIdIsCreateEventHash) {
      // v12 rule 1.2: the create event has no room_id (it is derived from the event's ID). A
      // stored copy may carry that derived ID, which the event's own hash can never produce.
      const own = typeof event.event_id === 'string' && event.event_id.startsWith('$') ? roomIdFromCreateEventId(event.event_id) : undefined;
      if (event.room_id !== undefined && event.room_id !== own) deny('m.room.create must not have a room_id');
    } else if (serverNameOf(event.room_id) !== serverNameOf(event.sender)) {
      deny('m.room.create sender is not on the room ID\'s server');
    }
    if (content.room_version !== undefined && (typeof content.room_version !== 'string' || !getProtocolRoomVersion(content.room_version))) {
      deny(`unknown room version ${JSON.stringify(content.room_version)}`);
    }
    if (version.creatorsHaveInfinitePower && Object.hasOwn(content, 'additional_creators')) {
      const extra = content.additional_creators;
      if (!Array.isArray(extra) || !extra.every((u) => typeof u === 'string' && isValidUserId(u))) {
        deny('m.room.create additional_creators must be an array of valid user IDs'); // v12 rule 1.4
      }
    }
    if (!version.implicitRoomCreator && !Object.hasOwn(content, 'creator')) deny('m.room.create has no creator');
    return;
  }

  // Every auth event consulted must belong to this room (rule 2.5). From v12 the create event has
  // no room_id: the room ID must be the create event's ID instead (v12 rule 2).
  const get = (type: string, sk: string): PDU | undefined => {
    const ev = authState.get(stateKey(type, sk));
    if (!ev) return undefined;
    if (version.roomIdIsCreateEventHash && type === 'm.room.create') {
      if (typeof ev.event_id !== 'string' || !ev.event_id.startsWith('$') || roomIdFromCreateEventId(ev.event_id) !== event.room_id) {
        deny(`room ID ${event.room_id} is not derived from the create event ${ev.event_id ?? '(no id)'}`);
      }
    } else if (ev.room_id !== event.room_id) {
      deny(`auth event (${type}, ${JSON.stringify(sk)}) is from another room`);
    }
    return ev;
  };
  const create = get('m.room.create', '') ?? deny('no m.room.create event in the auth state'); // rule 2.4

  // Rule 3: m.federate = false keeps other servers out.
  if (create.content?.['m.federate'] === false && serverNameOf(event.sender) !== serverNameOf(create.sender)) {
    deny('room is not federated and the sender is on another server');
  }

  // v1-v5 rule 4: aliases are controlled by the server named in the state_key, member or not.
  if (version.specialCaseAliasesAuth && event.type === 'm.room.aliases') {
    if (event.state_key === undefined) deny('m.room.aliases needs a state_key');
    if (event.state_key !== serverNameOf(event.sender)) deny('m.room.aliases state_key must be the sender\'s server');
    return;
  }

  const pl = get('m.room.power_levels', '')?.content as PowerLevelsContent | undefined;
  const levelOf = (user: string): number => userLevel(pl, user, create, version);
  const membershipOf = (user: string): string => {
    const m = get('m.room.member', user)?.content?.membership;
    return typeof m === 'string' ? m : 'leave';
  };
  const senderLevel = levelOf(event.sender);

  if (event.type === 'm.room.member') {
    checkMembership(event, content, version, { get, create, pl, levelOf, membershipOf });
    return;
  }

  // Rule 5.
  if (membershipOf(event.sender) !== 'join') deny(`${event.sender} is not joined to the room`);

  // Rule 6.
  if (event.type === 'm.room.third_party_invite') {
    if (senderLevel >= actionLevel(pl, 'invite')) return;
    deny(`${event.sender} (power ${senderLevel}) may not invite (needs ${actionLevel(pl, 'invite')})`);
  }

  // Rule 7.
  const required = requiredLevelForEvent(pl, event.type, event.state_key !== undefined);
  if (required > senderLevel) deny(`${event.sender} (power ${senderLevel}) may not send ${event.type} (needs ${required})`);

  // Rule 8: state keyed by a user ID may only be set by that user.
  if (event.state_key?.startsWith('@') && event.state_key !== event.sender) {
    deny(`${event.sender} may not set state keyed by another user (${event.state_key})`);
  }

  // Rule 9.
  if (event.type === 'm.room.power_levels') {
    checkPowerLevels(event, content, pl, senderLevel, version, create);
    return;
  }

  // v1-v2 rule 11: redactions need the redact level, or to come from the redacted event's server.
  if (version.redactionAuthRule && event.type === 'm.room.redaction') {
    if (senderLevel >= actionLevel(pl, 'redact')) return;
    const redacts = redactsOf(event, version);
    if (redacts !== undefined && typeof event.event_id === 'string' && serverNameOf(redacts) === serverNameOf(event.event_id)) return;
    deny(`${event.sender} may not redact events from another server (needs power ${actionLevel(pl, 'redact')})`);
  }
}

/** The event an m.room.redaction redacts: `content.redacts` from v11, the top-level `redacts` before. */
export function redactsOf(event: { type: string; content?: unknown; redacts?: unknown }, version: RoomVersion): string | undefined {
  if (event.type !== 'm.room.redaction') return undefined;
  const redacts = version.redactsInContent ? (isObject(event.content) ? event.content.redacts : undefined) : event.redacts;
  return typeof redacts === 'string' ? redacts : undefined;
}

/**
 * The redaction check a server applies to its own users' redactions (client-server "Redactions";
 * from v3 the auth rules leave it to the server): the sender must have the `redact` power level,
 * unless the redacted event is their own. `targetSender` is the sender of the event `redactsOf`
 * names (undefined when that event is unknown or in another room: then only the redact level
 * allows it). The same for every room version, wherever `redacts` is.
 */
export function checkRedaction(event: PDU, authState: StateMap, version: RoomVersion, targetSender: string | undefined): void {
  if (event.type !== 'm.room.redaction') return;
  const create = authState.get(stateKey('m.room.create', '')) ?? deny('no m.room.create event in the auth state');
  const pl = authState.get(stateKey('m.room.power_levels', ''))?.content as PowerLevelsContent | undefined;
  if (targetSender !== undefined && targetSender === event.sender) return;
  const level = userLevel(pl, event.sender, create, version);
  const needed = actionLevel(pl, 'redact');
  if (level >= needed) return;
  deny(`${event.sender} (power ${level}) may not redact ${redactsOf(event, version) ?? 'events'} sent by ${targetSender ?? 'another user'} (needs ${needed})`);
}

interface MemberCtx {
  get: (type: string, sk: string) => PDU | undefined;
  create: PDU;
  pl: PowerLevelsContent | undefined;
  levelOf: (user: string) => number;
  membershipOf: (user: string) => string;
}

// Rule 4: m.room.member.
function checkMembership(event: PDU, content: Record<string, any>, version: RoomVersion, ctx: MemberCtx): void {
  const { get, create, pl, levelOf, membershipOf } = ctx;
  const target = event.state_key;
  const membership = content.membership;
  if (target === undefined || membership === undefined) deny('m.room.member needs a state_key and content.membership');
  const sender = event.sender;
  const senderMembership = membershipOf(sender);
  const targetMembership = membershipOf(target);
  // No join_rules event: treat as `invite`, like Synapse and Ruma (the spec leaves this unstated).
  const joinRules = get('m.room.join_rules', '')?.content?.join_rule;
  const joinRule: unknown = joinRules === undefined ? 'invite' : joinRules;

  switch (membership) {
    case 'join': {
      // The creator's own first join, straight after the create event.
      const prev = eventIdsOf(event.prev_events);
      if (prev.length === 1 && create.event_id !== undefined && prev[0] === create.event_id && target === creatorOf(create, version)) return;
      if (sender !== target) deny(`${sender} may not join on behalf of ${target}`);
      if (senderMembership === 'ban') deny(`${sender} is banned from the room`);
      if (joinRule === 'invite' || (version.knockJoinRule && joinRule === 'knock')) {
        if (targetMembership === 'invite' || targetMembership === 'join') return;
        deny(`${sender} needs an invite to join (join rule ${joinRule})`);
      }
      if ((version.restrictedJoinRule && joinRule === 'restricted') || (version.knockRestrictedJoinRule && joinRule === 'knock_restricted')) {
        if (targetMembership === 'invite' || targetMembership === 'join') return;
        const via = content.join_authorised_via_users_server;
        if (typeof via !== 'string') deny(`restricted join by ${sender} lacks join_authorised_via_users_server`);
        if (membershipOf(via) !== 'join') deny(`authorising user ${via} is not joined to the room`);
        if (levelOf(via) < actionLevel(pl, 'invite')) deny(`authorising user ${via} may not invite`);
        return;
      }
      if (joinRule === 'public') return;
      deny(`${sender} may not join: join rule is ${JSON.stringify(joinRule)}`);
    }
    case 'invite': {
      if (Object.hasOwn(content, 'third_party_invite')) {
        checkThirdPartyInvite(event, content, target, targetMembership, get);
        return;
      }
      if (senderMembership !== 'join') deny(`${sender} is not joined and so may not invite`);
      if (targetMembership === 'join' || targetMembership === 'ban') deny(`${target} cannot be invited (membership is ${targetMembership})`);
      if (levelOf(sender) >= actionLevel(pl, 'invite')) return;
      deny(`${sender} (power ${levelOf(sender)}) may not invite (needs ${actionLevel(pl, 'invite')})`);
    }
    case 'leave': {
      if (sender === target) {
        if (senderMembership === 'invite' || senderMembership === 'join' || (version.knockJoinRule && senderMembership === 'knock')) return;
        deny(`${sender} cannot leave (membership is ${senderMembership})`);
      }
      if (senderMembership !== 'join') deny(`${sender} is not joined and so may not kick or unban`);
      if (targetMembership === 'ban' && levelOf(sender) < actionLevel(pl, 'ban')) deny(`${sender} may not unban (needs power ${actionLevel(pl, 'ban')})`);
      if (levelOf(sender) >= actionLevel(pl, 'kick') && levelOf(target) < levelOf(sender)) return;
      deny(`${sender} (power ${levelOf(sender)}) may not kick ${target} (power ${levelOf(target)}, kick level ${actionLevel(pl, 'kick')})`);
    }
    case 'ban': {
      if (senderMembership !== 'join') deny(`${sender} is not joined and so may not ban`);
      if (levelOf(sender) >= actionLevel(pl, 'ban') && levelOf(target) < levelOf(sender)) return;
      deny(`${sender} (power ${levelOf(sender)}) may not ban ${target} (power ${levelOf(target)}, ban level ${actionLevel(pl, 'ban')})`);
    }
    case 'knock': {
      if (!version.knockJoinRule) deny(`knocking is not supported in room version ${version.id}`);
      if (!(joinRule === 'knock' || (version.knockRestrictedJoinRule && joinRule === 'knock_restricted'))) {
        deny(`room does not allow knocking (join rule ${JSON.stringify(joinRule)})`);
      }
      if (sender !== target) deny(`${sender} may not knock on behalf of ${target}`);
      if (senderMembership !== 'ban' && senderMembership !== 'invite' && senderMembership !== 'join') return;
      deny(`${sender} cannot knock (membership is ${senderMembership})`);
    }
    default:
      deny(`unknown membership ${JSON.stringify(membership)}`);
  }
}

// Rule 4.4.1: invites on behalf of a third-party identifier (m.room.third_party_invite).
function checkThirdPartyInvite(
  event: PDU,
  content: Record<string, any>,
  target: string,
  targetMembership: string,
  get: (type: string, sk: string) => PDU | undefined,
): void {
  if (targetMembership === 'ban') deny(`${target} is banned`);
  const signed = content.third_party_invite?.signed;
  if (!isObject(signed)) deny('third_party_invite has no signed object');
  if (typeof signed.mxid !== 'string' || typeof signed.token !== 'string') deny('third_party_invite.signed needs mxid and token');
  if (signed.mxid !== target) deny('third_party_invite.signed.mxid does not match the state_key');
  const tpi = get('m.room.third_party_invite', signed.token) ?? deny('no m.room.third_party_invite event matches the token');
  if (tpi.sender !== event.sender) deny('invite sender did not send the m.room.third_party_invite');
  const keys: string[] = [];
  if (typeof tpi.content?.public_key === 'string') keys.push(tpi.content.public_key);
  if (Array.isArray(tpi.content?.public_keys)) {
    for (const k of tpi.content.public_keys) if (typeof k?.public_key === 'string') keys.push(k.public_key);
  }
  const signatures = isObject(signed.signatures) ? signed.signatures : {};
  for (const [server, sigs] of Object.entries(signatures)) {
    if (!isObject(sigs)) continue;
    for (const keyId of Object.keys(sigs)) {
      if (keys.some((pk) => verifyJsonSignature(signed, server, keyId, pk))) return;
    }
  }
  deny('no signature in third_party_invite.signed matches the m.room.third_party_invite public keys');
}

const TOP_LEVEL_LEVELS = ['users_default', 'events_default', 'state_default', 'ban', 'redact', 'kick', 'invite'] as const;

// Rule 9: m.room.power_levels.
function checkPowerLevels(
  event: PDU,
  content: Record<string, any>,
  current: PowerLevelsContent | undefined,
  senderLevel: number,
  version: RoomVersion,
  create: PDU,
): void {
  // Shape checks (9.1-9.3). The version decides whether strings (v1-v9) or floats (v1-v5) pass.
  const valid = (v: unknown): boolean => toPowerLevel(v, version) !== undefined;
  for (const k of TOP_LEVEL_LEVELS) {
    if (Object.hasOwn(content, k) && !valid(content[k])) deny(`power levels: ${k} is not a valid power level`);
  }
  const maps = version.limitNotificationsPowerLevels ? (['events', 'notifications'] as const) : (['events'] as const);
  for (const k of maps) {
    if (Object.hasOwn(content, k) && !(isObject(content[k]) && Object.values(content[k]).every(valid))) {
      deny(`power levels: ${k} must be an object of valid power levels`);
    }
  }
  // An absent `users` is treated as {} (as Synapse and Ruma do); a present one must be well formed.
  if (Object.hasOwn(content, 'users')) {
    const users = content.users;
    if (!isObject(users)) deny('power levels: users must be an object');
    for (const [user, level] of Object.entries(users)) {
      if (!isValidUserId(user)) deny(`power levels: ${JSON.stringify(user)} is not a valid user ID`);
      if (!valid(level)) deny(`power levels: level for ${user} is not a valid power level`);
    }
  }

  // v12 rule 10.4: the creators' power is fixed and may not be listed.
  if (version.creatorsHaveInfinitePower && isObject(content.users)) {
    for (const creator of roomCreators(create, version)) {
      if (Object.hasOwn(content.users, creator)) deny(`power levels: room creator ${creator} may not be listed in users`);
    }
  }

  // 9.4: the first power levels event may set anything.
  if (!current) return;

  const num = (v: unknown): number | undefined => toPowerLevel(v);
  const entry = (map: unknown, key: string): unknown => (isObject(map) && Object.hasOwn(map, key) ? map[key] : undefined);
  const keysOf = (a: unknown, b: unknown): Set<string> => new Set([...Object.keys(isObject(a) ? a : {}), ...Object.keys(isObject(b) ? b : {})]);

  // 9.5-9.7: neither the old nor the new value of a changed level may exceed the sender's level.
  const checkChange = (what: string, oldV: unknown, newV: unknown): void => {
    const o = num(oldV);
    const n = num(newV);
    if (o === n) return;
    if (o !== undefined && o > senderLevel) deny(`power levels: cannot change ${what} from ${o}, above own level ${senderLevel}`);
    if (n !== undefined && n > senderLevel) deny(`power levels: cannot set ${what} to ${n}, above own level ${senderLevel}`);
  };
  const old = current as Record<string, unknown>;
  for (const k of TOP_LEVEL_LEVELS) checkChange(k, old[k], content[k]);
  for (const m of maps) {
    for (const key of keysOf(old[m], content[m])) checkChange(`${m}.${key}`, entry(old[m], key), entry(content[m], key));
  }

  // 9.8-9.9: other users at or above the sender's level are untouchable; nobody may be raised above it.
  for (const user of keysOf(old.users, content.users)) {
    const o = num(entry(old.users, user));
    const n = num(entry(content.users, user));
    if (o === n) continue;
    if (user !== event.sender && o !== undefined && o >= senderLevel) {
      deny(`power levels: cannot change the level of ${user} (${o}), which is not below own level ${senderLevel}`);
    }
    if (n !== undefined && n > senderLevel) deny(`power levels: cannot raise ${user} to ${n}, above own level ${senderLevel}`);
  }
}
