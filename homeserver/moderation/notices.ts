// Server notices (as Synapse's server_notices): one room per user, created by the server notices
// account, the user invited and the room tagged m.server_notice; the account posts, the user cannot.
import type { Logger } from 'pino';
import { MatrixError, notFound } from '../http/errors.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { RoomService } from '../rooms/service.ts';
import type { ModerationStore } from './store.ts';

export interface NoticesDeps {
  store: ModerationStore;
  rooms: RoomService;
  reader: RoomReader;
  /** The notices account, made on first use (no password: nobody logs in as it). */
  systemAccount: () => Promise<string>;
  /** Tags the room for the user (account data m.tag). */
  tag: (userId: string, roomId: string) => Promise<void>;
  userExists: (userId: string) => Promise<boolean>;
  serverName: string;
  roomName: string;
  log: Logger;
}

export class ServerNotices {
  /** One notices room creation per user at a time in this process. */
  private making = new Map<string, Promise<string>>();

  constructor(private d: NoticesDeps) {}

  /** Sends a notice to a local user; returns the event and the notices room. */
  async send(userId: string, content: Record<string, unknown>, type = 'm.room.message', stateKey?: string): Promise<{ event_id: string; room_id: string }> {
    if (!userId.endsWith(`:${this.d.serverName}`)) throw new MatrixError(400, 'M_INVALID_PARAM', 'user_id: server notices can only be sent to local users');
    if (!(await this.d.userExists(userId))) throw notFound('User not found');
    const sender = await this.d.systemAccount();
    const roomId = await this.roomFor(userId, sender);
    const ev = await this.d.rooms.engine.send(roomId, { type, sender, content, ...(stateKey !== undefined ? { stateKey } : {}) });
    return { event_id: ev.eventId, room_id: roomId };
  }

  /** The user's notices room: the existing one while they are invited or joined, else a new one. */
  private async roomFor(userId: string, sender: string): Promise<string> {
    const existing = await this.d.store.noticeRoom(userId);
    if (existing) {
      const room = await this.d.reader.roomMeta(existing);
      const m = room && (await this.d.reader.membership(userId, room.room_nid));
      if (m && (m.membership === 'join' || m.membership === 'invite')) return existing;
    }
    let p = this.making.get(userId);
    if (!p) {
      p = this.create(userId, sender).finally(() => this.making.delete(userId));
      this.making.set(userId, p);
    }
    return p;
  }

  private async create(userId: string, sender: string): Promise<string> {
    const { room_id } = await this.d.rooms.createRoom(sender, {
      preset: 'private_chat', name: this.d.roomName, invite: [userId],
      // The user reads; only the notices account (100) speaks.
      power_level_content_override: { users_default: -10 },
    });
    await this.d.store.setNoticeRoom(userId, room_id);
    await this.d.tag(userId, room_id);
    this.d.log.info({ userId, roomId: room_id }, 'server notices room created');
    return room_id;
  }
}
