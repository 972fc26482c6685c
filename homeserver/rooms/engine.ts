import { LruCache } from '../cache/lru.ts';
import type { Logger } from 'pino';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { finalizeEvent, type SigningKey } from '../protocol/signing.ts';
import { AuthError, authEventSelection, checkEventAuth, roomIdFromCreateEventId, stateKey, type PDU, type StateMap } from '../protocol/auth.ts';
import { addContentHash, computeRoomId, generateV1EventId } from '../protocol/hashes.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';
import { RoomStore, pduOf, type EventRow, type RoomRow } from './store.ts';
import type { RecentEvents } from './recent-events.ts';
import { searchableText } from './search-text.ts';
import { AuthorisedPersister, MAX_PREV_EVENTS, type AuthorisedOptions, type AuthorisedResult } from './dag.ts';
import { PersistStore, WriteSet, isHeadMoved, type Query, type RoomHead, type TransactionWrites } from './persist-store.ts';

/** What a local user (or the server) wants to put in a room; the engine builds the event. */
export interface EventDraft {
  type: string;
  sender: string;
  content: Record<string, unknown>;
  stateKey?: string;
  /** m.room.redaction: the event redacted. */
  redacts?: string;
  /**
   * The client's transaction: `txnId` as the client sent it (echoed in unsigned.transaction_id),
   * `key` what makes a retry the same request — the txn id within its endpoint, as Synapse scopes
   * transactions by request path.
   */
  txn?: { deviceId: string; txnId: string; key: string };
  /** The event's origin_server_ts (else now): a v12 create event's, whose hash names the room. */
  originServerTs?: number;
}

/**
 * The event a draft becomes, before hashing and signing (v12: a create event has no room_id; v1/v2
 * cite events as [event_id, hashes] pairs, and the caller adds the server-assigned event_id).
 */
function unsignedEvent(draft: EventDraft, roomId: string, version: RoomVersion, at: { prevEvents: unknown[]; depth: number }, authIds: unknown[]): Record<string, unknown> {
  const pdu: Record<string, unknown> = {
    auth_events: authIds,
    content: draft.content,
    depth: at.depth,
    origin_server_ts: draft.originServerTs ?? Date.now(),
    prev_events: at.prevEvents,
    room_id: roomId,
    sender: draft.sender,
    type: draft.type,
  };
  if (draft.stateKey !== undefined) pdu.state_key = draft.stateKey;
  if (draft.redacts !== undefined && !version.redactsInContent) pdu.redacts = draft.redacts;
  if (version.roomIdIsCreateEventHash && draft.type === 'm.room.create') delete pdu.room_id;
  return pdu;
}

/**
 * Room versions 12+: the ID of the room this create draft (with its originServerTs) makes, as the
 * engine will build it (the room's first event: no prev or auth events, depth 1).
 */
export function hashedRoomId(createDraft: EventDraft & { originServerTs: number }, version: RoomVersion): string {
  return computeRoomId(addContentHash(unsignedEvent(createDraft, '', version, { prevEvents: [], depth: 1 }, [])), version);
}

export interface PersistedEvent {
  eventId: string;
  streamPos: number;
  pdu: PDU;
  /** issue 6 (receipts-push helper): state snapshots before and after the event, when this write made it. */
  stateBefore?: number;
  stateAfter?: number;
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
 * Transactions persisting at once, and rooms one of them may carry. A commit waits for the WAL
 * flush; writing the queued events of several rooms under one commit, with a few such commits in
 * flight, is what lets throughput grow with load instead of with the number of rooms.
 */
const LANES = 4;
/** Rooms whose head this worker keeps in memory, and state entries (known or absent) per room. */
const ROOM_VIEWS = 10_000;
const VIEW_ENTRIES = 20_000;
/** Writes rebuilt after another worker moved a room's head, before giving up. */
const MAX_ATTEMPTS = 30;
const MAX_ROOMS_PER_TRANSACTION = 16;

/**
 * The room engine's write path. Every local event goes through `send`: build (prev events = forward
 * extremities, auth events from current state, depth) → hash → sign → check auth → one transaction
 * writes it all → notify. Sends to one room are queued and persisted in order, several per
 * transaction when they pile up; different rooms persist in parallel.
 */
export class RoomEngine {
  private queues = new Map<string, Pending[]>();
  /** Rooms whose events a write is persisting right now (one at a time per room). */
  private busy = new Set<string>();
  private lanesInUse = 0;
  private cache = new LruCache<number, RoomView>(ROOM_VIEWS);
  private persist: PersistStore;
  private listeners: Array<(e: PersistedEvent[], roomId: string) => void> = [];
  private creations = new Slots(CREATIONS_AT_ONCE);
  /** The recent-events cache this engine feeds its writes to (only as the one writer: see feed). */
  private recent: RecentEvents | undefined;
  /** Per room: the last position this engine committed, or undefined when not known for sure. */
  private lastCommitted = new LruCache<number, number>(ROOM_VIEWS);

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

  private transactionWrites: TransactionWritesHook | undefined;

