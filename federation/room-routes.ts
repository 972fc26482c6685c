// Inbound room endpoints of the server-server API (issue 11):
// GET  /_matrix/federation/v1/make_join/{roomId}/{userId}     a join template (?ver=…)
// PUT  /_matrix/federation/v2/send_join/{roomId}/{eventId}    a signed join: persisted, state + auth chain answered
// GET  /_matrix/federation/v1/make_leave/{roomId}/{userId}    a leave template
// PUT  /_matrix/federation/v2/send_leave/{roomId}/{eventId}   a signed leave: persisted
// GET  /_matrix/federation/v1/make_knock/{roomId}/{userId}    a knock template (?ver=…)
// PUT  /_matrix/federation/v1/send_knock/{roomId}/{eventId}   a signed knock: persisted, stripped state answered
// PUT  /_matrix/federation/v2/invite/{roomId}/{eventId}       an invite of our user: co-signed, stored out of band
// GET  /_matrix/federation/v1/state/{roomId}, state_ids       the state at an event (+ auth chain)
// GET  /_matrix/federation/v1/event/{eventId}                 one event
// GET  /_matrix/federation/v1/event_auth/{roomId}/{eventId}   an event's auth chain
// POST /_matrix/federation/v1/get_missing_events/{roomId}     prev events between earliest and latest
// GET  /_matrix/federation/v1/backfill/{roomId}               history before some events (?v ?limit)
// A server reads a room's events only while one of its users is in the room, and never through
// a room whose m.room.server_acl denies it.
import type { RouterContext } from '@koa/router';
import { z } from 'zod';
import type { Method, Routes } from '../homeserver/http/app.ts';
import { body } from '../homeserver/http/body.ts';
import { MatrixError, forbidden, notFound } from '../homeserver/http/errors.ts';
import { single } from '../homeserver/http/params.ts';
import { AuthError, authEventSelection, checkEventAuth, stateKey, type PDU, type StateMap } from '../homeserver/protocol/auth.ts';
import { isValidRoomId, isValidUserId, serverNameOf } from '../homeserver/protocol/identifiers.ts';
import { getRoomVersion, type RoomVersion } from '../homeserver/protocol/room-versions.ts';
import { signEvent } from '../homeserver/protocol/signing.ts';
import { eventIdsOf } from '../homeserver/rooms/dag.ts';
import type { RoomEngine } from '../homeserver/rooms/engine.ts';
import type { RoomReader } from '../homeserver/rooms/reader.ts';
import type { EventRow, RoomRow } from '../homeserver/rooms/reader.ts';
import { redactEvent } from '../homeserver/protocol/redaction.ts';
import type { ServerKeys } from '../homeserver/server/keys.ts';
import type { RequestAuthenticator } from './request-auth.ts';
import { federationPdu, pduOf, type RoomFederation } from './room-federation.ts';

const MAX_BACKFILL = 100;
const MAX_MISSING = 50;
const missingSchema = z.object({
  earliest_events: z.array(z.string()).max(100),
  latest_events: z.array(z.string()).min(1).max(100),
  limit: z.number().int().min(1).optional(),
  min_depth: z.number().int().optional(),
}).passthrough();
const inviteSchema = z.object({ room_version: z.string(), event: z.record(z.string(), z.unknown()), invite_room_state: z.array(z.unknown()).optional() }).passthrough();

export interface RoomRouteDeps {
  serverName: string;
  auth: RequestAuthenticator;
  rooms: RoomFederation;
  engine: RoomEngine;
  reader: RoomReader;
  serverKeys: ServerKeys;
  /** Queues a PDU for some servers (a join or leave received here goes on to the room's other servers). */
  forward(pdu: Record<string, unknown>, destinations: string[]): Promise<void>;
}

