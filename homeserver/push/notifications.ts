// Notifications: push actions for every member on every event (evaluated in bulk once the room
// engine has built the events, and written in the events' own statement, as Synapse stages them in
// the event's transaction), unread counts in /sync, GET /notifications, and the feed pushers read.
//
// Durability: the actions commit with their events. What evaluation could not do live (it failed,
// or a worker died holding a retry) is caught up: each worker process keeps in push_progress the
// position up to which every event it wrote is evaluated, with a heartbeat; the row of a worker that
// died is taken over by a live one, which evaluates again every event after it (inserts are
// idempotent).
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Requester } from '../http/context.ts';
import { invalidParam } from '../http/errors.ts';
import { LruCache } from '../cache/lru.ts';
import type { ReadPositions, ReceiptService } from '../receipts/service.ts';
import type { EventRow, RoomReader } from '../rooms/reader.ts';
import type { DerivedWrites, PersistedEvent } from '../rooms/engine.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { Notifier } from '../realtime/notifier.ts';
import { Topic } from '../subscriptions/topic.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import { inputOfRow, type BulkEvaluator, type PushInput } from './bulk.ts';
import type { PushStore, PushWrite, StoredAction } from './store.ts';

export interface StagedNotification { userId: string; roomId: string; eventId: string; streamPos: number; actions: unknown[]; highlight: boolean; ts: number }
export interface NotificationFeed {
  /** The user's notifying push actions after streamPos, oldest first. */
  after(userId: string, streamPos: number, limit: number): Promise<StagedNotification[]>;
  /** The user's unread notifications across all rooms (counts.unread of a push). */
  unreadCount(userId: string): Promise<number>;
}

/** How often a worker records its progress (and shows it is alive), and when another takes it over. */
const HEARTBEAT_MS = 2_000;
const STALE_MS = 10_000;
/** Users whose read positions are kept between their syncs. */
const READ_POSITIONS_CACHED = 50_000;
/** Events read per query when catching up. */
const CATCH_UP_PAGE = 500;

type CountRow = { room_id: string; thread_id: string; n: number; h: number };

export class NotificationService implements NotificationFeed {
  /** New notifying actions are durable (pushers send them). */
  readonly notified = new Topic<{ userIds: string[]; streamPos: number }>('notified');
  private readonly instance = randomUUID();
  /** Lowest position whose evaluation failed or is being caught up (progress stays below it). */
  private floor = Infinity;
  private retryFrom: number | undefined;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private ticking: Promise<void> | undefined;

  constructor(
    private store: PushStore,
    private bulk: BulkEvaluator,
    private reader: RoomReader,
    private receipts: ReceiptService,
    private tracker: StreamTracker,
    private notifier: Notifier,
    private log: Logger,
  ) {}

  /** Records this worker's progress, then takes over what dead workers left. */
  async start(): Promise<void> {
    await this.store.saveProgress(this.instance, this.tracker.current(), Date.now());
    this.timers.push(setInterval(() => void this.tick(), HEARTBEAT_MS).unref());
    await this.takeOver();
  }

  /** Waits for queued evaluations; a clean stop leaves nothing to take over. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.ticking;
    if (this.floor === Infinity && this.retryFrom === undefined) await this.store.dropProgress(this.instance);
    else await this.store.saveProgress(this.instance, this.upto(), Date.now());
  }

  /**
   * The room engine's transaction writes: evaluates the events a write just built and hands back
   * their push actions, which the engine writes in the events' own statement (one commit for both:
   * a crash keeps both or neither, and a /sync that reads the events reads their counts). Never
   * rejects: when evaluation fails, the events are written without actions and evaluated again
   * from the next tick (the saved progress stays below them until then).
   */
  async transactionWrites(rooms: Array<{ roomId: string; roomNid: number; events: PersistedEvent[] }>): Promise<DerivedWrites | undefined> {
    try {
      const w = emptyWrite();
      for (const r of rooms) merge(w, await this.bulk.evaluateRoom(r.events.map((e) => inputOf(e, r.roomId, r.roomNid))));
      const writes = this.store.transactionWrites(w);
      if (!writes) return undefined;
      return { writes, committed: () => this.published(w) };
    } catch (err) {
      const lowest = Math.min(...rooms.flatMap((r) => r.events.map((e) => e.streamPos)));
      this.log.error({ err }, 'push evaluation failed; it is retried');
      this.retryFrom = Math.min(this.retryFrom ?? Infinity, lowest - 1);
      return undefined;
    }
  }

