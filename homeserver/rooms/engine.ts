import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { addContentHash, computeEventId } from '../protocol/hashes.ts';
import { signEvent, type SigningKey } from '../protocol/signing.ts';
import { AuthError, authEventSelection, checkEventAuth, stateKey, type PDU, type StateMap } from '../protocol/auth.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';
import { RoomStore, pduOf, type RoomRow } from './store.ts';

/** What a local user (or the server) wants to put in a room; the engine builds the event. */
export interface EventDraft {
  type: string;
  sender: string;
  content: Record<string, unknown>;
  stateKey?: string;
  /** m.room.redaction: the event redacted. */
  redacts?: string;
  txn?: { deviceId: string; txnId: string };
}

export interface PersistedEvent {
  eventId: string;
  streamPos: number;
  pdu: PDU;
}

interface Pending {
  draft: EventDraft;
  resolve: (e: PersistedEvent) => void;
  reject: (e: unknown) => void;
}

/** Spec limit on a whole event's size. */
const MAX_EVENT_BYTES = 65536;
/** A full state snapshot every this many deltas keeps the walk to rebuild a state bounded. */
const SNAPSHOT_EVERY = 100;
/** How many queued sends of one room share a transaction at most. */
const MAX_BATCH = 64;

/**
 * The room engine's write path. Every local event goes through `send`: build (prev events = forward
 * extremities, auth events from current state, depth) → hash → sign → check auth → one transaction
 * writes it all → notify. Sends to one room are queued and persisted in order, several per
 * transaction when they pile up; different rooms persist in parallel.
 */
export class RoomEngine {
  private queues = new Map<string, Pending[]>();
  private listeners: Array<(e: PersistedEvent[], roomId: string) => void> = [];

  constructor(
    readonly store: RoomStore,
    private tracker: StreamTracker,
    private notifier: Notifier,
    private serverName: string,
    private signingKey: SigningKey,
    private log: Logger,
  ) {}

  /** Subscribe to persisted events (federation sender, push, …): the engine imports none of them. */
  onPersisted(listener: (e: PersistedEvent[], roomId: string) => void): void {
    this.listeners.push(listener);
  }

  async version(roomId: string): Promise<{ room: RoomRow; version: RoomVersion }> {
    const room = await this.store.roomMeta(roomId);
    if (!room) throw notFound(`Unknown room ${roomId}`);
    const version = getRoomVersion(room.room_version);
    if (!version) throw new MatrixError(500, 'M_UNKNOWN', `Room ${roomId} has an unknown version`);
    return { room, version };
  }

  /** Persists one event in a room that exists; rejects with M_FORBIDDEN when auth rules deny it. */
  send(roomId: string, draft: EventDraft): Promise<PersistedEvent> {
    return new Promise((resolve, reject) => {
      let q = this.queues.get(roomId);
      const start = !q;
      if (!q) this.queues.set(roomId, (q = []));
      q.push({ draft, resolve, reject });
      if (start) void this.drain(roomId);
    });
  }

  /** Creates a room and persists its first events in one transaction. */
  async createRoom(roomId: string, version: RoomVersion, creator: string, drafts: EventDraft[]): Promise<PersistedEvent[]> {
    const positions: number[] = [];
    let results: Array<PersistedEvent | Error> = [];
    try {
      await this.store.db.transaction(async (trx) => {
        const nid = await this.store.insertRoom(trx, roomId, version.id, creator);
        const room = (await this.store.room(roomId, trx))!;
        await this.store.lockRoom(trx, nid);
        results = await this.persistBatch(trx, room, version, drafts, positions);
        const failed = results.find((r): r is Error => r instanceof Error);
        if (failed) throw failed;
      });
    } finally {
      this.tracker.done(positions);
    }
    const done = results as PersistedEvent[];
    this.afterCommit(roomId, done);
    return done;
  }

