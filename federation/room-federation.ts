// The room half of federation (issue 11): received PDUs checked (signatures of the servers
// concerned, content hash) and handed to the room engine's persistAuthorised, with missing auth
// events (/event_auth) and prev events (/get_missing_events) fetched first; and what our users do
// in rooms of other servers: join (make_join → sign → send_join → persist state, auth chain, then
// the join), invite a remote user (/invite v2), leave a room known only by an invite (make_leave /
// send_leave). The room engine never imports this: it is plugged in with RoomService.remote and
// Federation.setPduIntake.
import type { Logger } from 'pino';
import { MatrixError } from '../homeserver/http/errors.ts';
import { AuthError, authEventSelection, checkEventAuth, stateKey, type PDU } from '../homeserver/protocol/auth.ts';
import { checkContentHash } from '../homeserver/protocol/hashes.ts';
import { isValidRoomAlias, isValidUserId, serverNameOf } from '../homeserver/protocol/identifiers.ts';
import { redactEvent } from '../homeserver/protocol/redaction.ts';
import { ROOM_VERSIONS, getRoomVersion, type RoomVersion } from '../homeserver/protocol/room-versions.ts';
import { finalizeEvent, verifyEventSignature } from '../homeserver/protocol/signing.ts';
import { generateV1EventId } from '../homeserver/protocol/hashes.ts';
import type { RoomEngine } from '../homeserver/rooms/engine.ts';
import { eventIdsOf, type AuthorisedResult } from '../homeserver/rooms/dag.ts';
import type { RoomReader } from '../homeserver/rooms/reader.ts';
import type { RemoteRooms } from '../homeserver/rooms/service.ts';
import type { ServerKeys } from '../homeserver/server/keys.ts';
import { FederationRequestError, type FederationClient } from './client.ts';
import type { KeyRing } from './key-ring.ts';
import { remoteEventId, type PduResults, type RemotePduIntake } from './remote-pdus.ts';
import { serverAllowedByAcl } from './server-acl.ts';

type Json = Record<string, unknown>;

/** Room versions we can join (sent as `ver` to make_join). */
const SUPPORTED_VERSIONS = Object.keys(ROOM_VERSIONS);
/** get_missing_events asks for at most this many events at a time (as Synapse). */
const MISSING_EVENTS_LIMIT = 10;
/** Rounds of get_missing_events for one gap before the state is asked for instead. */
const MISSING_EVENTS_ROUNDS = 5;
/** Events asked per /backfill request, and states fetched for one batch's oldest events at most. */
const BACKFILL_LIMIT = 100;
const MAX_STATE_FETCHES = 3;

export type CheckedPdu = { pdu: PDU; eventId: string; redacted: boolean };

/** A stored event (its JSON and id) as a PDU. */
export function pduOf(row: { json: string; event_id: string }): PDU {
  return { ...(JSON.parse(row.json) as PDU), event_id: row.event_id };
}

/** A PDU as sent over federation: no event_id from room version 3 on, no local unsigned data. */
export function federationPdu(pdu: PDU, version: RoomVersion): Json {
  const out: Json = { ...pdu };
  if (version.eventIdFormat !== 'v1') delete out.event_id;
  delete out.unsigned;
  return out;
}

export class RoomFederation implements RemotePduIntake, RemoteRooms {
  constructor(
    private client: FederationClient,
    private keyRing: KeyRing,
    private engine: RoomEngine,
    private reader: RoomReader,
    private serverName: string,
    private serverKeys: ServerKeys,
    private log: Logger,
  ) {}

  async versionOf(roomId: string): Promise<RoomVersion | undefined> {
    const room = await this.reader.roomMeta(roomId);
    return room ? getRoomVersion(room.room_version) : undefined;
  }