export function roomFederationRoutes(r: Routes, d: RoomRouteDeps): void {
  const fed = (method: Method, path: string, handler: (ctx: RouterContext, origin: string) => Promise<unknown>) =>
    r.raw(method, `/_matrix/federation${path}`, async (ctx) => handler(ctx, await d.auth.authenticate(ctx)), method === 'put' ? { maxBodyBytes: 1024 * 1024 } : {});

  /** The room (known here, with a user of ours in it), its version; the origin not denied by its ACL. */
  const roomFor = async (raw: string | undefined, origin: string): Promise<{ room: RoomRow; version: RoomVersion }> => {
    if (!raw || !isValidRoomId(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${raw}`);
    const room = await d.reader.roomMeta(raw);
    const version = room && getRoomVersion(room.room_version);
    if (!room || !version) throw notFound(`Unknown room ${raw}`);
    if (!(await d.rooms.allowedInRoom(raw, origin))) throw forbidden(`Server ${origin} is denied by the room's server ACL`);
    return { room, version };
  };
  /** The origin has a user joined to the room (it may read the room's events). */
  const requireParticipant = async (roomId: string, origin: string) => {
    const members = (await d.reader.roomMembersOf([roomId])).get(roomId) ?? [];
    if (!members.some((u) => serverNameOf(u) === origin)) throw forbidden(`Server ${origin} is not in room ${roomId}`);
  };
  const currentStateMap = async (room: RoomRow): Promise<StateMap> => {
    const rows = await d.reader.currentState(room.room_nid);
    return new Map(rows.map((row) => { const p = pduOf(row); return [stateKey(p.type, p.state_key ?? ''), p]; }));
  };
  const eventsById = async (ids: string[]): Promise<PDU[]> => (ids.length ? (await d.reader.eventsById(ids)).map(pduOf) : []);
  /** The auth chain of some events (their auth events, recursively). */
  const authChain = async (events: PDU[]): Promise<PDU[]> => {
    const seen = new Map<string, PDU>();
    let next = [...new Set(events.flatMap((e) => eventIdsOf(e.auth_events)))];
    while (next.length) {
      const found = await eventsById(next.filter((id) => !seen.has(id)));
      for (const e of found) seen.set(e.event_id!, e);
      next = [...new Set(found.flatMap((e) => eventIdsOf(e.auth_events)))].filter((id) => !seen.has(id));
    }
    return [...seen.values()];
  };
  const stateAt = async (roomId: string, eventId: string | undefined): Promise<{ state: PDU[]; at: PDU }> => {
    if (!eventId) throw new MatrixError(400, 'M_MISSING_PARAM', 'event_id is required');
    const row = await d.reader.eventById(eventId);
    if (!row || row.room_id !== roomId) throw notFound(`Unknown event ${eventId}`);
    return { state: (await d.reader.stateOfGroup(row.state_before)).map(pduOf), at: pduOf(row) };
  };

  const makeTemplate = async (ctx: RouterContext, origin: string, membership: 'join' | 'leave' | 'knock') => {
    const { room, version } = await roomFor(ctx.params.roomId, origin);
    const userId = ctx.params.userId!;
    if (!isValidUserId(userId) || serverNameOf(userId) !== origin) throw forbidden(`${userId} is not a user of ${origin}`);
    if (membership === 'knock' && !version.knockJoinRule) throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', `Room version ${room.room_version} does not support knocking`, { room_version: room.room_version });
    if (membership !== 'leave') {
      const vers = [ctx.query.ver].flat().filter((v): v is string => typeof v === 'string');
      if (!vers.includes(room.room_version) && !(vers.length === 0 && room.room_version === '1')) {
        throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', `The room's version ${room.room_version} is not one the server supports`, { room_version: room.room_version });
      }
    }
    const head = await d.reader.head(room.room_id);
    if (!head) throw notFound(`Unknown room ${room.room_id}`);
    const state = await currentStateMap(room);
    const event: Record<string, unknown> = {
      type: 'm.room.member', room_id: room.room_id, sender: userId, state_key: userId, content: { membership },
      origin_server_ts: Date.now(), depth: head.depth + 1, prev_events: head.extremities.slice(0, 20),
    };
    const authIds = authEventSelection(event as PDU, version).map(([t, k]) => state.get(stateKey(t, k))?.event_id).filter((x): x is string => !!x);
    event.auth_events = authIds;
    if (version.eventIdFormat === 'v1') {
      const refs = await eventsById([...authIds, ...head.extremities.slice(0, 20)]);
      const ref = (id: string) => [id, (refs.find((e) => e.event_id === id)?.hashes ?? {})];
      event.auth_events = authIds.map(ref);
      event.prev_events = head.extremities.slice(0, 20).map(ref);
    }
    try {
      checkEventAuth({ ...(event as PDU), event_id: '$template' }, state, version);
    } catch (err) {
      if (err instanceof AuthError) throw forbidden(`You are not allowed to ${membership} this room: ${err.message}`);
      throw err;
    }
    return { event, room_version: room.room_version };
  };

  const sendMembership = async (ctx: RouterContext, origin: string, membership: 'join' | 'leave' | 'knock') => {
    const { room, version } = await roomFor(ctx.params.roomId, origin);
    const raw = body(ctx, z.record(z.string(), z.unknown()));
    const checked = await d.rooms.checkPdu(raw, version);
    if ('error' in checked) throw new MatrixError(400, 'M_BAD_JSON', checked.error);
    const pdu = checked.pdu;
    if (checked.eventId !== ctx.params.eventId) throw new MatrixError(400, 'M_INVALID_PARAM', 'The event ID does not match the event');
    if (pdu.room_id !== room.room_id || pdu.type !== 'm.room.member' || pdu.state_key !== pdu.sender || pdu.content?.membership !== membership) {
      throw new MatrixError(400, 'M_BAD_JSON', `Not a ${membership} of the room by its sender`);
    }
    if (serverNameOf(pdu.sender) !== origin) throw forbidden(`${pdu.sender} is not a user of ${origin}`);
    const results = await d.engine.persistAuthorised(room.room_id, [pdu]);
    const res = results.find((x) => x.eventId === checked.eventId);
    if (res?.outcome !== 'accepted' && res?.outcome !== 'duplicate') throw forbidden(`The ${membership} was ${res?.outcome ?? 'not stored'}${res?.reason ? `: ${res.reason}` : ''}`);
    // The resident server tells the room's other servers of the new member (or the leave).
    if (res.outcome === 'accepted') {
      const servers = new Set(((await d.reader.roomMembersOf([room.room_id])).get(room.room_id) ?? []).map(serverNameOf));
      servers.delete(d.serverName);
      servers.delete(origin);
      if (servers.size) await d.forward(federationPdu(pdu, version), [...servers]);
    }
    if (membership === 'leave') return {};
    if (membership === 'knock') return { knock_room_state: await d.rooms.strippedState(room.room_nid, version, pdu.sender) };
    const { state } = await stateAt(room.room_id, checked.eventId);
    const chain = await authChain([...state, pdu]);
    const members = (await d.reader.roomMembersOf([room.room_id])).get(room.room_id) ?? [];
    return {
      origin: d.serverName,
      state: state.map((e) => federationPdu(e, version)),
      auth_chain: chain.map((e) => federationPdu(e, version)),
      event: federationPdu(pdu, version),
      members_omitted: false,
      servers_in_room: [...new Set(members.map(serverNameOf))],
    };
  };

  fed('get', '/v1/make_join/:roomId/:userId', (ctx, origin) => makeTemplate(ctx, origin, 'join'));
  fed('get', '/v1/make_leave/:roomId/:userId', (ctx, origin) => makeTemplate(ctx, origin, 'leave'));
  fed('put', '/v2/send_join/:roomId/:eventId', (ctx, origin) => sendMembership(ctx, origin, 'join'));
  fed('put', '/v2/send_leave/:roomId/:eventId', (ctx, origin) => sendMembership(ctx, origin, 'leave'));
  fed('get', '/v1/make_knock/:roomId/:userId', (ctx, origin) => makeTemplate(ctx, origin, 'knock'));
  fed('put', '/v1/send_knock/:roomId/:eventId', (ctx, origin) => sendMembership(ctx, origin, 'knock'));

  fed('put', '/v2/invite/:roomId/:eventId', async (ctx, origin) => {
    const b = body(ctx, inviteSchema);
    const version = getRoomVersion(b.room_version);
    if (!version) throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', `Unsupported room version ${b.room_version}`, { room_version: b.room_version });
    const roomId = ctx.params.roomId!;
    if (!isValidRoomId(roomId)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${roomId}`);
    const checked = await d.rooms.checkPdu(b.event, version);
    // Spec: each of these is M_INVALID_PARAM (nothing of another server's is signed unchecked).
    if ('error' in checked) throw new MatrixError(400, 'M_INVALID_PARAM', checked.error);
    const pdu = checked.pdu;
    if (checked.eventId !== ctx.params.eventId || pdu.room_id !== roomId) throw new MatrixError(400, 'M_INVALID_PARAM', 'The event ID or room ID does not match the event');
    if (pdu.type !== 'm.room.member' || pdu.content?.membership !== 'invite' || typeof pdu.state_key !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', 'Not an invite');
    if (!isValidUserId(pdu.state_key) || serverNameOf(pdu.state_key) !== d.serverName) throw new MatrixError(400, 'M_INVALID_PARAM', `${pdu.state_key} is not a user of this server`);
    if (serverNameOf(pdu.sender) !== origin) throw new MatrixError(400, 'M_INVALID_PARAM', `${pdu.sender} is not a user of ${origin}`);
    if (!(await d.rooms.allowedInRoom(roomId, origin))) throw forbidden(`Server ${origin} is denied by the room's server ACL`);
    // Co-signed as the invitee's server (the hash and so the event ID stay the same).
    const { event_id: _id, ...unsignedByUs } = pdu as PDU & Record<string, unknown>;
    const signed = signEvent({ ...unsignedByUs }, d.serverName, d.serverKeys.current, version) as unknown as PDU;
    const stored = { ...signed, event_id: checked.eventId, unsigned: { invite_room_state: b.invite_room_state ?? [] } } as PDU;
    const room = await d.reader.roomMeta(roomId);
    const inRoom = room && ((await d.reader.roomMembersOf([roomId])).get(roomId) ?? []).some((u) => serverNameOf(u) === d.serverName);
    const results = await d.engine.persistAuthorised(roomId, [stored], inRoom ? {} : { outOfBand: true, roomVersion: version.id });
    const res = results.find((x) => x.eventId === checked.eventId);
    if (res?.outcome === 'rejected') throw forbidden(`The invite was rejected${res.reason ? `: ${res.reason}` : ''}`);
    return { event: federationPdu(signed, version) };
  });

  fed('get', '/v1/state_ids/:roomId', async (ctx, origin) => {
    const { room } = await roomFor(ctx.params.roomId, origin);
    await requireParticipant(room.room_id, origin);
    const { state, at } = await stateAt(room.room_id, single(ctx, 'event_id'));
    const chain = await authChain([...state, at]);
    return { pdu_ids: state.map((e) => e.event_id), auth_chain_ids: chain.map((e) => e.event_id) };
  });
  fed('get', '/v1/state/:roomId', async (ctx, origin) => {
    const { room, version } = await roomFor(ctx.params.roomId, origin);
    await requireParticipant(room.room_id, origin);
    const { state, at } = await stateAt(room.room_id, single(ctx, 'event_id'));
    const chain = await authChain([...state, at]);
    return { pdus: state.map((e) => federationPdu(e, version)), auth_chain: chain.map((e) => federationPdu(e, version)) };
  });
  fed('get', '/v1/event/:eventId', async (ctx, origin) => {
    const row = await d.reader.eventById(ctx.params.eventId!);
    if (!row) throw notFound('Unknown event');
    const { version } = await roomFor(row.room_id, origin);
    await requireParticipant(row.room_id, origin);
    return { origin: d.serverName, origin_server_ts: Date.now(), pdus: await forServer(origin, [row], version) };
  });
  fed('get', '/v1/event_auth/:roomId/:eventId', async (ctx, origin) => {
    const { room, version } = await roomFor(ctx.params.roomId, origin);
    await requireParticipant(room.room_id, origin);
    const [at] = await eventsById([ctx.params.eventId!]);
    if (!at || at.room_id !== room.room_id) throw notFound('Unknown event');
    return { auth_chain: (await authChain([at])).map((e) => federationPdu(e, version)) };
  });

  /** Walks prev events from `from` (newest first by depth), stopping at `stop`, at most `limit`. */
  const walkBack = async (from: string[], stop: Set<string>, limit: number, minDepth: number, includeFrom: boolean): Promise<EventRow[]> => {
    const out = new Map<string, EventRow>();
    const seen = new Set<string>([...stop]);
    const depthOf = (e: EventRow) => Number(e.depth);
    let frontier = from.length ? await d.reader.eventsById(from) : [];
    if (includeFrom) for (const e of frontier) if (out.size < limit) out.set(e.event_id, e);
    for (const e of frontier) seen.add(e.event_id);
    while (frontier.length && out.size < limit) {
      const ids = [...new Set(frontier.flatMap((e) => eventIdsOf(pduOf(e).prev_events)))].filter((id) => !seen.has(id));
      for (const id of ids) seen.add(id);
      const found = (ids.length ? await d.reader.eventsById(ids) : []).filter((e) => depthOf(e) >= minDepth).sort((a, b) => depthOf(b) - depthOf(a));
      for (const e of found) if (out.size < limit) out.set(e.event_id, e);
      frontier = found;
    }
    return [...out.values()];
  };

  /**
   * What a server may read of some events (Synapse's filter_events_for_server): by the history
   * visibility in the state before each event, `joined` (`invited`) history only while one of its
   * users was joined (or invited) then; other events go redacted (the DAG stays whole).
   */
  const forServer = async (origin: string, rows: EventRow[], version: RoomVersion): Promise<Record<string, unknown>[]> => {
    const byGroup = new Map<number, { visibility: string; memberships: Set<string> }>();
    const out: Record<string, unknown>[] = [];
    for (const row of rows) {
      let seen = byGroup.get(row.state_before);
      if (!seen) {
        const state = row.state_before > 0 ? await d.reader.stateOfGroup(row.state_before) : [];
        const hv = state.find((e) => e.type === 'm.room.history_visibility');
        const visibility = hv ? String((JSON.parse(hv.json) as PDU).content?.history_visibility ?? 'shared') : 'shared';
        const memberships = new Set(state.filter((e) => e.type === 'm.room.member' && e.state_key !== null && serverNameOf(e.state_key) === origin).map((e) => e.membership ?? ''));
        seen = { visibility, memberships };
        byGroup.set(row.state_before, seen);
      }
      const visible = seen.visibility === 'joined' ? seen.memberships.has('join')
        : seen.visibility === 'invited' ? seen.memberships.has('join') || seen.memberships.has('invite')
        : true;
      const pdu = federationPdu(pduOf(row), version);
      out.push(visible ? pdu : redactEvent(pdu, version));
    }
    return out;
  };

  fed('post', '/v1/get_missing_events/:roomId', async (ctx, origin) => {
    const { room, version } = await roomFor(ctx.params.roomId, origin);
    await requireParticipant(room.room_id, origin);
    const b = body(ctx, missingSchema);
    const rows = await walkBack(b.latest_events, new Set(b.earliest_events), Math.min(b.limit ?? 10, MAX_MISSING), b.min_depth ?? 0, false);
    const ordered = rows.filter((e) => e.room_id === room.room_id).sort((a, c) => Number(a.depth) - Number(c.depth));
    return { events: await forServer(origin, ordered, version) };
  });

  fed('get', '/v1/backfill/:roomId', async (ctx, origin) => {
    const { room, version } = await roomFor(ctx.params.roomId, origin);
    await requireParticipant(room.room_id, origin);
    const from = [ctx.query.v].flat().filter((v): v is string => typeof v === 'string');
    if (!from.length) throw new MatrixError(400, 'M_MISSING_PARAM', 'v is required');
    const rawLimit = single(ctx, 'limit') ?? '10';
    if (!/^\d+$/.test(rawLimit)) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be a whole number');
    const rows = await walkBack(from, new Set(), Math.min(Math.max(Number(rawLimit), 1), MAX_BACKFILL), 0, true);
    return { origin: d.serverName, origin_server_ts: Date.now(), pdus: await forServer(origin, rows.filter((e) => e.room_id === room.room_id), version) };
  });
}