  private async drain(roomId: string): Promise<void> {
    const q = this.queues.get(roomId)!;
    while (q.length) {
      const batch = q.splice(0, MAX_BATCH);
      const positions: number[] = [];
      try {
        const { version } = await this.version(roomId);
        let results: Array<PersistedEvent | Error> = [];
        await this.store.db.transaction(async (trx) => {
          const nid = (await this.store.roomMeta(roomId))!.room_nid;
          await this.store.lockRoom(trx, nid);
          const room = (await this.store.room(roomId, trx))!;
          results = await this.persistBatch(trx, room, version, batch.map((p) => p.draft), positions);
        });
        this.tracker.done(positions);
        const ok = results.filter((r): r is PersistedEvent => !(r instanceof Error));
        this.afterCommit(roomId, ok);
        results.forEach((r, i) => (r instanceof Error ? batch[i]!.reject(r) : batch[i]!.resolve(r)));
      } catch (err) {
        this.tracker.done(positions);
        this.log.error({ err, roomId }, 'persisting events failed');
        for (const p of batch) p.reject(err);
      }
    }
    this.queues.delete(roomId);
  }

  private afterCommit(roomId: string, events: PersistedEvent[]): void {
    if (!events.length) return;
    const keys = new Set<string>([roomId]);
    for (const e of events) if (e.pdu.type === 'm.room.member' && e.pdu.state_key) keys.add(e.pdu.state_key);
    const maxPos = events.reduce((m, e) => Math.max(m, e.streamPos), 0);
    this.tracker.whenVisible(maxPos, () => this.notifier.notify(keys, maxPos));
    for (const l of this.listeners) {
      try {
        l(events, roomId);
      } catch (err) {
        this.log.error({ err }, 'persisted-event listener failed');
      }
    }
  }