  /**
   * What another capability derives from the events and writes in their own statement (push
   * actions: Synapse stages them in the event's transaction). So a /sync that reads the events
   * reads what was derived from them, a crash never keeps one without the other, and a send costs
   * no extra statement or commit. The engine imports none of them.
   */
  setTransactionWrites(hook: TransactionWritesHook): void {
    this.transactionWrites = hook;
  }

  /** The hook's writes for the events just built (undefined when there are none). */
  private async derivedWrites(rooms: Array<{ roomId: string; roomNid: number; results: Array<PersistedEvent | Error> }>): Promise<DerivedWrites | undefined> {
    const hook = this.transactionWrites;
    if (!hook) return undefined;
    const built = rooms.map((r) => ({ roomId: r.roomId, roomNid: r.roomNid, events: r.results.filter((x): x is PersistedEvent => !(x instanceof Error) && x.stateBefore !== undefined) }))
      .filter((r) => r.events.length);
    if (!built.length) return undefined;
    return hook(built);
  }

  /**
   * Feeds the recent-events cache with what this engine writes, so that the syncs a send wakes read
   * the new events from memory: its rows at visibility, and — only while this process is the
   * database's one writer (no shared positions: another worker's writes are not seen here) — for
   * a room none of whose events commits after a position, that nothing is there to read.
   */
  feed(recent: RecentEvents): void {
    this.recent = recent;
    recent.trustWriter({ lastCommitted: (nid) => (this.tracker.isShared ? undefined : this.lastCommitted.get(nid)) });
  }

  /** Records the rooms' new heads right after a commit, before the positions become readable. */
  private committed(rooms: Array<{ nid: number; written?: WrittenRows }>): void {
    for (const r of rooms) if (r.written) this.lastCommitted.set(r.nid, r.written.last);
  }

  /** A write whose outcome is not known (it may have committed): what this engine knew of the rooms goes. */
  private unknownOutcome(nids: number[]): void {
    for (const nid of nids) this.lastCommitted.delete(nid);
  }

  /** Subscribe to persisted events (federation sender, push, …): the engine imports none of them. */
  onPersisted(listener: (e: PersistedEvent[], roomId: string) => void): void {
    this.listeners.push(listener);
  }

  private authorised: AuthorisedPersister | undefined;
  /** Room versions 1 and 2: the content hashes of recent events, which the next events cite. */
  private refHashes = new LruCache<string, string>(ROOM_VIEWS);

  /** v1/v2: [event_id, {sha256}] for each cited event (`known`: those at hand), read when not known. */
  private async eventRefs(q: Query, ids: string[], known: Map<string, PDU> = new Map()): Promise<Array<[string, { sha256: string }]>> {
    const out: Array<[string, { sha256: string }]> = [];
    for (const id of ids) {
      let sha = this.refHashes.get(id) ?? (known.get(id)?.hashes as { sha256?: string } | undefined)?.sha256;
      if (sha === undefined) {
        const row = await q.eventById(id);
        sha = row ? (JSON.parse(row.json) as { hashes?: { sha256?: string } }).hashes?.sha256 : undefined;
      }
      if (sha === undefined) throw new Error(`no content hash known for ${id}`);
      this.refHashes.set(id, sha);
      out.push([id, { sha256: sha }]);
    }
    return out;
  }

  /** Persisting authorised events (dag.ts), and the counters of its state resolutions. */
  get dag(): AuthorisedPersister {
    return (this.authorised ??= new AuthorisedPersister(this.store));
  }

