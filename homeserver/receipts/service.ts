import type { AccountDataService } from '../accountdata/service.ts';
import { forbidden, invalidParam, notFound } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { ClientEvent, EventRow, RoomReader } from '../rooms/reader.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import type { ReceiptRow, ReceiptStore } from './store.ts';

export const RECEIPT_TYPES = ['m.read', 'm.read.private', 'm.fully_read'] as const;
export type ReceiptType = (typeof RECEIPT_TYPES)[number];

/** The thread an event is in: its thread root's id, or 'main' (spec "Threading"; one hop). */
export function threadOf(content: unknown): string {
  const rel = (content as { 'm.relates_to'?: { rel_type?: unknown; event_id?: unknown } } | null | undefined)?.['m.relates_to'];
  if (rel && typeof rel === 'object' && rel.rel_type === 'm.thread' && typeof rel.event_id === 'string') return rel.event_id;
  return 'main';
}

/** Read-up-to positions of a user: per room unthreaded (0 when none) and per (room, thread). */
export interface ReadPositions {
  unthreaded: Map<string, number>;
  threads: Map<string, Map<string, number>>;
}

/**
 * Receipts (m.read, m.read.private, threaded or not) and read markers (m.fully_read as room
 * account data). A receipt takes a position of the event stream and wakes the room's members (a
 * private one only its user); /sync carries them as m.receipt ephemeral events.
 */
export class ReceiptService {
  constructor(
    private store: ReceiptStore,
    private reader: RoomReader,
    private accountData: AccountDataService,
    private tracker: StreamTracker,
    private notifier: Notifier,
  ) {}

  /** The user's membership of a room they are joined to (403 otherwise). */
  private async joined(userId: string, roomId: string): Promise<{ membership: string; stream_pos: number }> {
    if (!isValidRoomId(roomId)) throw invalidParam(`Invalid room ID ${roomId}`);
    const room = await this.reader.roomMeta(roomId);
    if (!room) throw forbidden(`User ${userId} not in room ${roomId}`);
    const m = await this.reader.membership(userId, room.room_nid);
    if (m?.membership !== 'join') throw forbidden(`User ${userId} not in room ${roomId}`);
    return m;
  }

  /** The event a user acknowledges: in the room, visible to them, and they are joined. */
  private async target(userId: string, roomId: string, eventId: string): Promise<EventRow> {
    const m = await this.joined(userId, roomId);
    if (typeof eventId !== 'string' || !eventId.startsWith('$') || Buffer.byteLength(eventId) > 255) throw notFound('Event not found.');
    const row = await this.reader.eventById(eventId);
    if (!row || row.room_id !== roomId) throw notFound('Event not found.');
    const visible = await this.reader.visibility.filter([row], userId, { membership: m.membership, stream_pos: Number(m.stream_pos) });
    if (!visible.length) throw notFound('Event not found.');
    return row;
  }

  /** POST /rooms/{roomId}/receipt/{receiptType}/{eventId}. */
  /** issue 11: told of every public read receipt stored (federation sends local users' to the room's other servers). */
  onReadReceipt: ((userId: string, roomId: string, eventId: string, threadId: string | undefined) => void) | undefined;

  async receipt(me: Requester, roomId: string, type: string, eventId: string, threadId: string | undefined): Promise<void> {
    if (!(RECEIPT_TYPES as readonly string[]).includes(type)) throw invalidParam(`Receipt type must be one of ${RECEIPT_TYPES.join(', ')}`);
    if (type === 'm.fully_read' && threadId !== undefined) throw invalidParam('thread_id is not compatible with m.fully_read receipts');
    const row = await this.target(me.userId, roomId, eventId);
    if (threadId !== undefined) checkThread(row, threadId);
    if (type === 'm.fully_read') await this.fullyRead(me.userId, roomId, eventId);
    else await this.store1(me.userId, roomId, type, row, threadId ?? '');
    if (type === 'm.read') this.onReadReceipt?.(me.userId, roomId, eventId, threadId);
  }

  /** POST /rooms/{roomId}/read_markers: every marker is checked before any is stored. */
  async readMarkers(me: Requester, roomId: string, markers: { fullyRead?: string; read?: string; readPrivate?: string }): Promise<void> {
    const rows = new Map<string, EventRow>();
    for (const id of [markers.fullyRead, markers.read, markers.readPrivate]) {
      if (id !== undefined && !rows.has(id)) rows.set(id, await this.target(me.userId, roomId, id));
    }
    if (!rows.size) await this.joined(me.userId, roomId);
    if (markers.fullyRead !== undefined) await this.fullyRead(me.userId, roomId, markers.fullyRead);
    if (markers.read !== undefined) await this.store1(me.userId, roomId, 'm.read', rows.get(markers.read)!, '');
    if (markers.readPrivate !== undefined) await this.store1(me.userId, roomId, 'm.read.private', rows.get(markers.readPrivate)!, '');
  }

