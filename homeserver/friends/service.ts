import { MatrixError, forbidden, invalidParam, notFound } from '../http/errors.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import type { PresenceContent } from '../ephemeral/presence-service.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { FriendStore, LinkRow, LinkState } from './store.ts';

/** The key of the friends extension at the top level of a /sync response (and a WebSocket push). */
export const SYNC_KEY = 'io.superserver.friends';

/** The EDU a friend request to another server would travel as (not sent: see README "Friends API"). */
export const FRIEND_REQUEST_EDU = 'io.superserver.friend_request';

export interface FriendEntry {
  user_id: string;
  displayname?: string;
  avatar_url?: string;
  since_ts: number;
  presence: PresenceContent;
}

export interface RequestEntry {
  user_id: string;
  displayname?: string;
  ts: number;
  message?: string;
}

export interface FriendList {
  friends: FriendEntry[];
  incoming: RequestEntry[];
  outgoing: RequestEntry[];
  blocked: string[];
  settings: { only_friends_dm: boolean };
}

export interface FriendDeps {
  serverName: string;
  profileOf: (userId: string) => Promise<{ displayname?: string | null; avatar_url?: string | null } | undefined>;
  presenceOf: (userIds: string[]) => Promise<Map<string, PresenceContent>>;
}

/**
 * Friends (issue 13): requests, the list, blocks, and the "only friends may start a DM with me"
 * setting that rooms/ asks about on invites. A relation is two rows changed together (store.ts).
 */
export class FriendService {
  constructor(private store: FriendStore, private deps: FriendDeps, private notifier: Notifier) {}

  /** A local user that exists, or the clear refusal. */
  private async target(me: string, userId: string): Promise<void> {
    if (typeof userId !== 'string' || !isValidUserId(userId)) throw invalidParam(`Invalid user ID ${userId}`);
    if (userId === me) throw invalidParam('You cannot be your own friend');
    if (userId.slice(userId.indexOf(':') + 1) !== this.deps.serverName) {
      throw new MatrixError(501, 'M_UNRECOGNIZED', `${userId} is on another server: friends on other servers need federation (the ${FRIEND_REQUEST_EDU} EDU), which this server does not send yet`);
    }
    if (!(await this.deps.profileOf(userId))) throw notFound(`Unknown user ${userId}`);
  }

  async request(me: string, other: string, message?: string): Promise<{ state: LinkState }> {
    await this.target(me, other);
    const r = await this.store.change(me, other, (mine, theirs) => {
      if (mine?.blocked) throw invalidParam(`You have blocked ${other}: unblock them first`);
      if (theirs?.blocked) throw forbidden(`${other} does not accept friend requests from you`);
      if (mine?.state === 'friend') throw invalidParam(`You are already friends with ${other}`);
      if (mine?.state === 'outgoing') throw invalidParam(`You already sent a friend request to ${other}`);
      // They asked first: asking back is accepting.
      if (mine?.state === 'incoming') return { result: 'friend' as LinkState, mine: { state: 'friend' as const, message: null }, theirs: { state: 'friend' as const, message: null } };
      const note = message ?? null;
      return { result: 'outgoing' as LinkState, mine: { state: 'outgoing' as const, message: note }, theirs: { state: 'incoming' as const, message: note } };
    });
    return { state: r.result };
  }

  async accept(me: string, other: string): Promise<void> {
    await this.store.change(me, other, (mine) => {
      if (mine?.state !== 'incoming') throw notFound(`No friend request from ${other}`);
      return { mine: { state: 'friend', message: null }, theirs: { state: 'friend', message: null } };
    });
  }

  async decline(me: string, other: string): Promise<void> {
    await this.store.change(me, other, (mine) => {
      if (mine?.state !== 'incoming') throw notFound(`No friend request from ${other}`);
      return { mine: { state: 'none', message: null }, theirs: { state: 'none', message: null } };
    });
  }

  async cancel(me: string, other: string): Promise<void> {
    await this.store.change(me, other, (mine) => {
      if (mine?.state !== 'outgoing') throw notFound(`You have no pending friend request to ${other}`);
      return { mine: { state: 'none', message: null }, theirs: { state: 'none', message: null } };
    });
  }

  async remove(me: string, other: string): Promise<void> {
    await this.store.change(me, other, (mine) => {
      if (mine?.state !== 'friend') throw notFound(`${other} is not your friend`);
      return { mine: { state: 'none', message: null }, theirs: { state: 'none', message: null } };
    });
  }