  /**
   * The second entry point: PDUs with their own prev_events and auth_events, from this server or
   * another, whose signatures and hashes the caller checked (federation). Persisted in one
   * transaction (see AuthorisedPersister); accepted live events are announced and handed to the
   * persisted-event listeners like local ones. Answers what happened to each event.
   */
  async persistAuthorised(roomId: string, pdus: PDU[], opts: AuthorisedOptions = {}): Promise<AuthorisedResult[]> {
    const meta = await this.store.roomMeta(roomId);
    // A local build of the room must not run meanwhile in this worker (other workers: the row lock).
    const unlock = meta ? await this.lockBuilds([meta.room_nid]) : () => {};
    let out: Awaited<ReturnType<AuthorisedPersister['persist']>>;
    try {
      for (let attempt = 1; ; attempt++) {
        let positions: number[] = [];
        // Push evaluation reads on a second pooled connection while this transaction holds one:
        // bounded, as room creations are.
        const release = await this.creations.acquire();
        try {
          out = await this.dag.persist(roomId, pdus, opts, async (allocate) => (positions = await this.tracker.reserve(allocate)),
            (roomNid, live) => this.derivedWrites([{ roomId, roomNid, results: live }]));
          break;
        } catch (err) {
          if (meta) {
            this.cache.delete(meta.room_nid);
            this.unknownOutcome([meta.room_nid]);
          }
          this.tracker.done(positions);
          // A deadlock with another worker's local write to the room: nothing was written, again.
          if (!isHeadMoved(err) || attempt >= MAX_ATTEMPTS) throw err;
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 2 ** attempt)));
        } finally {
          release();
        }
      }
    } finally {
      unlock();
    }
    const positions = out.positions;
    // What this worker knew of the room's head and recent rows is no longer the whole story.
    this.cache.delete(out.roomNid);
    this.unknownOutcome([out.roomNid]);
    this.recent?.forget(out.roomNid);
    const live: PersistedEvent[] = [...out.live, ...out.outOfBand].sort((a, b) => a.streamPos - b.streamPos);
    out.derived?.committed();
    this.announce(roomId, live, out.roomNid, undefined);
    this.tracker.done(positions);
    this.afterCommit(roomId, live);
    return out.results;
  }

  /** A room's gaps (prev events it misses, with the events waiting for them): where to backfill. */
  async backfillPoints(roomId: string): Promise<Array<{ missing_event_id: string; waiting_event_id: string; depth: number }>> {
    const meta = await this.store.roomMeta(roomId);
    return meta ? this.dag.store.backfillPoints(meta.room_nid) : [];
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
      if (!q) this.queues.set(roomId, (q = []));
      q.push({ draft, resolve, reject });
      this.schedule();
    });
  }

  /** Resolves once every queued send is persisted (or failed): a draining shutdown waits for it. */
  async drain(): Promise<void> {
    while (this.queues.size > 0 || this.lanesInUse > 0) await new Promise((r) => setTimeout(r, 5));
  }

  /** Starts writes while lanes are free and rooms that no write holds have events queued. */
  private schedule(): void {
    while (this.lanesInUse < LANES) {
      const ready = [...this.queues.keys()].filter((roomId) => !this.busy.has(roomId));
      if (!ready.length) return;
      // Spread the ready rooms over the free lanes, so that several commits are in flight.
      const share = Math.min(MAX_ROOMS_PER_TRANSACTION, Math.ceil(ready.length / (LANES - this.lanesInUse)));
      const work = ready.slice(0, share).map((roomId) => {
        const q = this.queues.get(roomId)!;
        const batch = q.splice(0, MAX_BATCH);
        if (!q.length) this.queues.delete(roomId);
        this.busy.add(roomId);
        return { roomId, batch };
      });
      this.lanesInUse += 1;
      void this.persistRooms(work).finally(() => {
        this.lanesInUse -= 1;
        for (const w of work) this.busy.delete(w.roomId);
        this.schedule();
      });
    }
  }

  /**
   * One write for the queued events of several rooms: one statement, one WAL flush. A draft that
   * cannot be built fails alone (buildBatch); a statement that fails for what one draft brought is
   * written again in halves (writeInParts), so that only the draft that breaks it fails.
   */
  private async persistRooms(work: Array<{ roomId: string; batch: Pending[] }>): Promise<void> {
    const rooms: WriteRoom[] = [];
    for (const w of work) {
      try {
        const { room, version } = await this.version(w.roomId);
        rooms.push({ ...w, nid: room.room_nid, version, results: [] });
      } catch (err) {
        for (const p of w.batch) p.reject(err);
      }
    }
    if (!rooms.length) return;
    const failure = await this.writeRooms(rooms);
    if (failure === undefined) {
      for (const r of rooms) this.settle(r);
      return;
    }
    const drafts = rooms.reduce((n, r) => n + r.batch.length, 0);
    if (drafts === 1 || !isDraftFault(failure)) {
      const err = drafts === 1 ? draftError(failure, this.log) : failure;
      for (const r of rooms) for (const p of r.batch) p.reject(err);
      return;
    }
    // Nothing of the failed statement was written (one statement, one transaction): write the
    // drafts again in halves, so the rest of the batch succeeds without the one that broke it.
    this.log.warn({ err: failure, rooms: rooms.map((r) => r.roomId), drafts }, 'batched write failed: writing it again in parts');
    await this.writeInParts(rooms.flatMap((r) => r.batch.map((p) => ({ r, p }))));
  }

  /**
   * Writes queued drafts in two halves, in order (a room's drafts in the first half before its
   * drafts in the second), halving again what fails for a draft's value: one bad draft among n
   * costs about 2·log2(n) statements and fails alone.
   */
  private async writeInParts(items: Array<{ r: WriteRoom; p: Pending }>): Promise<void> {
    const half = Math.ceil(items.length / 2);
    for (const part of [items.slice(0, half), items.slice(half)]) {
      if (!part.length) continue;
      const byRoom = new Map<string, WriteRoom>();
      for (const { r, p } of part) {
        const one = byRoom.get(r.roomId) ?? { ...r, batch: [], results: [] };
        one.batch.push(p);
        byRoom.set(r.roomId, one);
      }
      const rooms = [...byRoom.values()];
      const err = await this.writeRooms(rooms);
      if (err === undefined) for (const r of rooms) this.settle(r);
      else if (part.length === 1) part[0]!.p.reject(draftError(err, this.log));
      else if (isDraftFault(err)) await this.writeInParts(part);
      else for (const { p } of part) p.reject(err);
    }
  }

  /**
   * Builds and writes some rooms' batches, rebuilding while another worker moved a head; fills
   * each room's results, or answers the error that stopped the write (nothing of it written).
   */
  private async writeRooms(rooms: WriteRoom[]): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      const positions: number[] = [];
      try {
        let derived: DerivedWrites | undefined;
        const parts = rooms.map((r): BatchInput => ({ roomId: r.roomId, nid: r.nid, version: r.version, drafts: r.batch.map((p) => p.draft) }));
        const results = await this.persist.connection((q) => this.persistRoomBatches(q, parts, positions, (d) => (derived = d)));
        this.committed(parts);
        rooms.forEach((r, i) => {
          r.results = results[i]!;
          r.written = parts[i]!.written;
          this.announce(r.roomId, persisted(r.results), r.nid, r.written);
        });
        derived?.committed();
        this.tracker.done(positions);
        return undefined;
      } catch (err) {
        // The in-memory views may hold what was not written: forget them.
        for (const r of rooms) this.cache.delete(r.nid);
        if (!isHeadMoved(err)) this.unknownOutcome(rooms.map((r) => r.nid));
        this.tracker.done(positions);
        // Another worker moved the room's head since it was read: build again on top of what is
        // there, after a random pause that grows, so two busy workers stop colliding.
        if (isHeadMoved(err) && attempt < MAX_ATTEMPTS) {
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 2 ** attempt)));
          continue;
        }
        if (!(err instanceof MatrixError)) this.log.error({ err, rooms: rooms.map((r) => r.roomId) }, 'persisting events failed');
        return err;
      }
    }
  }

  /** After a commit: notify, then answer each draft of the room with its event or its error. */
  private settle(r: WriteRoom): void {
    this.afterCommit(r.roomId, persisted(r.results));
    r.results.forEach((x, i) => (x instanceof Error ? r.batch[i]!.reject(x) : r.batch[i]!.resolve(x)));
  }

  /**
   * Creates a room and persists its first events in one transaction; with `alias`, the alias is
   * claimed in the same transaction (first), so of concurrent creations with one alias exactly
   * one commits and the others leave nothing behind (400 M_ROOM_IN_USE).
   */
  async createRoom(roomId: string, version: RoomVersion, creator: string, drafts: EventDraft[], alias?: string): Promise<PersistedEvent[]> {
    const positions: number[] = [];
    let results: Array<PersistedEvent | Error> = [];
    let roomNid = 0;
    // Before the transaction takes its connection (see buildDraft's interning); what is over the
    // size limit is refused while building, and never interned.
    const fits = (s: string) => Buffer.byteLength(s) <= MAX_KEY_BYTES;
    for (const d of drafts) {
      if (fits(d.type)) await this.store.types.nid(this.store.db, d.type);
      if (d.stateKey !== undefined && fits(d.stateKey)) await this.store.stateKeys.nid(this.store.db, d.stateKey);
    }
    let derived: DerivedWrites | undefined;
    let part: BatchInput | undefined;
    // The derived writes may read on a second pooled connection while this transaction holds one:
    // a bounded number of creations at once keeps the pool from running dry (lanes are bounded too).
    const release = await this.creations.acquire();
    try {
      await this.persist.transaction(async (q) => {
        if (alias !== undefined && !(await q.claimAlias(alias, roomId, creator))) throw new MatrixError(400, 'M_ROOM_IN_USE', 'Room alias already taken');
        roomNid = await q.insertRoom(roomId, version.id, creator);
        part = { roomId, nid: roomNid, version, drafts };
        [results] = (await this.persistRoomBatches(q, [part], positions, (d) => (derived = d), true)) as [Array<PersistedEvent | Error>];
      });
      this.committed([part!]);
    } catch (err) {
      this.cache.delete(roomNid);
      this.unknownOutcome([roomNid]);
      this.tracker.done(positions);
      throw err;
    } finally {
      release();
    }
    const done = results as PersistedEvent[];
    derived?.committed();
    this.announce(roomId, done, roomNid, part!.written);
    this.tracker.done(positions);
    this.afterCommit(roomId, done);
    return done;
  }

  /**
   * Registered before the positions are marked done, so that the moment they become readable the
   * waiters are notified (and the cache holds the rows) in the same step: no reader can see the
   * position while the notifier still says the room is unchanged.
   */
  private announce(roomId: string, events: PersistedEvent[], roomNid: number, written: WrittenRows | undefined): void {
    if (!events.length) return;
    const keys = new Set<string>([roomId]);
    for (const e of events) if (e.pdu.type === 'm.room.member' && e.pdu.state_key) keys.add(e.pdu.state_key);
    const maxPos = events.reduce((m, e) => Math.max(m, e.streamPos), 0);
    const recent = this.recent;
    this.tracker.whenVisible(maxPos, () => {
      // Readable now: the syncs this wakes find the rows in memory. Safe with other writers too: the
      // write replaced the room's head at `before`, so no other event of the room lies in between.
      if (recent && written?.rows.length) recent.written(roomNid, written.before, written.rows);
      this.notifier.notify('events', keys, maxPos);
    });
  }

  private afterCommit(roomId: string, events: PersistedEvent[]): void {
    if (!events.length) return;
    for (const l of this.listeners) {
      try {
        l(events, roomId);
      } catch (err) {
        this.log.error({ err }, 'persisted-event listener failed');
      }
    }
  }

  private buildLocks = new Map<number, Promise<void>>();

  /** Waits until no other build holds these rooms (taken in ascending order: no cycles). */
  private async lockBuilds(nids: number[]): Promise<() => void> {
    const releases: Array<() => void> = [];
    for (const nid of [...new Set(nids)].sort((a, b) => a - b)) {
      const before = this.buildLocks.get(nid);
      let release!: () => void;
      const mine = new Promise<void>((r) => (release = r));
      const tail = (before ?? Promise.resolve()).then(() => mine);
      this.buildLocks.set(nid, tail);
      if (before) await before;
      releases.push(() => {
        release();
        if (this.buildLocks.get(nid) === tail) this.buildLocks.delete(nid);
      });
    }
    return () => releases.forEach((r) => r());
  }

  /**
   * What this worker knows of a room's head: valid while the room's row still shows the same state
   * snapshot and last position (read under the room's lock), so another worker's write is noticed.
   */
  private async roomView(q: Query, head: RoomHead, roomNid: number): Promise<RoomView> {
    const cached = this.cache.get(roomNid);
    if (cached && cached.head.last_pos === head.last_pos) return cached;
    const view: RoomView = {
      head,
      chainLen: head.state_group === null ? 0 : await q.chainLen(head.state_group),
      state: new LruCache(VIEW_ENTRIES),
      absent: new LruCache(VIEW_ENTRIES),
    };
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
      const typeNid = await this.store.types.lookup(q, type);
      const keyNid = typeNid === undefined ? undefined : await this.store.stateKeys.lookup(q, sk);
      if (typeNid === undefined || keyNid === undefined) {
        view.absent.set(key, true);
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
          view.absent.set(m.key, true);
          continue;
        }
        const entry: CachedEntry = { eventNid: row.event_nid, eventId: row.event_id, typeNid: m.typeNid, keyNid: m.keyNid, pdu: pduOf(row) };
        view.state.set(m.key, entry);
        out.set(m.key, entry);
      }
    }
    return out;
  }

  /**
   * Builds, authorises and writes the drafts of several rooms: one round trip reads the rooms'
   * heads and takes ids, one statement writes every row (its own transaction, one WAL flush) and
   * fails with isHeadMoved if a head changed meanwhile — optimistic concurrency between workers;
   * within a worker a room is only ever in one write at a time.
   */
  private async persistRoomBatches(
    q: Query,
    rooms: BatchInput[],
    positions: number[],
    onDerived: (d: DerivedWrites | undefined) => void,
    allOrNothing = false,
  ): Promise<Array<Array<PersistedEvent | Error>>> {
    // Builds of one room never overlap (a retry and the next batch): each works on the room's view.
    const unlock = await this.lockBuilds(rooms.map((r) => r.nid));
    let w: WriteSet;
    let results: Array<Array<PersistedEvent | Error>>;
    let heads = new Map<number, RoomHead>();
    try {
      // Ids for every draft, and which drafts retry a send already persisted (they answer with it).
      const all = rooms.flatMap((r) => r.drafts);
      const withTxn = all.filter((d) => d.txn);
      let allocated: Array<{ nid: number; pos: number }> = [];
      let prior = new Map<string, string>();
      heads = new Map<number, RoomHead>();
      const ids = await this.tracker.reserve(async () => {
        const r = await q.prepare(rooms.map((x) => x.nid), all.length, withTxn.map((d) => d.sender), withTxn.map((d) => d.txn!.deviceId), withTxn.map((d) => d.txn!.key));
        allocated = r.ids;
        prior = r.prior;
        heads = r.heads;
        return allocated.map((x) => x.pos);
      });
      positions.push(...ids);
      w = new WriteSet();
      results = [];
      let offset = 0;
      for (const r of rooms) {
        results.push(await this.buildBatch(q, heads.get(r.nid)!, r.roomId, r.nid, r.version, r.drafts, allocated.slice(offset, offset + r.drafts.length), prior, w));
        offset += r.drafts.length;
      }
    } finally {
      unlock();
    }
    if (allOrNothing) {
      const failed = results.flat().find((r): r is Error => r instanceof Error);
      if (failed) throw failed;
    }
    // Evaluated on what was built, in write order (one room is in one write at a time).
    const derived = await this.derivedWrites(rooms.map((r, i) => ({ roomId: r.roomId, roomNid: r.nid, results: results[i]! })));
    onDerived(derived);
    await q.write(w, derived?.writes);
    rooms.forEach((r, i) => (r.written = writtenRows(w, r, heads.get(r.nid)!, results[i]!)));
    return results;
  }

  /**
   * Builds and authorises one room's drafts in order, adding their rows to `w`. A draft the auth
   * rules deny yields an Error in its slot and writes nothing.
   */
  private async buildBatch(
    q: Query,
    head: RoomHead,
    roomId: string,
    roomNid: number,
    version: RoomVersion,
    drafts: EventDraft[],
    allocated: Array<{ nid: number; pos: number }>,
    prior: Map<string, string>,
    w: WriteSet,
  ): Promise<Array<PersistedEvent | Error>> {
    const out: Array<PersistedEvent | Error> = [];
    const view = await this.roomView(q, head, roomNid);
    const txnKey = (d: EventDraft) => `${d.sender}\0${d.txn!.deviceId}\0${d.txn!.key}`;
    const inBatch = new Map<string, PersistedEvent>();

    // Local events cite every forward extremity (up to the spec's 20): forks merge at the next send.
    let prevEvents = view.head.extremities.slice(0, MAX_PREV_EVENTS);
    let depth = view.head.depth + 1;
    let stateGroup: number | null = view.head.state_group;
    let chainLen = view.chainLen;

    const current = new Map<string, { typeNid: number; keyNid: number; nid: number }>();
    let lastEvent: string | undefined;
    let lastPos = view.head.last_pos;

    const addGroup = (group: number, prev: number | null, chain: number) => {
      w.groups.ids.push(group);
      w.groups.rooms.push(roomNid);
      w.groups.prev.push(prev);
      w.groups.chain.push(chain);
    };
    const addEntry = (group: number, typeNid: number, keyNid: number, eventNid: number) => {
      w.entries.groups.push(group);
      w.entries.types.push(typeNid);
      w.entries.keys.push(keyNid);
      w.entries.nids.push(eventNid);
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
      // Phase 1 computes everything that can fail and changes nothing: a draft that fails here
      // (hostile content, a limit, a database refusal) fails alone, and the batch goes on.
      let built: BuiltDraft;
      try {
        const r = await this.buildDraft(q, roomId, roomNid, version, view, draft, { prevEvents, depth, chainLen });
        if (r instanceof Error) {
          out.push(r);
          continue;
        }
        built = r;
      } catch (err) {
        out.push(draftError(err, this.log));
        continue;
      }
      // Phase 2 only appends to the write set and the view: nothing here can fail half-way.
      const { eventId, signed, json, typeNid, keyNid, stateAfter: allocatedGroup, fullState, authNids, replaces, text } = built;
      const isState = draft.stateKey !== undefined;
      const { nid: eventNid, pos: streamPos } = allocated[i]!;
      const stateBefore: number = stateGroup!;
      let stateAfter: number = stateBefore;
      if (isState) {
        stateAfter = allocatedGroup!;
        if (fullState) {
          // A full snapshot: the current state as stored, with this batch's changes and this event.
          const all = new Map(fullState.map((r) => [`${r.type_nid}:${r.state_key_nid}`, r]));
          for (const c of current.values()) all.set(`${c.typeNid}:${c.keyNid}`, { type_nid: c.typeNid, state_key_nid: c.keyNid, event_nid: c.nid });
          all.set(`${typeNid}:${keyNid}`, { type_nid: typeNid, state_key_nid: keyNid!, event_nid: eventNid });
          addGroup(stateAfter, null, 0);
          for (const r of all.values()) addEntry(stateAfter, r.type_nid, r.state_key_nid, r.event_nid);
          chainLen = 0;
        } else {
          addGroup(stateAfter, stateBefore, chainLen + 1);
          addEntry(stateAfter, typeNid, keyNid!, eventNid);
          chainLen += 1;
        }
        stateGroup = stateAfter;
        current.set(`${typeNid}:${keyNid}`, { typeNid, keyNid: keyNid!, nid: eventNid });
        w.current.set(`${roomNid}:${typeNid}:${keyNid}`, { room: roomNid, type: typeNid, key: keyNid!, nid: eventNid });
      }
      const relates = draft.content['m.relates_to'] as { rel_type?: unknown; event_id?: unknown } | null | undefined;
      const membership = draft.type === 'm.room.member' ? String(draft.content.membership) : null;
      w.events.push({
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
        // Indexed columns: a value longer than any event id (255 bytes) names no event, and would
        // overflow the index row; the content keeps it, the relation columns do not.
        relType: indexable(relates?.rel_type),
        relatesTo: indexable(relates?.event_id),
        redacts: draft.redacts ?? null,
        txnDevice: draft.txn?.deviceId ?? null,
        txnId: draft.txn?.txnId ?? null,
        prevEventIds: prevEvents,
        authEventNids: authNids,
        json,
        containsUrl: typeof draft.content.url === 'string',
      });
      if (membership) {
        w.members.set(`${roomNid}:${draft.stateKey}`, { room: roomNid, user: draft.stateKey!, membership, nid: eventNid, pos: streamPos, sender: draft.sender });
      }
      if (draft.txn) {
        w.txns.users.push(draft.sender);
        w.txns.devices.push(draft.txn.deviceId);
        w.txns.txns.push(draft.txn.key);
        w.txns.events.push(eventId);
      }
      if (draft.redacts) w.redact(draft.redacts, eventId);
      if (text) {
        w.search.nids.push(eventNid);
        w.search.rooms.push(roomNid);
        w.search.keys.push(text.key);
        w.search.texts.push(text.value);
      }

      const pdu = { ...signed, event_id: eventId } as unknown as PDU;
      // issue 6 (receipts-push helper): the state snapshots around it (push evaluation tracks state by them).
      const persisted: PersistedEvent = { eventId, streamPos, pdu, stateBefore, stateAfter };
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

    const extremities = lastEvent ? [lastEvent, ...view.head.extremities.slice(MAX_PREV_EVENTS)] : view.head.extremities;
    const newDepth = lastEvent ? depth - 1 : view.head.depth;
    w.heads.rooms.push(roomNid);
    w.heads.groups.push(stateGroup);
    w.heads.positions.push(lastPos);
    w.heads.expected.push(view.head.last_pos);
    w.heads.extremities.push(extremities);
    w.heads.depths.push(newDepth);

    // The view now describes the room after this batch (dropped by the caller if the write fails).
    view.chainLen = chainLen;
    view.head = { state_group: stateGroup, last_pos: lastPos, extremities, depth: newDepth };
    return out;
  }

  /**
   * Phase 1 of building one draft: size limits, auth events, the auth check, hashing, signing,
   * canonical JSON, interned ids and a state group id. Changes nothing the write would carry;
   * answers an Error (the draft's refusal) or throws what went wrong.
   */
  private async buildDraft(
    q: Query,
    roomId: string,
    roomNid: number,
    version: RoomVersion,
    view: RoomView,
    draft: EventDraft,
    at: { prevEvents: string[]; depth: number; chainLen: number },
  ): Promise<BuiltDraft | Error> {
    const tooBig = sizeLimitError(roomId, draft);
    if (tooBig) return tooBig;
    const isState = draft.stateKey !== undefined;
    const pairs = authEventSelection({ type: draft.type, sender: draft.sender, state_key: draft.stateKey, content: draft.content }, version);
    // v12+: the create event is never an auth event, but the auth rules read it all the same.
    const impliedCreate = version.roomIdIsCreateEventHash && draft.type !== 'm.room.create';
    const wanted: Array<[string, string]> = [...pairs];
    if (isState) wanted.push([draft.type, draft.stateKey!]);
    if (impliedCreate) wanted.push(['m.room.create', '']);
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
    const create = impliedCreate ? found.get(stateKey('m.room.create', '')) : undefined;
    if (create) authState.set(stateKey('m.room.create', ''), create.pdu);
    const replaces = isState ? found.get(stateKey(draft.type, draft.stateKey!)) : undefined;

    let unsignedPdu: Record<string, unknown>;
    if (version.eventIdFormat === 'v1') {
      // v1/v2: events cite [event_id, hashes] pairs, and this server names the event.
      const authPdus = new Map([...authState.values()].map((p) => [p.event_id!, p]));
      const refs = { prevEvents: await this.eventRefs(q, at.prevEvents), depth: at.depth };
      unsignedPdu = unsignedEvent(draft, roomId, version, refs, await this.eventRefs(q, authIds, authPdus));
      unsignedPdu.event_id = generateV1EventId(this.serverName);
    } else unsignedPdu = unsignedEvent(draft, roomId, version, at, authIds);
    try {
      checkEventAuth(unsignedPdu as unknown as PDU, authState, version);
    } catch (err) {
      if (err instanceof AuthError) return forbidden(err.message);
      throw err;
    }
    const { event: signed, eventId } = finalizeEvent(unsignedPdu, this.serverName, this.signingKey, version);
    // v12+: the room is named by its create event; a create event that names another is not this room's.
    if (version.roomIdIsCreateEventHash && draft.type === 'm.room.create' && roomIdFromCreateEventId(eventId) !== roomId) {
      throw new Error(`the create event ${eventId} does not name the room ${roomId}`);
    }
    if (version.eventIdFormat === 'v1') this.refHashes.set(eventId, (signed.hashes as { sha256: string }).sha256);
    const json = canonicalJson(signed);
    if (Buffer.byteLength(json) > MAX_EVENT_BYTES) return new MatrixError(413, 'M_TOO_LARGE', `Event is over ${MAX_EVENT_BYTES} bytes`);
    const text = searchableText(draft);
    // Interned on the held connection (never a second one from the pool: that deadlocks under
    // load), except inside a transaction, whose rollback would leave a cached id with no row:
    // createRoom interns its drafts before its transaction, so that path only ever hits the cache.
    const interning = q.inTransaction ? this.store.db : q;
    const typeNid = await this.store.types.nid(interning, draft.type);
    const keyNid = isState ? await this.store.stateKeys.nid(interning, draft.stateKey!) : null;
    let stateAfter: number | undefined;
    let fullState: Array<{ type_nid: number; state_key_nid: number; event_nid: number }> | undefined;
    if (isState) {
      stateAfter = await q.allocateStateGroup();
      // The batch's own changes (`current`) are laid over this when the snapshot is built.
      if (at.chainLen + 1 >= SNAPSHOT_EVERY) fullState = await q.currentStateNids(roomNid);
    }
    return { eventId, signed, json, typeNid, keyNid, stateAfter, fullState, authNids, replaces, text };
  }
}

