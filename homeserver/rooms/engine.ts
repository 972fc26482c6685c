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
import { PersistStore, type Query, type EventInsert, type RoomHead } from './persist-store.ts';

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
  private cache = new Map<number, RoomView>();
  private persist: PersistStore;
  private listeners: Array<(e: PersistedEvent[], roomId: string) => void> = [];

  constructor(
    readonly store: RoomStore,
    private tracker: StreamTracker,
    private notifier: Notifier,
    private serverName: string,
    private signingKey: SigningKey,
    private log: Logger,
  ) {
    this.persist = new PersistStore(store.db);
  }

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
    let roomNid = 0;
    try {
      await this.persist.transaction(null, async (q, head) => {
        roomNid = await q.insertRoom(roomId, version.id, creator);
        await q.lockRoom(roomNid);
        results = await this.persistBatch(q, head, roomId, roomNid, version, drafts, positions);
        const failed = results.find((r): r is Error => r instanceof Error);
        if (failed) throw failed;
      });
    } catch (err) {
      this.cache.delete(roomNid);
      throw err;
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
      let roomNid: number | undefined;
      try {
        const { room, version } = await this.version(roomId);
        roomNid = room.room_nid;
        let results: Array<PersistedEvent | Error> = [];
        await this.persist.transaction(room.room_nid, async (tx, head) => {
          results = await this.persistBatch(tx, head, roomId, room.room_nid, version, batch.map((p) => p.draft), positions);
        });
        this.tracker.done(positions);
        const ok = results.filter((r): r is PersistedEvent => !(r instanceof Error));
        this.afterCommit(roomId, ok);
        results.forEach((r, i) => (r instanceof Error ? batch[i]!.reject(r) : batch[i]!.resolve(r)));
      } catch (err) {
        // The in-memory view of the room may hold what was rolled back: forget it.
        if (roomNid !== undefined) this.cache.delete(roomNid);
        this.tracker.done(positions);
        if (!(err instanceof MatrixError)) this.log.error({ err, roomId }, 'persisting events failed');
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
   * What this worker knows of a room's head: valid while the room's row still shows the same state
   * snapshot and last position (read under the room's lock), so another worker's write is noticed.
   */
  private async roomView(q: Query, head: RoomHead, roomNid: number): Promise<RoomView> {
    const cached = this.cache.get(roomNid);
    if (cached && cached.head.state_group === head.state_group && cached.head.last_pos === head.last_pos) return cached;
    const view: RoomView = {
      head,
      extremities: await q.extremities(roomNid),
      chainLen: head.state_group === null ? 0 : await q.chainLen(head.state_group),
      state: new Map(),
      absent: new Set(),
    };
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(roomNid, view);
    return view;
  }

  /** Current state entries for some keys, from the view or else one query; the view learns them. */
  private async stateEntries(q: Query, roomNid: number, view: RoomView, pairs: Array<[string, string]>): Promise<Map<string, CachedEntry>> {
    const out = new Map<string, CachedEntry>();
    const missing: Array<{ key: string; typeNid: number; keyNid: number }> = [];
    for (const [type, sk] of pairs) {
      const key = stateKey(type, sk);
      const hit = view.state.get(key);
      if (hit) {
        out.set(key, hit);
        continue;
      }
      if (view.absent.has(key)) continue;
      const typeNid = await this.store.types.lookup(this.store.db, type);
      const keyNid = typeNid === undefined ? undefined : await this.store.stateKeys.lookup(this.store.db, sk);
      if (typeNid === undefined || keyNid === undefined) {
        view.absent.add(key);
        continue;
      }
      missing.push({ key, typeNid, keyNid });
    }
    if (missing.length) {
      const rows = await q.currentState(roomNid, missing.map((m) => m.typeNid), missing.map((m) => m.keyNid));
      const found = new Map(rows.map((r) => [`${r.type_nid}:${r.state_key_nid}`, r]));
      for (const m of missing) {
        const row = found.get(`${m.typeNid}:${m.keyNid}`);
        if (!row) {
          view.absent.add(m.key);
          continue;
        }
        const entry: CachedEntry = { eventNid: row.event_nid, eventId: row.event_id, typeNid: m.typeNid, keyNid: m.keyNid, pdu: pduOf(row) };
        if (view.state.size > 50_000) view.state.clear();
        view.state.set(m.key, entry);
        out.set(m.key, entry);
      }
    }
    return out;
  }

  /**
   * Builds, authorises and writes drafts in order inside the caller's transaction, which holds the
   * room's lock. A draft the auth rules deny yields an Error in its slot and writes nothing. All
   * rows of the batch are written with one multi-row statement per table.
   */
  private async persistBatch(q: Query, head: RoomHead, roomId: string, roomNid: number, version: RoomVersion, drafts: EventDraft[], positions: number[]): Promise<Array<PersistedEvent | Error>> {
    const out: Array<PersistedEvent | Error> = [];
    const view = await this.roomView(q, head, roomNid);

    // Ids for every draft, and which drafts retry a send already persisted (they answer with it).
    const txnKey = (d: EventDraft) => `${d.sender}\0${d.txn!.deviceId}\0${d.txn!.txnId}`;
    const withTxn = drafts.filter((d) => d.txn);
    const inBatch = new Map<string, PersistedEvent>();
    let allocated: Array<{ nid: number; pos: number }> = [];
    let prior = new Map<string, string>();
    const ids = await this.tracker.reserve(async () => {
      const r = await q.allocate(drafts.length, withTxn.map((d) => d.sender), withTxn.map((d) => d.txn!.deviceId), withTxn.map((d) => d.txn!.txnId));
      allocated = r.ids;
      prior = r.prior;
      return allocated.map((x) => x.pos);
    });
    positions.push(...ids);

    let prevEvents = view.extremities.map((e) => e.event_id);
    let depth = view.extremities.reduce((d, e) => Math.max(d, e.depth), 0) + 1;
    let stateGroup: number | null = view.head.state_group;
    let chainLen = view.chainLen;
    const firstPrev = prevEvents;

    const events: EventInsert[] = [];
    const edges: { nids: number[]; prev: string[] } = { nids: [], prev: [] };
    const authEdges: { nids: number[]; auth: number[] } = { nids: [], auth: [] };
    const groups: { ids: number[]; prev: Array<number | null>; chain: number[] } = { ids: [], prev: [], chain: [] };
    const entries: { groups: number[]; types: number[]; keys: number[]; nids: number[] } = { groups: [], types: [], keys: [], nids: [] };
    const current = new Map<string, { typeNid: number; keyNid: number; nid: number }>();
    const members = new Map<string, { membership: string; nid: number; pos: number; sender: string }>();
    const txns: { users: string[]; devices: string[]; txns: string[]; events: string[] } = { users: [], devices: [], txns: [], events: [] };
    const search: { nids: number[]; keys: string[]; texts: string[] } = { nids: [], keys: [], texts: [] };
    const redactions: Array<[string, string]> = [];
    let lastEvent: string | undefined;
    let lastPos = view.head.last_pos;

    const addGroup = (group: number, prev: number | null, chain: number) => {
      groups.ids.push(group);
      groups.prev.push(prev);
      groups.chain.push(chain);
    };
    if (stateGroup === null) {
      // The create event: the state before it is the empty snapshot.
      stateGroup = await q.allocateStateGroup();
      addGroup(stateGroup, null, 0);
      chainLen = 0;
    }

    for (let i = 0; i < drafts.length; i++) {
      const draft = drafts[i]!;
      if (draft.txn) {
        const key = txnKey(draft);
        const seen = inBatch.get(key);
        if (seen) {
          out.push(seen);
          continue;
        }
        const priorId = prior.get(key);
        if (priorId) {
          const row = (await q.eventById(priorId))!;
          out.push({ eventId: priorId, streamPos: Number(row.stream_pos), pdu: pduOf(row) });
          continue;
        }
      }
      const isState = draft.stateKey !== undefined;
      const pairs = authEventSelection({ type: draft.type, sender: draft.sender, state_key: draft.stateKey, content: draft.content }, version);
      const wanted: Array<[string, string]> = isState ? [...pairs, [draft.type, draft.stateKey!]] : pairs;
      const found = await this.stateEntries(q, roomNid, view, wanted);
      const authState: StateMap = new Map();
      const authIds: string[] = [];
      const authNids: number[] = [];
      for (const [type, sk] of pairs) {
        const e = found.get(stateKey(type, sk));
        if (!e || authState.has(stateKey(type, sk))) continue;
        authState.set(stateKey(type, sk), e.pdu);
        authIds.push(e.eventId);
        authNids.push(e.eventNid);
      }
      const replaces = isState ? found.get(stateKey(draft.type, draft.stateKey!)) : undefined;

      const unsignedPdu: Record<string, unknown> = {
        auth_events: authIds,
        content: draft.content,
        depth,
        origin_server_ts: Date.now(),
        prev_events: prevEvents,
        room_id: roomId,
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
      const { nid: eventNid, pos: streamPos } = allocated[i]!;
      const typeNid = await this.store.types.nid(this.store.db, draft.type);
      const keyNid = isState ? await this.store.stateKeys.nid(this.store.db, draft.stateKey!) : null;

      const stateBefore: number = stateGroup!;
      let stateAfter: number = stateBefore;
      if (isState) {
        stateAfter = await q.allocateStateGroup();
        const full = chainLen + 1 >= SNAPSHOT_EVERY;
        if (full) {
          // A full snapshot: the current state as stored, with this batch's changes and this event.
          const all = new Map((await q.currentStateNids(roomNid)).map((r) => [`${r.type_nid}:${r.state_key_nid}`, r]));
          for (const c of current.values()) all.set(`${c.typeNid}:${c.keyNid}`, { type_nid: c.typeNid, state_key_nid: c.keyNid, event_nid: c.nid });
          all.set(`${typeNid}:${keyNid}`, { type_nid: typeNid, state_key_nid: keyNid!, event_nid: eventNid });
          addGroup(stateAfter, null, 0);
          for (const r of all.values()) {
            entries.groups.push(stateAfter);
            entries.types.push(r.type_nid);
            entries.keys.push(r.state_key_nid);
            entries.nids.push(r.event_nid);
          }
          chainLen = 0;
        } else {
          addGroup(stateAfter, stateBefore, chainLen + 1);
          entries.groups.push(stateAfter);
          entries.types.push(typeNid);
          entries.keys.push(keyNid!);
          entries.nids.push(eventNid);
          chainLen += 1;
        }
        stateGroup = stateAfter;
        current.set(`${typeNid}:${keyNid}`, { typeNid, keyNid: keyNid!, nid: eventNid });
      }
      const relates = draft.content['m.relates_to'] as { rel_type?: unknown; event_id?: unknown } | undefined;
      const membership = draft.type === 'm.room.member' ? String(draft.content.membership) : null;
      events.push({
        nid: eventNid,
        eventId,
        roomNid,
        streamPos,
        depth,
        typeNid,
        stateKeyNid: keyNid,
        sender: draft.sender,
        ts: signed.origin_server_ts as number,
        stateBefore,
        stateAfter,
        replacesNid: replaces ? replaces.eventNid : null,
        membership,
        relType: typeof relates?.rel_type === 'string' ? relates.rel_type : null,
        relatesTo: typeof relates?.event_id === 'string' ? relates.event_id : null,
        redacts: draft.redacts ?? null,
        txnDevice: draft.txn?.deviceId ?? null,
        txnId: draft.txn?.txnId ?? null,
        json,
      });
      for (const p of prevEvents) {
        edges.nids.push(eventNid);
        edges.prev.push(p);
      }
      for (const a of authNids) {
        authEdges.nids.push(eventNid);
        authEdges.auth.push(a);
      }
      if (membership) members.set(draft.stateKey!, { membership, nid: eventNid, pos: streamPos, sender: draft.sender });
      if (draft.txn) {
        txns.users.push(draft.sender);
        txns.devices.push(draft.txn.deviceId);
        txns.txns.push(draft.txn.txnId);
        txns.events.push(eventId);
      }
      if (draft.redacts) redactions.push([draft.redacts, eventId]);
      const text = searchableText(draft);
      if (text) {
        search.nids.push(eventNid);
        search.keys.push(text.key);
        search.texts.push(text.value);
      }

      const pdu = { ...signed, event_id: eventId } as unknown as PDU;
      const persisted = { eventId, streamPos, pdu };
      out.push(persisted);
      if (draft.txn) inBatch.set(txnKey(draft), persisted);
      if (isState) {
        // Later drafts of this batch authorise against it (the caller drops the view on rollback).
        const key = stateKey(draft.type, draft.stateKey!);
        view.state.set(key, { eventNid, eventId, typeNid, keyNid: keyNid!, pdu });
        view.absent.delete(key);
      }
      prevEvents = [eventId];
      lastEvent = eventId;
      lastPos = streamPos;
      depth += 1;
    }

    const c = [...current.values()];
    const users = [...members.keys()];
    const m = users.map((u) => members.get(u)!);
    await q.writeBatch(roomNid, {
      events,
      edges,
      authEdges,
      groups,
      entries,
      current: { types: c.map((x) => x.typeNid), keys: c.map((x) => x.keyNid), nids: c.map((x) => x.nid) },
      members: { users, memberships: m.map((x) => x.membership), nids: m.map((x) => x.nid), positions: m.map((x) => x.pos), senders: m.map((x) => x.sender) },
      extremities: { remove: lastEvent ? firstPrev : [], add: lastEvent ? [lastEvent] : [] },
      txns,
      search,
      head: { state_group: stateGroup, last_pos: lastPos },
    });
    // A redaction may target an event of this very batch: after the insert.
    for (const [target, redaction] of redactions) await q.markRedacted(target, redaction);

    // The view now describes the room after this batch (dropped by the caller if the commit fails).
    if (lastEvent) view.extremities = [{ event_id: lastEvent, depth: depth - 1 }];
    view.chainLen = chainLen;
    view.head = { state_group: stateGroup, last_pos: lastPos };
    return out;
  }
}

interface CachedEntry {
  eventNid: number;
  eventId: string;
  typeNid: number;
  keyNid: number;
  pdu: PDU;
}

/** A worker's view of a room's head, for building the next event without reading it all again. */
interface RoomView {
  head: RoomHead;
  extremities: Array<{ event_id: string; depth: number }>;
  chainLen: number;
  /** Current state entries this worker has looked up (a subset of the room's state). */
  state: Map<string, CachedEntry>;
  /** Keys known to have no current state. */
  absent: Set<string>;
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