  private async fullyRead(userId: string, roomId: string, eventId: string): Promise<void> {
    await this.accountData.put(userId, roomId, 'm.fully_read', { event_id: eventId });
  }

  private async store1(userId: string, roomId: string, type: string, row: EventRow, threadId: string): Promise<void> {
    const pos = await this.store.put({ roomId, userId, type, threadId, eventId: row.event_id, eventPos: Number(row.stream_pos), ts: Date.now() });
    if (pos === undefined) return;
    const keys = type === 'm.read.private' ? [userId] : [roomId];
    this.tracker.whenVisible(pos, () => this.notifier.notify('receipts', keys, pos));
  }

  /** Where the user has read up to in these rooms (their m.read / m.read.private receipts). */
  async readPositions(userId: string, roomIds: string[]): Promise<ReadPositions> {
    const out: ReadPositions = { unthreaded: new Map(), threads: new Map() };
    for (const r of await this.store.readUpTo(userId, roomIds)) {
      if (r.thread_id === '') out.unthreaded.set(r.room_id, r.event_pos);
      else {
        let t = out.threads.get(r.room_id);
        if (!t) out.threads.set(r.room_id, (t = new Map()));
        t.set(r.thread_id, r.event_pos);
      }
    }
    return out;
  }

  /** readPositions of several users at once (each with its rooms), in one statement. */
  async readPositionsMany(requests: Array<{ userId: string; roomIds: string[] }>): Promise<Map<string, ReadPositions>> {
    const users: string[] = [];
    const rooms: string[] = [];
    const out = new Map<string, ReadPositions>();
    for (const q of requests) {
      if (!out.has(q.userId)) out.set(q.userId, { unthreaded: new Map(), threads: new Map() });
      for (const r of q.roomIds) { users.push(q.userId); rooms.push(r); }
    }
    for (const r of await this.store.readUpToMany(users, rooms)) {
      const pos = out.get(r.user_id)!;
      if (r.thread_id === '') pos.unthreaded.set(r.room_id, Math.max(pos.unthreaded.get(r.room_id) ?? 0, r.event_pos));
      else {
        let t = pos.threads.get(r.room_id);
        if (!t) pos.threads.set(r.room_id, (t = new Map()));
        t.set(r.thread_id, Math.max(t.get(r.thread_id) ?? 0, r.event_pos));
      }
    }
    return out;
  }

  /** The receipts stream of /sync: m.receipt events of the user's joined rooms. */
  syncPart(): SyncPart {
    return {
      name: 'receipts',
      stream: 'receipts',
      current: () => this.tracker.current(),
      read: (ctx) => this.read(ctx),
    };
  }

  private async read(ctx: SyncPartContext): Promise<SyncPartOutput> {
    const initial = ctx.since === undefined || ctx.fullState;
    const since = initial ? undefined : ctx.since!.receipts;
    const to = ctx.to.receipts;
    if (since !== undefined && since >= to) return {};
    if (since !== undefined && this.notifier.changedSince('receipts', [...ctx.joinedRoomIds, ctx.me.userId], since) === false) return {};
    const rows = await this.store.changed(ctx.joinedRoomIds, ctx.me.userId, since, to);
    return rows.length ? { ephemeral: receiptEvents(rows) } : {};
  }
}

/** A threaded receipt must name the event's thread: 'main' or its thread root (the root itself too). */
function checkThread(row: EventRow, threadId: string): void {
  if (typeof threadId !== 'string' || threadId === '') throw invalidParam('thread_id field must be a non-empty string');
  const content = (JSON.parse(row.json) as { content?: unknown }).content;
  const thread = threadOf(content);
  if (threadId === 'main') {
    if (thread !== 'main') throw invalidParam('The event is in a thread, not in the main timeline');
    return;
  }
  if (thread !== threadId && row.event_id !== threadId) throw invalidParam('The event is not in the thread thread_id names');
}

/** Receipt rows as one m.receipt event per room ({ $event: { type: { user: { ts, thread_id? } } } }). */
function receiptEvents(rows: ReceiptRow[]): Map<string, ClientEvent[]> {
  const byRoom = new Map<string, Record<string, Record<string, Record<string, Record<string, unknown>>>>>();
  for (const r of rows) {
    let content = byRoom.get(r.room_id);
    if (!content) byRoom.set(r.room_id, (content = {}));
    const ev = (content[r.event_id] ??= {});
    const type = (ev[r.receipt_type] ??= {});
    const prev = type[r.user_id];
    // Several receipts of one user may point at one event: one entry per user is all the format
    // holds, and the unthreaded one says the most.
    if (prev && r.thread_id !== '') continue;
    type[r.user_id] = { ts: Number(r.ts), ...(r.thread_id !== '' ? { thread_id: r.thread_id } : {}) };
  }
  const out = new Map<string, ClientEvent[]>();
  for (const [roomId, content] of byRoom) out.set(roomId, [{ type: 'm.receipt', content } as unknown as ClientEvent]);
  return out;
}
