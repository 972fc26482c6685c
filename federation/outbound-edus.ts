// Local users' typing, read receipts and device-list changes, sent as EDUs to the other servers
// of their rooms (none until remote members can join: the DAG work). Queued, never awaited by the
// local request that caused them.
import type { Logger } from 'pino';
import type { RoomReader } from '../homeserver/rooms/reader.ts';
import type { FederationSender } from './sender.ts';
import { LruCache } from '../homeserver/cache/lru.ts';

const ROOMS_CACHED = 10_000;
const ROOM_SERVERS_TTL_MS = 10_000;

export class OutboundEdus {
  constructor(private reader: RoomReader, private sender: FederationSender, private serverName: string, private log: Logger) {}

  private isLocal(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }

  /**
   * Each room's other servers, for a few seconds: typing, receipts and presence in a big room must
   * not read its member list every time. Dropped at once when a member event of the room is
   * persisted here; another worker's change is seen within the TTL.
   */
  private rooms = new LruCache<string, { servers: string[]; until: number }>(ROOMS_CACHED);

  /** A member event of the room was persisted: its servers are read again next time. */
  roomMembershipChanged(roomId: string): void {
    this.rooms.delete(roomId);
  }

  /** The servers, other than ours, with a member joined to any of these rooms. */
  async destinations(roomIds: string[]): Promise<string[]> {
    if (!roomIds.length) return [];
    const now = Date.now();
    const servers = new Set<string>();
    const missing: string[] = [];
    for (const r of roomIds) {
      const hit = this.rooms.get(r);
      if (hit && hit.until > now) for (const s of hit.servers) servers.add(s);
      else missing.push(r);
    }
    if (missing.length) {
      const members = await this.reader.roomMembersOf(missing);
      for (const r of missing) {
        const of = new Set((members.get(r) ?? []).map((u) => u.slice(u.indexOf(':') + 1)));
        of.delete(this.serverName);
        this.rooms.set(r, { servers: [...of], until: now + ROOM_SERVERS_TTL_MS });
        for (const s of of) servers.add(s);
      }
    }
    return [...servers];
  }

  private queue(roomIds: Promise<string[]> | string[], edu: { edu_type: string; content: Record<string, unknown> }): void {
    Promise.resolve(roomIds)
      .then((rooms) => this.destinations(rooms))
      .then((ds) => this.sender.queueEdus(ds.map((destination) => ({ destination, edu }))))
      .catch((err) => this.log.warn({ err, eduType: edu.edu_type }, 'EDU not queued'));
  }

  typing(roomId: string, userId: string, typing: boolean, timeoutMs: number): void {
    if (!this.isLocal(userId)) return;
    this.queue([roomId], { edu_type: 'm.typing', content: { room_id: roomId, user_id: userId, typing, timeout: timeoutMs } });
  }

  readReceipt(userId: string, roomId: string, eventId: string, threadId: string | undefined): void {
    if (!this.isLocal(userId)) return;
    const data: Record<string, unknown> = { ts: Date.now(), ...(threadId ? { thread_id: threadId } : {}) };
    this.queue([roomId], { edu_type: 'm.receipt', content: { [roomId]: { 'm.read': { [userId]: { event_ids: [eventId], data } } } } });
  }

  /** A local user's presence changed: m.presence to the servers of their rooms. */
  presence(userId: string, presence: string, roomIds: string[], statusMsg: string | null | undefined): void {
    if (!this.isLocal(userId) || !roomIds.length) return;
    const item: Record<string, unknown> = { user_id: userId, presence, last_active_ago: 0, currently_active: presence === 'online' };
    if (typeof statusMsg === 'string') item.status_msg = statusMsg;
    this.queue(roomIds, { edu_type: 'm.presence', content: { push: [item] } });
  }

  /** New master / self-signing keys of a local user: m.signing_key_update to the servers sharing a room. */
  signingKeyUpdate(userId: string, content: Record<string, unknown>): void {
    if (!this.isLocal(userId)) return;
    this.queue(this.reader.joinedRoomIds(userId), { edu_type: 'm.signing_key_update', content });
  }

  /** Receivers without the previous update fetch the whole list (user/devices): prev_id is left empty. */
  deviceChange(change: { userId: string; deviceId: string; deleted: boolean; streamId: number }): void {
    if (!this.isLocal(change.userId)) return;
    this.queue(this.reader.joinedRoomIds(change.userId), {
      edu_type: 'm.device_list_update',
      content: { user_id: change.userId, device_id: change.deviceId, stream_id: change.streamId, prev_id: [], deleted: change.deleted },
    });
  }
}
