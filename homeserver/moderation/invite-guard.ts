// Invite-spam controls: an invite from an account younger than INVITE_MIN_ACCOUNT_AGE_HOURS, or
// (INVITE_REQUIRE_SHARED_ROOM) from someone sharing no room with the invitee, is refused (403) or,
// with INVITE_SPAM_ACTION=drop, answered as sent but never delivered. INVITE_MAX_PER_DAY caps the
// invites one user sends in 24 hours. Users whose server role may moderate rooms are exempt.
import { MatrixError } from '../http/errors.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { ModerationStore } from './store.ts';

export interface InviteRules {
  minAccountAgeHours: number;
  requireSharedRoom: boolean;
  action: 'refuse' | 'drop';
  maxPerDay: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

export class InviteGuard {
  constructor(
    private rules: InviteRules,
    private store: ModerationStore,
    private reader: RoomReader,
    private createdTs: (userId: string) => Promise<number | undefined>,
    private exempt: (userId: string) => Promise<boolean>,
  ) {}

  /** 'drop': answer as sent, send nothing; throws to refuse. */
  async check(sender: string, target: string): Promise<'allow' | 'drop'> {
    const r = this.rules;
    if (!r.minAccountAgeHours && !r.requireSharedRoom && !r.maxPerDay) return 'allow';
    if (await this.exempt(sender)) return 'allow';
    let spam: string | undefined;
    if (r.minAccountAgeHours > 0) {
      const created = await this.createdTs(sender);
      if (created !== undefined && Date.now() - created < r.minAccountAgeHours * 3_600_000) spam = `accounts younger than ${r.minAccountAgeHours} hours cannot invite`;
    }
    if (!spam && r.requireSharedRoom && !(await this.reader.sharingARoom(sender, [target])).has(target)) spam = 'you can only invite users you share a room with';
    if (spam) {
      if (r.action === 'drop') return 'drop';
      throw new MatrixError(403, 'M_FORBIDDEN', `Invite refused: ${spam}`);
    }
    if (r.maxPerDay > 0) {
      const now = Date.now();
      if (!(await this.store.takeInvite(sender, now - DAY_MS, r.maxPerDay, now))) {
        throw new MatrixError(429, 'M_LIMIT_EXCEEDED', `Invite refused: at most ${r.maxPerDay} invites a day`, { retry_after_ms: 3_600_000 });
      }
    }
    return 'allow';
  }
}
