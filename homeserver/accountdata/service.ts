import type { AccountDataRow, AccountDataStore } from './store.ts';

export type { AccountDataRow };

/**
 * Account data, global (room '') and per room, and room tags (the m.tag room account data): what
 * every other capability uses (push rules, /sync, room upgrades); only this folder reaches its table.
 */
export class AccountDataService {
  constructor(private store: AccountDataStore) {}

  get(userId: string, roomId: string, type: string): Promise<Record<string, unknown> | undefined> {
    return this.store.get(userId, roomId, type);
  }

  /** Writes an entry; it takes a stream position and wakes the user's /sync. */
  put(userId: string, roomId: string, type: string, content: Record<string, unknown>): Promise<void> {
    return this.store.put(userId, roomId, type, content);
  }

  /**
   * Read-modify-write of one entry, concurrent writers taking turns (see AccountDataStore.update).
   * `change` returns the new content, or undefined to leave it; returns the content now stored.
   */
  update(
    userId: string, roomId: string, type: string,
    change: (current: Record<string, unknown> | undefined) => Record<string, unknown> | undefined,
  ): Promise<Record<string, unknown> | undefined> {
    return this.store.update(userId, roomId, type, change);
  }

  /** A room upgrade: members' tags and m.direct entries follow the room to its successor. */
  copyToUpgradedRoom(userIds: string[], oldRoomId: string, newRoomId: string): Promise<void> {
    return this.store.copyToUpgradedRoom(userIds, oldRoomId, newRoomId);
  }

  /** Which of these users have an entry of this type (global) whose JSON mentions `text`. */
  usersMentioning(userIds: string[], type: string, text: string): Promise<string[]> {
    return this.store.usersMentioning(userIds, type, text);
  }

  /** What changed in (since, to]; everything when since is undefined. */
  changed(userId: string, since: number | undefined, to: number): Promise<AccountDataRow[]> {
    return this.store.changed(userId, since, to);
  }

  /** A room's tags for the user ({} when none). */
  async tags(userId: string, roomId: string): Promise<Record<string, unknown>> {
    const c = await this.store.get(userId, roomId, 'm.tag');
    return (c?.tags as Record<string, unknown>) ?? {};
  }

  /** Sets one tag of a room, keeping the others. */
  async setTag(userId: string, roomId: string, tag: string, content: Record<string, unknown>): Promise<void> {
    await this.store.update(userId, roomId, 'm.tag', (c) => ({ tags: { ...((c?.tags as Record<string, unknown>) ?? {}), [tag]: content } }));
  }

  /** Removes one tag of a room (the entry is written even when the tag was not there). */
  async deleteTag(userId: string, roomId: string, tag: string): Promise<void> {
    await this.store.update(userId, roomId, 'm.tag', (c) => {
      const tags = { ...((c?.tags as Record<string, unknown>) ?? {}) };
      delete tags[tag];
      return { tags };
    });
  }
}