  /** Ends any relation or request between the two, and refuses the other's requests and DMs. */
  async block(me: string, other: string): Promise<void> {
    if (typeof other !== 'string' || !isValidUserId(other)) throw invalidParam(`Invalid user ID ${other}`);
    if (other === me) throw invalidParam('You cannot block yourself');
    await this.store.change(me, other, (mine, theirs) => {
      if (mine?.blocked) return {};
      return {
        mine: { state: 'none', blocked: true, message: null },
        ...(theirs && theirs.state !== 'none' ? { theirs: { state: 'none' as const, message: null } } : {}),
      };
    });
  }

  async unblock(me: string, other: string): Promise<void> {
    await this.store.change(me, other, (mine) => {
      if (!mine?.blocked) throw notFound(`You have not blocked ${other}`);
      return { mine: { state: 'none', blocked: false } };
    });
  }

  async setOnlyFriendsDm(me: string, value: boolean): Promise<void> {
    await this.store.setOnlyFriendsDm(me, value);
  }

  async list(me: string): Promise<FriendList> {
    const rows = await this.store.list(me);
    const friendIds = rows.filter((r) => r.state === 'friend').map((r) => r.other_id);
    const presence = await this.deps.presenceOf(friendIds);
    const profiles = new Map(await Promise.all(rows.filter((r) => r.state !== 'none').map(async (r) => [r.other_id, (await this.deps.profileOf(r.other_id)) ?? {}] as const)));
    const named = (u: string) => {
      const p = profiles.get(u) ?? {};
      return { ...(p.displayname ? { displayname: p.displayname } : {}), ...(p.avatar_url ? { avatar_url: p.avatar_url } : {}) };
    };
    const request = (r: LinkRow): RequestEntry => ({ user_id: r.other_id, ...(named(r.other_id).displayname ? { displayname: named(r.other_id).displayname } : {}), ts: Number(r.updated_ts), ...(r.message ? { message: r.message } : {}) });
    return {
      friends: rows.filter((r) => r.state === 'friend').map((r) => ({ user_id: r.other_id, ...named(r.other_id), since_ts: Number(r.updated_ts), presence: presence.get(r.other_id) ?? { presence: 'offline' } })),
      incoming: rows.filter((r) => r.state === 'incoming').map(request),
      outgoing: rows.filter((r) => r.state === 'outgoing').map(request),
      blocked: rows.filter((r) => r.blocked).map((r) => r.other_id),
      settings: { only_friends_dm: await this.store.onlyFriendsDm(me) },
    };
  }

  /**
   * Asked by rooms/ before an invite to a DM (an is_direct invite, or a room of two): refused when
   * the invitee lets only friends start a DM with them and the inviter is not one, or when the
   * invitee has blocked the inviter. Users of other servers are not ours to judge.
   */
  async checkDirectInvite(sender: string, target: string): Promise<void> {
    if (target.slice(target.indexOf(':') + 1) !== this.deps.serverName || sender === target) return;
    const theirs = await this.store.link(target, sender);
    if (theirs?.blocked) throw forbidden(`${target} does not accept direct messages from you`);
    if (theirs?.state === 'friend') return;
    if (await this.store.onlyFriendsDm(target)) throw forbidden(`${target} only accepts direct messages from friends: send them a friend request first`);
  }

  /**
   * The friends extension of /sync: everything on an initial sync (`full: true`), then the rows that
   * changed. It rides on the account data stream (positions from the same tracker): no new token part.
   */
  syncPart(): SyncPart {
    return { name: 'friends', read: (ctx) => this.read(ctx) };
  }

  private async read(ctx: SyncPartContext): Promise<SyncPartOutput> {
    const me = ctx.me.userId;
    const initial = ctx.since === undefined || ctx.fullState;
    const to = ctx.to.accountData;
    if (initial) {
      const rows = await this.store.list(me);
      return { top: { [SYNC_KEY]: { full: true, links: rows.map(linkOut), settings: { only_friends_dm: await this.store.onlyFriendsDm(me) } } } };
    }
    const since = ctx.since!.accountData;
    if (since >= to || this.notifier.changedSince('accountData', [me], since) === false) return {};
    const rows = await this.store.changed(me, since, to);
    const settingsChanged = await this.store.settingsChangedSince(me, since, to);
    if (!rows.length && !settingsChanged) return {};
    const out: Record<string, unknown> = { full: false, links: rows.map(linkOut) };
    if (settingsChanged) out.settings = { only_friends_dm: await this.store.onlyFriendsDm(me) };
    return { top: { [SYNC_KEY]: out }, news: true };
  }
}

function linkOut(r: LinkRow): Record<string, unknown> {
  return { user_id: r.other_id, state: r.state, blocked: r.blocked, ts: Number(r.updated_ts), ...(r.message ? { message: r.message } : {}) };
}
