// The rooms the server owns (issue 9): the global room (and every auto-join room the server made)
// belongs to the internal server account, which holds power level 100 there. Server moderators —
// every holder of a role with `rooms.moderate` — get power level 50 (the room's moderator level)
// from that account, in the room's own m.room.power_levels: they then redact, kick and set the topic
// through the normal client API, every client shows them as moderators, and the room's history
// shows who granted it. A role change that adds or removes rooms.moderate updates the rooms at once;
// start-up brings them in line with the roles (a change made while the server was down).
import type { Logger } from 'pino';
import type { Requester } from '../http/context.ts';
import type { RoleService } from './roles.ts';

/** The power level server moderators get in the server's rooms. */
export const SERVER_MODERATOR_LEVEL = 50;

export interface ServerRoomAccess {
  /** The server account's user id. */
  systemUserId: string;
  /** The room ids the server owns (its auto-join rooms that exist). */
  roomIds(): Promise<string[]>;
  powerLevels(me: Requester, roomId: string): Promise<Record<string, unknown>>;
  setPowerLevels(me: Requester, roomId: string, content: Record<string, unknown>): Promise<void>;
}

export class ServerRoomModerators {
  constructor(private roles: RoleService, private rooms: ServerRoomAccess, private log: Logger) {}

  private get system(): Requester {
    return { userId: this.rooms.systemUserId, deviceId: 'server', isGuest: false, isAdmin: true, tokenId: 0 };
  }

  /** Everyone who should moderate the server's rooms now. */
  async moderators(): Promise<Set<string>> {
    const roles = await this.roles.roles();
    const moderating = new Set(roles.filter((r) => r.permissions.includes('rooms.moderate')).map((r) => r.name));
    const out = new Set<string>();
    for (const a of await this.roles.assignments()) if (moderating.has(a.role) && a.user_id !== this.rooms.systemUserId) out.add(a.user_id);
    return out;
  }

  /**
   * Brings the server's rooms in line: `only` set → just these users (after a role change), else
   * everyone (start-up). A moderator gets the moderator level (never lowered if higher); a user who
   * lost it goes back to the default (only if the level is the one we gave).
   */
  async sync(only?: string[]): Promise<void> {
    const mods = await this.moderators();
    for (const roomId of await this.rooms.roomIds()) {
      try {
        const pl = await this.rooms.powerLevels(this.system, roomId);
        const users = { ...((pl.users as Record<string, number> | undefined) ?? {}) };
        const candidates = only ?? [...new Set([...mods, ...Object.keys(users)])];
        let changed = false;
        for (const u of candidates) {
          if (u === this.rooms.systemUserId) continue;
          const level = users[u];
          if (mods.has(u) && (level === undefined || level < SERVER_MODERATOR_LEVEL)) { users[u] = SERVER_MODERATOR_LEVEL; changed = true; }
          if (!mods.has(u) && level === SERVER_MODERATOR_LEVEL) { delete users[u]; changed = true; }
        }
        if (changed) await this.rooms.setPowerLevels(this.system, roomId, { ...pl, users });
      } catch (err) {
        this.log.warn({ err, roomId }, 'server moderators not updated in a server room');
      }
    }
  }
}
