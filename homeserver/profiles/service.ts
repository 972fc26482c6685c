import type { Profile } from '../rooms/service.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { ProfilePropagator } from './propagation.ts';
import type { ProfileStore } from './store.ts';

/** Candidates of the user directory judged per round (one query each way). */
const SEARCH_BATCH = 200;
/** Rounds before the directory answers with what it found (as `limited`). */
const SEARCH_ROUNDS = 50;

export interface UserDirectoryResult {
  results: Array<{ user_id: string; display_name?: string; avatar_url?: string }>;
  limited: boolean;
}

/** Profiles: a change is stored with its propagation queued, and the PUT answers at once. */
export class ProfileService {
  constructor(readonly store: ProfileStore, private propagator: ProfilePropagator, private rooms: RoomReader) {}

  /** issue 11: other servers' users' profiles, asked of their server (set when federation runs). */
  remote: { isRemote(userId: string): boolean; get(userId: string): Promise<Profile | undefined> } | undefined;

  get(userId: string): Promise<Profile | undefined> {
    return this.store.get(userId);
  }

  /** GET /profile: a local profile, or (issue 11) a remote user's, asked of their server. */
  lookup(userId: string): Promise<Profile | undefined> {
    if (this.remote?.isRemote(userId)) return this.remote.get(userId);
    return this.store.get(userId);
  }

  /** Stores the change; the member event of every joined room follows in the background. */
  async change(userId: string, field: 'displayname' | 'avatar_url', value: string | null): Promise<void> {
    await this.store.setAndQueue(userId, field, value);
    // After this request's answer is on its way: the first chunk of sends is CPU work (signing).
    setImmediate(() => this.propagator.kick());
  }

  /**
   * User directory: users who share a room with the searcher or are in a published room, as
   * Synapse does by default. Matching profiles come from this store in order, a batch at a time;
   * the room engine says which of a batch the searcher may find.
   */
  async search(searcher: string, term: string, limit: number): Promise<UserDirectoryResult> {
    const found: Array<{ user_id: string; displayname: string | null; avatar_url: string | null }> = [];
    let limited = false;
    for (let round = 0, offset = 0; found.length <= limit; round++, offset += SEARCH_BATCH) {
      if (round === SEARCH_ROUNDS) {
        limited = true;
        break;
      }
      const batch = await this.store.searchCandidates(term, offset, SEARCH_BATCH);
      const findable = await this.rooms.findableBy(searcher, batch.map((p) => p.user_id));
      found.push(...batch.filter((p) => findable.has(p.user_id)));
      if (batch.length < SEARCH_BATCH) break;
    }
    return {
      limited: limited || found.length > limit,
      results: found.slice(0, limit).map((x) => ({
        user_id: x.user_id,
        ...(x.displayname ? { display_name: x.displayname } : {}),
        ...(x.avatar_url ? { avatar_url: x.avatar_url } : {}),
      })),
    };
  }
}