  private async write(w: PushWrite): Promise<void> {
    await this.store.write(w);
    this.published(w);
  }

  /** Tells subscribers (pushers) who has new notifying actions, once they are durable. */
  private published(w: PushWrite): void {
    if (!w.notified.size) return;
    const userIds = [...w.notified];
    const streamPos = Math.max(0, ...w.shared.map((x) => x.streamPos), ...w.actions.map((x) => x.streamPos));
    // Not awaited: subscribers (pushers) must not hold up the events' visibility.
    void this.notified.publish({ userIds, streamPos }).catch((err) => this.log.error({ err }, 'a notified subscriber failed'));
  }

  /** Evaluates every event after `from` (all rooms), page by page. */
  private async catchUp(from: number): Promise<void> {
    let pos = from;
    for (;;) {
      const rows = await this.reader.eventsOfAllRoomsAfter(pos, Number.MAX_SAFE_INTEGER, CATCH_UP_PAGE);
      if (!rows.length) return;
      const byRoom = new Map<number, PushInput[]>();
      for (const r of rows) byRoom.set(Number(r.room_nid), [...(byRoom.get(Number(r.room_nid)) ?? []), inputOfRow(r)]);
      const w = emptyWrite();
      for (const roomRows of byRoom.values()) merge(w, await this.bulk.evaluateRoom(roomRows));
      await this.write(w);
      pos = Number(rows[rows.length - 1]!.stream_pos);
      if (rows.length < CATCH_UP_PAGE) return;
    }
  }

  /** Up to where every event this worker wrote (and every event it took over) is evaluated. */
  private upto(): number {
    let lowest = this.tracker.current();
    if (this.floor < lowest) lowest = this.floor;
    if (this.retryFrom !== undefined && this.retryFrom < lowest) lowest = this.retryFrom;
    return lowest;
  }

  private tick(): Promise<void> {
    if (this.stopped || this.ticking) return this.ticking ?? Promise.resolve();
    this.ticking = (async () => {
      try {
        if (this.retryFrom !== undefined) {
          const from = this.retryFrom;
          this.retryFrom = undefined;
          await this.evaluateAgain(from);
        }
        await this.store.saveProgress(this.instance, this.upto(), Date.now());
        await this.takeOver();
      } catch (err) {
        this.log.error({ err }, 'push progress tick failed');
      } finally {
        this.ticking = undefined;
      }
    })();
    return this.ticking;
  }

  /** Evaluates again what dead workers may have left unevaluated. */
  private async takeOver(): Promise<void> {
    const now = Date.now();
    const from = await this.store.takeOver(this.instance, now - STALE_MS, now);
    if (from === undefined) return;
    this.log.info({ from }, 'evaluating push rules again after a worker stopped without finishing');
    await this.evaluateAgain(from);
  }

  /**
   * Evaluates every event after `from` again, holding the saved progress at `from` meanwhile; on
   * failure the next tick retries from there.
   */
  private async evaluateAgain(from: number): Promise<void> {
    this.floor = Math.min(this.floor, from);
    try {
      await this.catchUp(from);
    } catch (err) {
      this.retryFrom = Math.min(this.retryFrom ?? Infinity, from);
      throw err;
    } finally {
      this.floor = Infinity;
    }
  }

  // ---- counts ---------------------------------------------------------------------------------

  /** Unread counts per room and per thread, after the user's read positions. */
  /** Count requests of this turn of the event loop, read together (see batchedCounts). */
  private countBatch: Array<{ userId: string; roomIds: string[]; resolve: (rows: CountRow[]) => void; reject: (err: unknown) => void }> | undefined;

  /**
   * A woken /sync's counts. One send wakes every member's sync in the same turn of the event
   * loop: their requests are read together, two statements for all instead of two each.
   */
  private batchedCounts(userId: string, roomIds: string[]): Promise<CountRow[]> {
    return new Promise((resolve, reject) => {
      if (!this.countBatch) {
        this.countBatch = [];
        setImmediate(() => void this.readCountBatch());
      }
      this.countBatch.push({ userId, roomIds, resolve, reject });
    });
  }

  /**
   * Users' read positions as last read, and up to where the receipts stream was readable before
   * that read: still right while no receipt of theirs (private: their user key) or of those rooms
   * (public: the room key) was notified since. A woken /sync then costs one statement, not two.
   */
  private readPositionCache = new LruCache<string, { asOf: number; rooms: Set<string>; positions: ReadPositions }>(READ_POSITIONS_CACHED);