  /**
   * Signatures (the sender's server; for event ids of the v1 format, the server that named it too)
   * and content hash of a received PDU: a bad signature answers why; a bad hash gives the event
   * redacted (as the spec says: it is stored, its content is not trusted).
   */
  async checkPdu(raw: unknown, version: RoomVersion): Promise<CheckedPdu | { error: string; eventId?: string }> {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { error: 'A PDU must be an object' };
    const p = raw as Json;
    const eventId = remoteEventId(p, version);
    if (!eventId) return { error: 'The event ID cannot be computed' };
    if (typeof p.room_id !== 'string' || typeof p.type !== 'string' || typeof p.sender !== 'string' || !isValidUserId(p.sender)) return { error: 'Invalid PDU', eventId };
    if (typeof p.content !== 'object' || p.content === null || typeof p.origin_server_ts !== 'number') return { error: 'Invalid PDU', eventId };
    const servers = new Set([serverNameOf(p.sender)]);
    if (version.eventIdFormat === 'v1' && eventId.includes(':')) servers.add(eventId.slice(eventId.indexOf(':') + 1));
    const sigs = (typeof p.signatures === 'object' && p.signatures !== null ? p.signatures : {}) as Record<string, Record<string, string> | undefined>;
    for (const server of servers) {
      let ok = false;
      for (const keyId of Object.keys(sigs[server] ?? {})) {
        if (!keyId.startsWith('ed25519:')) continue;
        const key = await this.keyRing.publicKey(server, keyId, server === this.serverName ? Date.now() : p.origin_server_ts).catch(() => undefined);
        if (typeof key === 'string' && key !== 'expired' && verifyEventSignature(p, server, keyId, key, version)) { ok = true; break; }
      }
      if (!ok) return { error: `Event is not signed by ${server}`, eventId };
    }
    let pdu = p;
    let redacted = false;
    if (!checkContentHash(p)) {
      pdu = redactEvent(p, version);
      redacted = true;
    }
    // What the sending server put in `unsigned` is not covered by its signature: not kept.
    const { unsigned: _unsigned, ...signed } = pdu;
    return { pdu: { ...signed, event_id: eventId } as unknown as PDU, eventId, redacted };
  }

  /** The checked PDUs of a list (bad ones dropped, logged). */
  private async checkAll(raws: unknown[], version: RoomVersion, roomId: string): Promise<PDU[]> {
    const out = new Map<string, PDU>();
    for (const raw of raws) {
      const c = await this.checkPdu(raw, version);
      if ('error' in c) { this.log.info({ roomId, eventId: c.eventId, reason: c.error }, 'fetched PDU dropped'); continue; }
      if (c.pdu.room_id !== roomId) continue;
      out.set(c.eventId, c.pdu);
    }
    return [...out.values()].sort((a, b) => Number(a.depth ?? 0) - Number(b.depth ?? 0));
  }