/** A room's part of one write: its queued sends and, once built, each one's event or error. */
interface WriteRoom {
  roomId: string;
  batch: Pending[];
  nid: number;
  version: RoomVersion;
  results: Array<PersistedEvent | Error>;
  written?: WrittenRows;
}

/** One room's drafts as persistRoomBatches takes them; `written` once they are. */
interface BatchInput {
  roomId: string;
  nid: number;
  version: RoomVersion;
  drafts: EventDraft[];
  written?: WrittenRows;
}

/** What a write stored of one room: its new rows (as read back), the room's last position before them and after. */
interface WrittenRows {
  before: number;
  last: number;
  rows: EventRow[];
}

/** The rows a write set stored for one room, as the database would give them back. */
function writtenRows(w: WriteSet, r: BatchInput, head: RoomHead, results: Array<PersistedEvent | Error>): WrittenRows {
  const pdus = new Map<string, PDU>();
  for (const x of results) if (!(x instanceof Error)) pdus.set(x.eventId, x.pdu);
  const rows: EventRow[] = [];
  for (const e of w.events) {
    if (e.roomNid !== r.nid) continue;
    rows.push({
      event_nid: e.nid, event_id: e.eventId, room_nid: e.roomNid, room_id: r.roomId, room_version: r.version.id, stream_pos: e.streamPos,
      depth: e.depth, type: String(pdus.get(e.eventId)!.type), state_key: pdus.get(e.eventId)!.state_key ?? null,
      sender: e.sender, origin_server_ts: e.ts, state_before: e.stateBefore, state_after: e.stateAfter, replaces_nid: e.replacesNid,
      membership: e.membership, redacted_by: e.redactedBy ?? null, txn_device: e.txnDevice, txn_id: e.txnId, json: e.json,
    });
  }
  const last = rows.length ? rows[rows.length - 1]!.stream_pos : head.last_pos;
  return { before: head.last_pos, last, rows };
}