  /** The read positions of a batch's users: cached where nothing moved, else one statement for the rest. */
  private async readPositionsOf(batch: Array<{ userId: string; roomIds: string[] }>): Promise<Map<string, ReadPositions>> {
    const wanted = new Map<string, Set<string>>();
    for (const q of batch) {
      const rooms = wanted.get(q.userId) ?? new Set<string>();
      for (const r of q.roomIds) rooms.add(r);
      wanted.set(q.userId, rooms);
    }
    const out = new Map<string, ReadPositions>();
    const misses = new Map<string, Set<string>>();
    for (const [userId, rooms] of wanted) {
      const hit = this.readPositionCache.get(userId);
      const roomIds = [...rooms];
      const fresh = hit !== undefined && this.notifier.changedSince('receipts', [userId, ...hit.rooms], hit.asOf) === false;
      if (fresh && roomIds.every((r) => hit.rooms.has(r))) out.set(userId, hit.positions);
      // Rooms read before stay in the entry: a user's syncs ask for different rooms in turn.
      else misses.set(userId, fresh ? new Set([...hit.rooms, ...rooms]) : rooms);
    }
    if (!misses.size) return out;
    // Read before the statement: a receipt after it is notified past it and drops the entry.
    const asOf = this.tracker.current();
    const read = await this.receipts.readPositionsMany([...misses].map(([userId, rooms]) => ({ userId, roomIds: [...rooms] })));
    for (const [userId, rooms] of misses) {
      const positions = read.get(userId)!;
      out.set(userId, positions);
      this.readPositionCache.set(userId, { asOf, rooms, positions });
    }
    return out;
  }

  private async readCountBatch(): Promise<void> {
    const batch = this.countBatch ?? [];
    this.countBatch = undefined;
    try {
      const positions = await this.readPositionsOf(batch);
      const pairs = { users: [] as string[], rooms: [] as string[], upto: [] as number[] };
      const threads = { users: [] as string[], rooms: [] as string[], ids: [] as string[], upto: [] as number[] };
      for (const [userId, pos] of positions) {
        for (const [roomId, t] of pos.threads) {
          for (const [threadId, upto] of t) {
            threads.users.push(userId);
            threads.rooms.push(roomId);
            threads.ids.push(threadId);
            threads.upto.push(upto);
          }
        }
      }
      const seen = new Set<string>();
      for (const q of batch) {
        for (const roomId of q.roomIds) {
          const k = `${q.userId}\0${roomId}`;
          if (seen.has(k)) continue;
          seen.add(k);
          pairs.users.push(q.userId);
          pairs.rooms.push(roomId);
          pairs.upto.push(positions.get(q.userId)!.unthreaded.get(roomId) ?? 0);
        }
      }
      const byUser = new Map<string, CountRow[]>();
      for (const r of await this.store.countsMany(pairs, threads)) {
        const list = byUser.get(r.user_id) ?? [];
        list.push(r);
        byUser.set(r.user_id, list);
      }
      for (const q of batch) {
        const rooms = new Set(q.roomIds);
        q.resolve((byUser.get(q.userId) ?? []).filter((r) => rooms.has(r.room_id)));
      }
    } catch (err) {
      for (const q of batch) q.reject(err);
    }
  }

  /** The /sync part of unread_notifications and unread_thread_notifications (no stream of its own). */
  syncPart(): SyncPart {
    return { name: 'unread counts', read: (ctx) => this.readCounts(ctx) };
  }

  private async readCounts(ctx: SyncPartContext): Promise<SyncPartOutput> {
    const roomIds = this.roomsThatMayShow(ctx);
    if (!roomIds.length) return {};
    const perThread = ctx.filter.room?.timeline?.unread_thread_notifications === true;
    const rows = await this.batchedCounts(ctx.me.userId, roomIds);
    const fields = new Map<string, Record<string, unknown>>();
    for (const roomId of roomIds) {
      fields.set(roomId, { unread_notifications: { notification_count: 0, highlight_count: 0 }, ...(perThread ? { unread_thread_notifications: {} } : {}) });
    }
    for (const r of rows) {
      const f = fields.get(r.room_id)!;
      const room = f.unread_notifications as { notification_count: number; highlight_count: number };
      if (perThread && r.thread_id !== 'main') {
        (f.unread_thread_notifications as Record<string, unknown>)[r.thread_id] = { notification_count: r.n, highlight_count: r.h };
      } else {
        room.notification_count += r.n;
        room.highlight_count += r.h;
      }
    }
    return { roomFields: fields, news: false };
  }