  /**
   * Builds, authorises and writes drafts in order inside the caller's transaction, which holds the
   * room's lock. A draft the auth rules deny yields an Error in its slot and writes nothing.
   */
  private async persistBatch(trx: Knex, room: RoomRow, version: RoomVersion, drafts: EventDraft[], positions: number[]): Promise<Array<PersistedEvent | Error>> {
    const out: Array<PersistedEvent | Error> = [];
    const extremities = await this.store.forwardExtremities(trx, room.room_nid);
    let prevEvents = extremities.map((e) => e.event_id);
    let depth = extremities.reduce((d, e) => Math.max(d, Number(e.depth)), 0) + 1;
    let stateGroup = room.state_group;

    for (const draft of drafts) {
      if (draft.txn) {
        // A retry of a send already persisted (perhaps in this very batch): answer with that event.
        const prior = await this.store.txnEvent(draft.sender, draft.txn.deviceId, draft.txn.txnId, trx);
        if (prior) {
          const row = (await this.store.eventById(prior, trx))!;
          out.push({ eventId: prior, streamPos: Number(row.stream_pos), pdu: pduOf(row) });
          continue;
        }
      }
      const isState = draft.stateKey !== undefined;
      const pairs = authEventSelection({ type: draft.type, sender: draft.sender, state_key: draft.stateKey, content: draft.content }, version);
      // The state key being replaced too, for prev_content and the state delta.
      const wanted: Array<[string, string]> = isState ? [...pairs, [draft.type, draft.stateKey!]] : pairs;
      const rows = await this.store.currentStateFor(trx, room.room_nid, wanted);
      const authState: StateMap = new Map();
      const authIds: string[] = [];
      const authNids: number[] = [];
      const pairKeys = new Set(pairs.map(([t, k]) => stateKey(t, k)));
      let replaces: { event_nid: number } | undefined;
      for (const row of rows) {
        const key = stateKey(row.type, row.state_key);
        if (pairKeys.has(key) && !authState.has(key)) {
          authState.set(key, pduOf(row));
          authIds.push(row.event_id);
          authNids.push(Number(row.event_nid));
        }
        if (isState && row.type === draft.type && row.state_key === draft.stateKey) replaces = row;
      }

      const unsignedPdu: Record<string, unknown> = {
        auth_events: authIds,
        content: draft.content,
        depth,
        origin_server_ts: Date.now(),
        prev_events: prevEvents,
        room_id: room.room_id,
        sender: draft.sender,
        type: draft.type,
      };
      if (isState) unsignedPdu.state_key = draft.stateKey;
      if (draft.redacts !== undefined && !version.redactsInContent) unsignedPdu.redacts = draft.redacts;

      try {
        checkEventAuth(unsignedPdu as unknown as PDU, authState, version);
      } catch (err) {
        if (err instanceof AuthError) {
          out.push(forbidden(err.message));
          continue;
        }
        throw err;
      }
      const signed = signEvent(addContentHash(unsignedPdu), this.serverName, this.signingKey, version);
      const json = canonicalJson(signed);
      if (Buffer.byteLength(json) > MAX_EVENT_BYTES) {
        out.push(new MatrixError(413, 'M_TOO_LARGE', `Event is over ${MAX_EVENT_BYTES} bytes`));
        continue;
      }
      const eventId = computeEventId(signed, version);
      const streamPos = await this.tracker.allocate(trx);
      positions.push(streamPos);

      if (stateGroup === null) {
        // The create event: the state before it is the empty snapshot.
        stateGroup = (await this.store.nextStateGroup(trx, room.room_nid, null, true)).group;
      }
      const stateBefore = stateGroup;
      let stateAfter = stateBefore;
      let full = false;
      if (isState) {
        full = (await this.store.chainLen(trx, stateBefore)) + 1 >= SNAPSHOT_EVERY;
        stateAfter = (await this.store.nextStateGroup(trx, room.room_nid, stateBefore, full)).group;
      }
      const relates = draft.content['m.relates_to'] as { rel_type?: unknown; event_id?: unknown } | undefined;
      const membership = draft.type === 'm.room.member' ? String(draft.content.membership) : null;
      const eventNid = await this.store.insertEvent(trx, {
        eventId,
        roomNid: room.room_nid,
        streamPos,
        depth,
        type: draft.type,
        stateKey: draft.stateKey,
        sender: draft.sender,
        originServerTs: signed.origin_server_ts as number,
        stateBefore,
        stateAfter,
        replacesNid: replaces ? Number(replaces.event_nid) : null,
        membership,
        relType: typeof relates?.rel_type === 'string' ? relates.rel_type : null,
        relatesTo: typeof relates?.event_id === 'string' ? relates.event_id : null,
        redacts: draft.redacts ?? null,
        txnDevice: draft.txn?.deviceId ?? null,
        txnId: draft.txn?.txnId ?? null,
        json,
      });
      await this.store.insertEdges(trx, eventNid, prevEvents, authNids);
      await this.store.setForwardExtremities(trx, room.room_nid, prevEvents, eventId);
      if (isState) {
        const { typeNid, keyNid } = await this.store.setCurrentState(trx, room.room_nid, draft.type, draft.stateKey!, eventNid);
        if (full) await this.store.snapshotCurrentState(trx, stateAfter, room.room_nid);
        else await this.store.insertStateEntries(trx, stateAfter, [{ typeNid, keyNid, eventNid }]);
        await this.store.setRoomStateGroup(trx, room.room_nid, stateAfter);
        stateGroup = stateAfter;
        if (membership) await this.store.setMembership(trx, draft.stateKey!, room.room_nid, membership, eventNid, streamPos, draft.sender);
      }
      if (draft.txn) await this.store.recordTxn(trx, draft.sender, draft.txn.deviceId, draft.txn.txnId, eventId);
      if (draft.redacts) await this.store.markRedacted(trx, draft.redacts, eventId);
      const text = searchableText(draft);
      if (text) await this.store.indexForSearch(trx, eventNid, room.room_nid, text.key, text.value);

      const pdu = { ...signed, event_id: eventId } as unknown as PDU;
      out.push({ eventId, streamPos, pdu });
      prevEvents = [eventId];
      depth += 1;
    }
    return out;
  }
}

function searchableText(draft: EventDraft): { key: string; value: string } | undefined {
  const c = draft.content;
  if (draft.type === 'm.room.message' && typeof c.body === 'string') return { key: 'content.body', value: c.body };
  if (draft.type === 'm.room.name' && typeof c.name === 'string') return { key: 'content.name', value: c.name };
  if (draft.type === 'm.room.topic') {
    // The plain-text topic of m.topic counts too (spec: search keys).
    const texts = [c.topic, ...(((c['m.topic'] as { 'm.text'?: Array<{ body?: unknown; mimetype?: unknown }> } | undefined)?.['m.text'] ?? [])
      .filter((t) => t.mimetype === undefined || t.mimetype === 'text/plain').map((t) => t.body))];
    const unique = [...new Set(texts.filter((t): t is string => typeof t === 'string' && t !== ''))];
    if (unique.length) return { key: 'content.topic', value: unique.join('\n') };
  }
  return undefined;
}