export type { TransactionWrites };

/** What a capability writes in the events' statement, and what it does once they committed. */
export interface DerivedWrites {
  writes?: TransactionWrites;
  /** After the commit (never after a failed write): e.g. tell pushers there is something new. */
  committed(): void;
}

/** Given the events a write built (per room, in order), what to write with them. Must not reject. */
export type TransactionWritesHook = (rooms: Array<{ roomId: string; roomNid: number; events: PersistedEvent[] }>) => Promise<DerivedWrites | undefined>;

/** The events of a write's results (errors left out). */
function persisted(results: Array<PersistedEvent | Error>): PersistedEvent[] {
  return results.filter((x): x is PersistedEvent => !(x instanceof Error));
}

/** Room creations whose transaction may wait on a second pooled connection at once. */
const CREATIONS_AT_ONCE = 4;

/** A counting semaphore. */
class Slots {
  private free: number;
  private waiting: Array<() => void> = [];
  constructor(n: number) {
    this.free = n;
  }
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((r) => this.waiting.push(r));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    };
  }
}

/** What phase 1 of building a draft computed, for phase 2 to append to the write. */
interface BuiltDraft {
  eventId: string;
  signed: Record<string, unknown>;
  json: string;
  typeNid: number;
  keyNid: number | null;
  stateAfter: number | undefined;
  fullState: Array<{ type_nid: number; state_key_nid: number; event_nid: number }> | undefined;
  authNids: number[];
  replaces: CachedEntry | undefined;
  text: { key: string; value: string } | undefined;
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
  chainLen: number;
  /** Current state entries this worker has looked up (a subset of the room's state). */
  state: LruCache<string, CachedEntry>;
  /** Keys known to have no current state. */
  absent: LruCache<string, true>;
}

