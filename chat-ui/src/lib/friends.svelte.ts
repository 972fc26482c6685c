// The friends list (README "Friends API"): kept live from /sync's io.superserver.friends extension,
// with each friend's presence from GET /_super/client/v1/friends.
import { ApiError } from './errors.ts';

export type LinkState = 'friend' | 'incoming' | 'outgoing' | 'none';
export interface Link { user_id: string; state: LinkState; blocked: boolean; ts: number; message?: string }
export interface Extension { full: boolean; links: Link[]; settings?: { only_friends_dm: boolean } }
export interface FriendPresence { presence: string; last_active_ago?: number; currently_active?: boolean }

const PREFIX = '/_super/client/v1/friends';

class Friends {
  links = $state<Record<string, Link>>({});
  presence = $state<Record<string, FriendPresence>>({});
  onlyFriendsDm = $state(false);
  /** Whether the server has the friends API at all (a plain Matrix server does not). */
  available = $state(true);
  private token = '';
  private timer: ReturnType<typeof setInterval> | undefined;

  /** A /sync answer's extension: `full` replaces what we know, else rows change one by one. */
  apply(ext: Extension): void {
    const next = ext.full ? {} : { ...this.links };
    for (const l of ext.links ?? []) {
      if (l.state === 'none' && !l.blocked) delete next[l.user_id];
      else next[l.user_id] = l;
    }
    this.links = next;
    if (ext.settings) this.onlyFriendsDm = ext.settings.only_friends_dm;
    void this.refreshPresence();
  }

  start(token: string): void {
    this.token = token;
    void this.refreshPresence();
    this.timer = setInterval(() => void this.refreshPresence(), 20_000);
  }

  stop(): void {
    clearInterval(this.timer);
    this.links = {};
    this.presence = {};
  }

  private async call(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(PREFIX + path, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) {
      if (res.status === 404 && json.errcode === 'M_UNRECOGNIZED' && path === '') this.available = false;
      throw new ApiError(res.status, String(json.errcode ?? 'M_UNKNOWN'), String(json.error ?? `The server answered ${res.status}`), json.retry_after_ms as number | undefined);
    }
    return json;
  }

  async refreshPresence(): Promise<void> {
    if (!this.token) return;
    try {
      const list = (await this.call('GET', '')) as { friends: Array<{ user_id: string; presence: FriendPresence }> };
      const p: Record<string, FriendPresence> = {};
      for (const f of list.friends) p[f.user_id] = f.presence;
      this.presence = p;
    } catch {
      // The list shows what /sync said; presence comes back with the next refresh.
    }
  }

  get friendIds(): string[] { return Object.values(this.links).filter((l) => l.state === 'friend').map((l) => l.user_id).sort(); }
  get incoming(): Link[] { return Object.values(this.links).filter((l) => l.state === 'incoming'); }
  get outgoing(): Link[] { return Object.values(this.links).filter((l) => l.state === 'outgoing'); }
  get blocked(): string[] { return Object.values(this.links).filter((l) => l.blocked).map((l) => l.user_id); }
  isFriend(userId: string): boolean { return this.links[userId]?.state === 'friend'; }
  online(userId: string): boolean { return this.presence[userId]?.presence === 'online'; }

  request(userId: string, message?: string) { return this.call('POST', '/requests', { user_id: userId, ...(message ? { message } : {}) }); }
  accept(userId: string) { return this.call('POST', `/requests/${encodeURIComponent(userId)}/accept`, {}); }
  decline(userId: string) { return this.call('POST', `/requests/${encodeURIComponent(userId)}/decline`, {}); }
  cancel(userId: string) { return this.call('DELETE', `/requests/${encodeURIComponent(userId)}`); }
  remove(userId: string) { return this.call('DELETE', `/${encodeURIComponent(userId)}`); }
  block(userId: string) { return this.call('PUT', `/blocks/${encodeURIComponent(userId)}`, {}); }
  unblock(userId: string) { return this.call('DELETE', `/blocks/${encodeURIComponent(userId)}`); }
  setOnlyFriendsDm(value: boolean) { return this.call('PUT', '/settings', { only_friends_dm: value }); }
}

export const friends = new Friends();