  /**
   * /send: each PDU answered alone (one bad PDU never fails the others). The checked PDUs of a
   * room are persisted together, in the order given (one transaction); those that miss auth or
   * prev events then go one by one through the fetching path.
   */
  async receiveRemotePdus(origin: string, pdus: unknown[]): Promise<PduResults> {
    const out: PduResults = {};
    const byRoom = new Map<string, { version: RoomVersion; pdus: PDU[] }>();
    for (const raw of pdus) {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) continue;
      const roomId = (raw as Json).room_id;
      const version = typeof roomId === 'string' ? (byRoom.get(roomId)?.version ?? await this.versionOf(roomId).catch(() => undefined)) : undefined;
      if (typeof roomId !== 'string' || !version) {
        const id = remoteEventId(raw as Json, version);
        if (id) out[id] = { error: `Unknown room ${String(roomId)}` };
        continue;
      }
      const checked = await this.checkPdu(raw, version);
      if ('error' in checked) {
        if (checked.eventId) out[checked.eventId] = { error: checked.error };
        continue;
      }
      let group = byRoom.get(roomId);
      if (!group) byRoom.set(roomId, (group = { version, pdus: [] }));
      group.pdus.push(checked.pdu);
    }
    for (const [roomId, group] of byRoom) {
      if (!(await this.allowedInRoom(roomId, origin).catch(() => false))) {
        for (const p of group.pdus) out[p.event_id!] = { error: `Server ${origin} is denied by the room's server ACL` };
        continue;
      }
      let first: Map<string, AuthorisedResult> | undefined;
      try {
        first = new Map((await this.engine.persistAuthorised(roomId, group.pdus)).map((r) => [r.eventId, r]));
      } catch (err) {
        this.log.info({ err, roomId, origin }, 'PDUs of a transaction not persisted together: one by one');
      }
      for (const pdu of group.pdus) {
        const id = pdu.event_id!;
        try {
          let r = first?.get(id);
          if (!r || r.outcome === 'missing_auth_events' || (r.outcome === 'outlier' && r.missing?.length)) r = await this.ingest(origin, roomId, group.version, pdu);
          out[id] = r.outcome === 'rejected' || r.outcome === 'missing_auth_events' ? { error: `${r.outcome}${r.reason ? `: ${r.reason}` : ''}` } : {};
        } catch (err) {
          this.log.warn({ err, eventId: id, origin }, 'received PDU not persisted');
          out[id] = { error: (err as Error).message };
        }
      }
    }
    return out;
  }

  /** m.room.server_acl of the room's current state allows the server. */
  async allowedInRoom(roomId: string, server: string): Promise<boolean> {
    const room = await this.reader.roomMeta(roomId);
    if (!room) return true;
    const acl = (await this.reader.currentStateFor(room.room_nid, [['m.room.server_acl', '']]))[0];
    return !acl || serverAllowedByAcl(JSON.parse(acl.json).content, server);
  }

  /** Persists one checked PDU, fetching its missing auth events, then its missing prev events, from `origin`. */
  async ingest(origin: string, roomId: string, version: RoomVersion, pdu: PDU): Promise<AuthorisedResult> {
    let r = await this.persistOne(roomId, pdu);
    if (r.outcome === 'missing_auth_events') {
      const chain = await this.client.request(origin, 'GET', `/_matrix/federation/v1/event_auth/${encodeURIComponent(roomId)}/${encodeURIComponent(pdu.event_id!)}`)
        .catch((err) => { this.log.info({ err, origin }, 'event_auth failed'); return { auth_chain: [] }; });
      const events = await this.checkAll(Array.isArray(chain.auth_chain) ? chain.auth_chain : [], version, roomId);
      if (events.length) await this.engine.persistAuthorised(roomId, events, { outlier: true });
      r = await this.persistOne(roomId, pdu);
    }
    // A gap: the events between what we have and this one, 10 at a time (a few rounds, each
    // going on from the oldest event fetched); what stays missing is filled with /state below.
    let latest = [pdu.event_id!];
    for (let round = 0; round < MISSING_EVENTS_ROUNDS && r.outcome === 'outlier' && r.missing?.length; round++) {
      const head = await this.reader.head(roomId);
      const res = await this.client.request(origin, 'POST', `/_matrix/federation/v1/get_missing_events/${encodeURIComponent(roomId)}`, {
        earliest_events: head?.extremities ?? [], latest_events: latest, limit: MISSING_EVENTS_LIMIT, min_depth: 0,
      }).catch((err) => { this.log.info({ err, origin }, 'get_missing_events failed'); return { events: [] }; });
      const events = await this.checkAll(Array.isArray(res.events) ? res.events : [], version, roomId);
      if (!events.length) break;
      await this.engine.persistAuthorised(roomId, events);
      // Filled (here or through the events now placed before it): stored with its state.
      r = await this.persistOne(roomId, pdu);
      if (r.outcome === 'duplicate') break;
      latest = [events[0]!.event_id!];
    }
    if (r.outcome === 'outlier' && r.missing?.length) {
      // Still a gap: the state before the event, from the server that sent it, lets it in now.
      const state = await this.stateBefore(origin, roomId, pdu.event_id!, version);
      if (state) {
        const again = await this.engine.persistAuthorised(roomId, [pdu], { stateBefore: new Map([[pdu.event_id!, state]]) });
        r = again.find((x) => x.eventId === pdu.event_id) ?? r;
      }
    }
    return r;
  }

  /**
   * The state before an event, from `server` (/state: the events and their auth chain, checked and
   * stored as outliers): the ids, or undefined when the server did not answer.
   */
  async stateBefore(server: string, roomId: string, eventId: string, version: RoomVersion): Promise<string[] | undefined> {
    try {
      const res = await this.client.request(server, 'GET', `/_matrix/federation/v1/state/${encodeURIComponent(roomId)}?event_id=${encodeURIComponent(eventId)}`);
      const state = await this.checkAll(Array.isArray(res.pdus) ? res.pdus : [], version, roomId);
      const chain = await this.checkAll(Array.isArray(res.auth_chain) ? res.auth_chain : [], version, roomId);
      const byId = new Map<string, PDU>();
      for (const e of [...chain, ...state]) byId.set(e.event_id!, e);
      await this.engine.persistAuthorised(roomId, [...byId.values()].sort((a, b) => Number(a.depth ?? 0) - Number(b.depth ?? 0)), { outlier: true });
      return state.map((e) => e.event_id!);
    } catch (err) {
      this.log.info({ err, server, roomId, eventId }, 'state of an event not fetched');
      return undefined;
    }
  }

  /**
   * History before the room's backfill points (the prev events it misses), asked of the room's
   * other servers (/backfill, 100 events at most) and stored as backfilled events. The oldest
   * events of a batch, whose prev events are still unknown, get their state from the server.
   * Answers whether anything was stored.
   */
  async backfill(roomId: string): Promise<boolean> {
    const room = await this.reader.roomMeta(roomId);
    const version = room && getRoomVersion(room.room_version);
    if (!room || !version) return false;
    const points = await this.engine.backfillPoints(roomId);
    if (!points.length) return false;
    // Points whose missing event has arrived since (with its state) are not asked for again.
    const all = [...new Set(points.map((p) => p.missing_event_id))];
    const placed = new Set((await this.reader.eventsById(all)).filter((row) => row.state_after > 0).map((row) => row.event_id));
    const missing = all.filter((id) => !placed.has(id)).slice(0, 5);
    if (!missing.length) return false;
    const members = (await this.reader.roomMembersOf([roomId])).get(roomId) ?? [];
    const servers = [...new Set([serverNameOf(roomId), ...members.map(serverNameOf)])].filter((s) => s && s !== this.serverName);
    for (const server of servers) {
      let events: PDU[];
      try {
        const res = await this.client.request(server, 'GET', `/_matrix/federation/v1/backfill/${encodeURIComponent(roomId)}?${missing.map((m) => `v=${encodeURIComponent(m)}`).join('&')}&limit=${BACKFILL_LIMIT}`);
        events = await this.checkAll(Array.isArray(res.pdus) ? res.pdus : [], version, roomId);
      } catch (err) {
        this.log.info({ err, server, roomId }, 'backfill from this server failed');
        continue;
      }
      if (!events.length) continue;
      const inBatch = new Set(events.map((e) => e.event_id!));
      const prevs = [...new Set(events.flatMap((e) => eventIdsOf(e.prev_events)))].filter((id) => !inBatch.has(id));
      const stored = new Map((await this.reader.eventsById(prevs)).map((row) => [row.event_id, row.state_after > 0]));
      const stateBefore = new Map<string, string[]>();
      for (const e of events) {
        if (stateBefore.size >= MAX_STATE_FETCHES) break;
        const open = eventIdsOf(e.prev_events).filter((id) => !inBatch.has(id) && !stored.get(id));
        if (!open.length) continue;
        const state = await this.stateBefore(server, roomId, e.event_id!, version);
        if (state) stateBefore.set(e.event_id!, state);
      }
      const results = await this.engine.persistAuthorised(roomId, events, { backfill: true, stateBefore });
      return results.some((x) => x.outcome === 'accepted' || x.outcome === 'soft_failed');
    }
    return false;
  }

  private async persistOne(roomId: string, pdu: PDU): Promise<AuthorisedResult> {
    const results = await this.engine.persistAuthorised(roomId, [pdu]);
    return results.find((x) => x.eventId === pdu.event_id) ?? results[0]!;
  }

  // ---- outbound, for our users ---------------------------------------------------------------

  async resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }> {
    if (!isValidRoomAlias(alias)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room alias ${alias}`);
    const res = await this.client.request(serverNameOf(alias), 'GET', `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent(alias)}`)
      .catch((err) => { throw new MatrixError(404, 'M_NOT_FOUND', `Room alias ${alias} not found: ${(err as Error).message}`); });
    if (typeof res.room_id !== 'string') throw new MatrixError(404, 'M_NOT_FOUND', `Room alias ${alias} not found`);
    const servers = Array.isArray(res.servers) ? res.servers.filter((s): s is string => typeof s === 'string') : [];
    return { roomId: res.room_id, servers: [serverNameOf(alias), ...servers] };
  }

  /** make_{join,leave} then send_{join,leave} (v2) through the first server that answers. */
  private async handshake(kind: 'join' | 'leave' | 'knock', userId: string, roomId: string, servers: string[], content: Json): Promise<{ server: string; event: PDU; version: RoomVersion; answer: Json }> {
    let last: unknown;
    for (const server of servers) {
      try {
        const q = kind !== 'leave' ? `?${SUPPORTED_VERSIONS.map((v) => `ver=${encodeURIComponent(v)}`).join('&')}` : '';
        const made = await this.client.request(server, 'GET', `/_matrix/federation/v1/make_${kind}/${encodeURIComponent(roomId)}/${encodeURIComponent(userId)}${q}`);
        const version = getRoomVersion(typeof made.room_version === 'string' ? made.room_version : '1');
        if (!version) throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Unsupported room version ${String(made.room_version)}`);
        const t = made.event as Json | undefined;
        if (!t || t.room_id !== roomId || t.sender !== userId || t.state_key !== userId || t.type !== 'm.room.member') throw new Error(`make_${kind}: a bad template`);
        const draft: Json = {
          type: 'm.room.member', room_id: roomId, sender: userId, state_key: userId,
          content: { ...(t.content as Json | undefined), ...content, membership: kind },
          depth: t.depth, prev_events: t.prev_events, auth_events: t.auth_events,
          origin_server_ts: Date.now(),
        };
        if (version.eventIdFormat === 'v1') draft.event_id = generateV1EventId(this.serverName);
        const { event, eventId } = finalizeEvent(draft, this.serverName, this.serverKeys.current, version);
        const answer = await this.client.request(server, 'PUT', `/_matrix/federation/${kind === 'knock' ? 'v1' : 'v2'}/send_${kind}/${encodeURIComponent(roomId)}/${encodeURIComponent(eventId)}`, event);
        return { server, event: { ...event, event_id: eventId } as unknown as PDU, version, answer };
      } catch (err) {
        last = err;
        this.log.info({ err, server, roomId }, `remote ${kind} through this server failed`);
      }
    }
    if (last instanceof MatrixError) throw last;
    // The room's server refused (banned, not invited, …): the user is told as it said.
    if (last instanceof FederationRequestError && last.status !== undefined && last.status >= 400 && last.status < 500 && last.errcode) {
      const b = last.body as { error?: unknown };
      throw new MatrixError(last.status, last.errcode, typeof b.error === 'string' ? b.error : last.message);
    }
    throw new MatrixError(404, 'M_NOT_FOUND', `No server could ${kind} ${roomId}: ${(last as Error | undefined)?.message ?? 'no server to ask'}`);
  }

  async join(userId: string, roomId: string, servers: string[], content: Json): Promise<void> {
    const { event, version, answer } = await this.handshake('join', userId, roomId, servers, content);
    const state = await this.checkAll(Array.isArray(answer.state) ? answer.state : [], version, roomId);
    const chain = await this.checkAll(Array.isArray(answer.auth_chain) ? answer.auth_chain : [], version, roomId);
    const byId = new Map<string, PDU>();
    for (const e of [...chain, ...state]) byId.set(e.event_id!, e);
    const all = [...byId.values()].sort((a, b) => Number(a.depth ?? 0) - Number(b.depth ?? 0));
    if (!all.some((e) => e.type === 'm.room.create')) throw new MatrixError(502, 'M_UNKNOWN', 'send_join answered no create event');
    await this.engine.persistAuthorised(roomId, all, { outlier: true });
    const results = await this.engine.persistAuthorised(roomId, [event], { stateBefore: new Map([[event.event_id!, state.map((e) => e.event_id!)]]) });
    const r = results.find((x) => x.eventId === event.event_id);
    if (r?.outcome !== 'accepted' && r?.outcome !== 'duplicate') throw new MatrixError(403, 'M_FORBIDDEN', `The join was ${r?.outcome ?? 'not stored'}${r?.reason ? `: ${r.reason}` : ''}`);
  }

  async leave(userId: string, roomId: string, content: Json): Promise<void> {
    const room = await this.reader.roomMeta(roomId);
    const servers: string[] = [];
    if (room) {
      const m = await this.reader.membership(userId, room.room_nid);
      const ev = m && (await this.reader.eventsByNid([m.event_nid]))[0];
      if (ev) servers.push(serverNameOf(ev.sender));
    }
    if (serverNameOf(roomId)) servers.push(serverNameOf(roomId));
    const { event, version } = await this.handshake('leave', userId, roomId, [...new Set(servers)].filter((s) => s !== this.serverName), content);
    await this.engine.persistAuthorised(roomId, [event], { outOfBand: true, roomVersion: version.id });
  }

  /** make_knock / send_knock through the room's servers; the knock kept out of band (shown by /sync). */
  async knock(userId: string, roomId: string, servers: string[], content: Json): Promise<void> {
    const { event, version, answer } = await this.handshake('knock', userId, roomId, servers, content);
    const stripped = Array.isArray(answer.knock_room_state) ? answer.knock_room_state : [];
    await this.engine.persistAuthorised(roomId, [{ ...event, unsigned: { knock_room_state: stripped } } as PDU], { outOfBand: true, roomVersion: version.id });
  }

  /**
   * Invites a remote user as the spec says: the invite built and signed here, sent to the
   * invitee's server (/invite v2) — which may refuse it, and then nothing is stored — and the
   * event it co-signed persisted (then sent to the room's other servers by the outbox).
   */
  async invite(sender: string, roomId: string, target: string, content: Json): Promise<void> {
    const room = await this.reader.roomMeta(roomId);
    const version = room && getRoomVersion(room.room_version);
    const head = await this.reader.head(roomId);
    if (!room || !version || !head) throw new MatrixError(404, 'M_NOT_FOUND', `Unknown room ${roomId}`);
    const draft: Json = {
      type: 'm.room.member', room_id: roomId, sender, state_key: target, content: { ...content, membership: 'invite' },
      origin_server_ts: Date.now(), depth: head.depth + 1, prev_events: head.extremities.slice(0, 20),
    };
    const authRows = await this.reader.currentStateFor(room.room_nid, authEventSelection(draft as unknown as PDU, version));
    const authEvents = authRows.map(pduOf);
    draft.auth_events = authEvents.map((e) => e.event_id);
    if (version.eventIdFormat === 'v1') {
      draft.event_id = generateV1EventId(this.serverName);
      const refs = new Map((await this.reader.eventsById([...(draft.auth_events as string[]), ...head.extremities.slice(0, 20)])).map((row) => [row.event_id, pduOf(row).hashes ?? {}]));
      draft.auth_events = (draft.auth_events as string[]).map((id) => [id, refs.get(id) ?? {}]);
      draft.prev_events = head.extremities.slice(0, 20).map((id) => [id, refs.get(id) ?? {}]);
    }
    try {
      checkEventAuth({ ...(draft as unknown as PDU), event_id: '$invite' }, new Map(authEvents.map((e) => [stateKey(e.type, e.state_key ?? ''), e])), version);
    } catch (err) {
      if (err instanceof AuthError) throw new MatrixError(403, 'M_FORBIDDEN', err.message);
      throw err;
    }
    const { event, eventId } = finalizeEvent(draft, this.serverName, this.serverKeys.current, version);
    const stripped = await this.strippedState(room.room_nid, version, sender);
    let answer: Json;
    try {
      answer = await this.client.request(serverNameOf(target), 'PUT', `/_matrix/federation/v2/invite/${encodeURIComponent(roomId)}/${encodeURIComponent(eventId)}`, {
        room_version: version.id, event: federationPdu({ ...event, event_id: eventId } as unknown as PDU, version), invite_room_state: stripped,
      });
    } catch (err) {
      if (err instanceof FederationRequestError && err.status !== undefined && err.status >= 400 && err.status < 500) {
        throw new MatrixError(403, 'M_FORBIDDEN', `The invitee's server refused the invite: ${(err as Error).message}`);
      }
      throw new MatrixError(502, 'M_UNKNOWN', `The invitee's server did not answer: ${(err as Error).message}`);
    }
    // Its co-signed copy, if it is the same event; else ours.
    const back = await this.checkPdu(answer.event, version);
    const pdu = !('error' in back) && back.eventId === eventId && !back.redacted ? back.pdu : ({ ...event, event_id: eventId } as unknown as PDU);
    const results = await this.engine.persistAuthorised(roomId, [pdu]);
    const r = results.find((x) => x.eventId === eventId);
    if (r?.outcome === 'rejected') throw new MatrixError(403, 'M_FORBIDDEN', r.reason ?? 'The invite is not allowed');
  }

  /** The room's stripped state for an invite or a knock (name, join rules, encryption, …). */
  async strippedState(roomNid: number, version: RoomVersion, sender: string): Promise<Json[]> {
    const pairs: Array<[string, string]> = [['m.room.create', ''], ['m.room.join_rules', ''], ['m.room.name', ''], ['m.room.avatar', ''], ['m.room.canonical_alias', ''], ['m.room.encryption', ''], ['m.room.topic', ''], ['m.room.member', sender]];
    // Spec v1.16+: the events in full, formatted for the room version (the invitee's clients see them stripped).
    return (await this.reader.currentStateFor(roomNid, pairs)).map((r) => federationPdu(pduOf(r), version));
  }

  /** /invite v2 to the invitee's server, with the room's stripped state. */
  async invited(roomId: string, invite: PDU): Promise<void> {
    const room = await this.reader.roomMeta(roomId);
    const version = room && getRoomVersion(room.room_version);
    if (!room || !version || typeof invite.state_key !== 'string') return;
    const stripped = await this.strippedState(room.room_nid, version, invite.sender);
    try {
      await this.client.request(serverNameOf(invite.state_key), 'PUT', `/_matrix/federation/v2/invite/${encodeURIComponent(roomId)}/${encodeURIComponent(invite.event_id!)}`, {
        room_version: version.id, event: federationPdu(invite, version), invite_room_state: stripped,
      });
    } catch (err) {
      this.log.warn({ err, roomId, invitee: invite.state_key }, 'remote invite not delivered');
      throw new MatrixError(502, 'M_UNKNOWN', `The invitee's server did not take the invite: ${(err as Error).message}`);
    }
  }

}