/** Spec "Size limits" of a PDU: these keys at most 255 bytes each (Synapse: 413 M_TOO_LARGE). */
const MAX_KEY_BYTES = 255;

/** A string short enough for an indexed column (at most MAX_KEY_BYTES), else null. */
function indexable(v: unknown): string | null {
  return typeof v === 'string' && Buffer.byteLength(v) <= MAX_KEY_BYTES ? v : null;
}

function sizeLimitError(roomId: string, draft: EventDraft): MatrixError | undefined {
  // Transaction ids are keys of an index, within their endpoint's key; real ones are short.
  if (draft.txn && Buffer.byteLength(draft.txn.txnId) > MAX_KEY_BYTES) {
    return new MatrixError(400, 'M_INVALID_PARAM', `Transaction ID is over ${MAX_KEY_BYTES} bytes`);
  }
  const keys: Array<[string, string | undefined]> = [['type', draft.type], ['state_key', draft.stateKey], ['sender', draft.sender], ['room_id', roomId]];
  for (const [name, value] of keys) {
    if (value !== undefined && Buffer.byteLength(value) > MAX_KEY_BYTES) {
      return new MatrixError(413, 'M_TOO_LARGE', `'${name}' is over ${MAX_KEY_BYTES} bytes`);
    }
  }
  return undefined;
}

/**
 * SQLSTATE classes of errors a value can cause: data exceptions (22: NUL, invalid encoding,
 * out of range), integrity (23) and program limits (54). Only these make it worth writing a
 * failed batch's drafts one by one; a lost connection would fail each of them too.
 */
function isDraftFault(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return /^(22|23|54)/.test(code);
  return err instanceof TypeError || err instanceof RangeError;
}

/** What a draft's sender is told when building or writing it failed. */
function draftError(err: unknown, log: Logger): Error {
  if (err instanceof MatrixError) return err;
  if (err instanceof TypeError && err.message.startsWith('canonical JSON')) return new MatrixError(400, 'M_BAD_JSON', err.message.replace(/^canonical JSON: \$/, 'Event'));
  const code = (err as { code?: unknown } | null)?.code;
  // Data exceptions, program limits and check violations: the database refused a value of the
  // event. (Unique violations stay as they are: a retried transaction id is answered from them.)
  if (typeof code === 'string' && (/^(22|54)/.test(code) || code === '23514')) return new MatrixError(400, 'M_BAD_JSON', 'The event holds a value that cannot be stored');
  log.error({ err }, 'building an event failed');
  return err instanceof Error ? err : new Error(String(err));
}