  /**
   * The joined rooms an incremental sync may show (counts only matter there): where events or
   * receipts moved; all of them when the user's own receipts or account data moved, on an initial
   * sync, or when the notifier cannot tell.
   */
  private roomsThatMayShow(ctx: SyncPartContext): string[] {
    const since = ctx.since;
    if (!since || ctx.fullState) return ctx.joinedRoomIds;
    const me = [ctx.me.userId];
    if (this.notifier.changedSince('receipts', me, since.receipts) !== false || this.notifier.changedSince('accountData', me, since.accountData) !== false) return ctx.joinedRoomIds;
    return ctx.joinedRoomIds.filter((roomId) =>
      this.notifier.changedSince('events', [roomId], since.events) !== false || this.notifier.changedSince('receipts', [roomId], since.receipts) !== false);
  }

  // ---- NotificationFeed -----------------------------------------------------------------------

  async after(userId: string, streamPos: number, limit: number): Promise<StagedNotification[]> {
    return (await this.store.after(userId, streamPos, limit)).map((r) => staged(userId, r));
  }

  async unreadCount(userId: string): Promise<number> {
    const roomIds = await this.reader.joinedRoomIds(userId);
    const rows = await this.batchedCounts(userId, roomIds);
    return rows.reduce((n, r) => n + r.n, 0);
  }

  // ---- GET /notifications ---------------------------------------------------------------------

  async list(me: Requester, from: string | undefined, limit: number, only: string | undefined): Promise<Record<string, unknown>> {
    let before: number | undefined;
    if (from !== undefined) {
      if (!/^[0-9]{1,15}$/.test(from)) throw invalidParam('from is not a token of /notifications');
      before = Number(from);
    }
    const rows = await this.store.page(me.userId, before, limit + 1, only === 'highlight');
    const page = rows.slice(0, limit);
    const positions = await this.receipts.readPositions(me.userId, [...new Set(page.map((r) => r.room_id))]);
    const events = new Map<string, EventRow>();
    for (const r of page) {
      const row = await this.reader.eventById(r.event_id);
      if (row) events.set(r.event_id, row);
    }
    const formatted = await this.reader.format([...events.values()], { userId: me.userId, omitRoomId: true });
    const byId = new Map(formatted.map((e) => [e.event_id as string, e]));
    const notifications = page.filter((r) => byId.has(r.event_id)).map((r) => {
      const readUpTo = Math.max(positions.unthreaded.get(r.room_id) ?? 0, positions.threads.get(r.room_id)?.get(r.thread_id) ?? 0);
      return {
        actions: r.actions === null ? ['notify'] : JSON.parse(r.actions),
        event: byId.get(r.event_id),
        read: Number(r.stream_pos) <= readUpTo,
        room_id: r.room_id,
        ts: Number(r.ts),
      };
    });
    const out: Record<string, unknown> = { notifications };
    if (rows.length > limit && page.length) out.next_token = String(page[page.length - 1]!.stream_pos);
    return out;
  }
}

/** An event of the engine's write as PushInput. */
function inputOf(e: PersistedEvent, roomId: string, roomNid: number): PushInput {
  const pdu = e.pdu as unknown as Record<string, unknown>;
  const content = (pdu.content ?? {}) as Record<string, unknown>;
  return {
    eventId: e.eventId, roomId, roomNid, pos: e.streamPos, type: String(pdu.type), stateKey: typeof pdu.state_key === 'string' ? pdu.state_key : undefined,
    sender: String(pdu.sender), ts: Number(pdu.origin_server_ts), membership: pdu.type === 'm.room.member' ? String(content.membership) : undefined,
    stateBefore: e.stateBefore!, stateAfter: e.stateAfter!, redacted: false, pdu: { ...pdu, event_id: e.eventId },
  };
}

function emptyWrite(): PushWrite {
  return { shared: [], actions: [], members: [], notified: new Set() };
}

function merge(into: PushWrite, w: PushWrite): void {
  into.shared.push(...w.shared);
  into.actions.push(...w.actions);
  into.members.push(...w.members);
  for (const u of w.notified) into.notified.add(u);
}

function staged(userId: string, r: StoredAction): StagedNotification {
  return {
    userId,
    roomId: r.room_id,
    eventId: r.event_id,
    streamPos: Number(r.stream_pos),
    actions: r.actions === null ? ['notify'] : JSON.parse(r.actions),
    highlight: r.highlight,
    ts: Number(r.ts),
  };
}
