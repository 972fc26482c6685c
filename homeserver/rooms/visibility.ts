import type { RoomStore, EventRow } from './store.ts';

interface AtEvent {
  historyVisibility: string;
  membership: string | undefined;
}

/**
 * History visibility (client-server spec, "Server behaviour"): which events of a room a user may
 * see, judged by the room's state at each event. Looks up each distinct state snapshot once.
 */
export class Visibility {
  private cache = new Map<string, AtEvent>();

  constructor(private store: RoomStore) {}

  private async at(group: number, userId: string): Promise<AtEvent> {
    const key = `${group}|${userId}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const rows = await this.store.stateAtGroup(this.store.db, group, {
      pairs: [['m.room.history_visibility', ''], ['m.room.member', userId]],
    });
    let historyVisibility = 'shared';
    let membership: string | undefined;
    for (const r of rows) {
      const content = JSON.parse(r.json).content ?? {};
      if (r.redacted_by) continue;
      if (r.type === 'm.room.history_visibility' && typeof content.history_visibility === 'string') historyVisibility = content.history_visibility;
      if (r.type === 'm.room.member') membership = r.membership ?? undefined;
    }
    const v = { historyVisibility, membership };
    if (this.cache.size > 100_000) this.cache.clear();
    this.cache.set(key, v);
    return v;
  }

  /**
   * Keeps the events `userId` may see. `current` is the user's current membership of the room and
   * the stream position of that membership event.
   */
  async filter(rows: EventRow[], userId: string, current: { membership: string; stream_pos: number } | undefined): Promise<EventRow[]> {
    const out: EventRow[] = [];
    for (const row of rows) {
      const at = await this.at(Number(row.state_after), userId);
      // Users always see their own membership events, whatever the visibility.
      const own = row.type === 'm.room.member' && row.state_key === userId;
      if (own || allowed(at, row, current)) out.push(row);
    }
    return out;
  }
}

function allowed(at: AtEvent, row: EventRow, current: { membership: string; stream_pos: number } | undefined): boolean {
  if (at.historyVisibility === 'world_readable') return true;
  if (at.membership === 'join') return true;
  if (at.historyVisibility === 'shared' && current) {
    // Joined at some point after the event: joined now, or left after having joined later on.
    if (current.membership === 'join') return true;
    if ((current.membership === 'leave' || current.membership === 'ban') && Number(row.stream_pos) < Number(current.stream_pos)) return true;
  }
  if (at.historyVisibility === 'invited' && at.membership === 'invite') return true;
  return false;
}
