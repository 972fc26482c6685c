import type { Profile } from '../rooms/service.ts';
import type { ProfilePropagator } from './propagation.ts';
import type { ProfileStore } from './store.ts';

/** Profiles: a change is stored with its propagation queued, and the PUT answers at once. */
export class ProfileService {
  constructor(readonly store: ProfileStore, private propagator: ProfilePropagator) {}

  get(userId: string): Promise<Profile | undefined> {
    return this.store.get(userId);
  }

  /** Stores the change; the member event of every joined room follows in the background. */
  async change(userId: string, field: 'displayname' | 'avatar_url', value: string | null): Promise<void> {
    await this.store.setAndQueue(userId, field, value);
    // After this request's answer is on its way: the first chunk of sends is CPU work (signing).
    setImmediate(() => this.propagator.kick());
  }

  search(searcher: string, term: string, limit: number): ReturnType<ProfileStore['search']> {
    return this.store.search(searcher, term, limit);
  }
}
