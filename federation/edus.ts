// EDUs received in /send: each applied through its capability's service, only for users of the
// sending server (a server speaks for its own users). One bad EDU is logged and skipped; it never
// fails the others.
import type { Logger } from 'pino';
import type { Requester } from '../homeserver/http/context.ts';
import type { KeyService } from '../homeserver/e2ee/keys.ts';
import type { ToDeviceService } from '../homeserver/e2ee/to-device.ts';
import type { TypingService } from '../homeserver/ephemeral/typing.ts';
import type { PresenceService } from '../homeserver/ephemeral/presence-service.ts';
import type { ReceiptService } from '../homeserver/receipts/service.ts';
import { FRIEND_REQUEST_EDU, type FriendService } from '../homeserver/friends/service.ts';
import { isValidUserId, serverNameOf } from '../homeserver/protocol/identifiers.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** An EDU that cannot be applied; the reason is logged. */
export class BadEdu extends Error {}

export interface EduServices {
  toDevice: ToDeviceService;
  keys: KeyService;
  typing: TypingService;
  receipts: ReceiptService;
  presence: PresenceService;
  friends?: FriendService;
  /** The rate limits a local friend request pays (the sender's, the recipient's): a refusal ignores the EDU. */
  payFriendRequest?: (sender: string, target: string) => Promise<void>;
}

const PRESENCE_VALUES = new Set(['online', 'offline', 'unavailable']);
/** Remote typing lasts this long unless renewed (Synapse's FEDERATION_TIMEOUT for typing: 30 s by default per EDU). */
const REMOTE_TYPING_MS = 30_000;

export class EduHandler {
  constructor(private services: EduServices, private log: Logger) {}

  /** Applies the EDUs of one transaction in order; returns how many were applied. */
  async applyAll(origin: string, edus: unknown[]): Promise<number> {
    let applied = 0;
    for (const edu of edus) {
      try {
        await this.apply(origin, edu);
        applied++;
      } catch (err) {
        this.log.info({ origin, eduType: isObject(edu) ? edu.edu_type : undefined, err: (err as Error).message }, 'EDU not applied');
      }
    }
    return applied;
  }

  private fromOrigin(origin: string, userId: unknown): string {
    if (typeof userId !== 'string' || !isValidUserId(userId)) throw new BadEdu('not a user ID');
    if (serverNameOf(userId) !== origin) throw new BadEdu(`${userId} is not a user of ${origin}`);
    return userId;
  }

  private async apply(origin: string, edu: unknown): Promise<void> {
    if (!isObject(edu) || typeof edu.edu_type !== 'string' || !isObject(edu.content)) throw new BadEdu('not an EDU');
    const c = edu.content;
    switch (edu.edu_type) {
      case 'm.direct_to_device': {
        const sender = this.fromOrigin(origin, c.sender);
        if (typeof c.type !== 'string' || typeof c.message_id !== 'string' || !isObject(c.messages)) throw new BadEdu('m.direct_to_device needs type, message_id and messages');
        await this.services.toDevice.applyRemote(origin, sender, c.type, c.message_id, c.messages as Record<string, Record<string, Json>>);
        return;
      }
      case 'm.device_list_update':
      case 'm.signing_key_update': {
        await this.services.keys.applyRemoteDeviceListUpdate(this.fromOrigin(origin, c.user_id));
        return;
      }
      case 'm.typing': {
        const userId = this.fromOrigin(origin, c.user_id);
        if (typeof c.room_id !== 'string' || typeof c.typing !== 'boolean') throw new BadEdu('m.typing needs room_id and typing');
        await this.services.typing.setTyping(userId, c.room_id, c.typing, REMOTE_TYPING_MS);
        return;
      }
      case 'm.receipt': {
        // { room_id: { m.read: { user_id: { event_ids, data: { ts, thread_id? } } } } }
        for (const [roomId, byType] of Object.entries(c)) {
          if (!isObject(byType) || !isObject(byType['m.read'])) continue;
          for (const [userId, receipt] of Object.entries(byType['m.read'])) {
            const user = this.fromOrigin(origin, userId);
            if (!isObject(receipt) || !Array.isArray(receipt.event_ids) || typeof receipt.event_ids[0] !== 'string') continue;
            const thread = isObject(receipt.data) && typeof receipt.data.thread_id === 'string' ? receipt.data.thread_id : undefined;
            await this.services.receipts.receipt({ userId: user } as Requester, roomId, 'm.read', receipt.event_ids[0], thread);
          }
        }
        return;
      }
      case 'm.presence': {
        if (!Array.isArray(c.push)) throw new BadEdu('m.presence needs push');
        for (const p of c.push) {
          if (!isObject(p) || typeof p.presence !== 'string' || !PRESENCE_VALUES.has(p.presence)) continue;
          const user = this.fromOrigin(origin, p.user_id);
          await this.services.presence.set(user, p.presence as 'online', typeof p.status_msg === 'string' ? p.status_msg : null);
        }
        return;
      }
      case FRIEND_REQUEST_EDU: {
        // Checked by the service: the sender must be a user of the origin, the target one of ours.
        if (!this.services.friends) throw new BadEdu('friends are off on this server');
        await this.services.friends.applyRemote(origin, c, this.services.payFriendRequest);
        return;
      }
      default:
        throw new BadEdu(`unknown EDU type ${edu.edu_type}`);
    }
  }
}
