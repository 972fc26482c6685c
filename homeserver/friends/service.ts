import { MatrixError, forbidden, invalidParam, notFound } from '../http/errors.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import type { PresenceContent } from '../ephemeral/presence-service.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { FriendStore, LinkRow, LinkState, LinkWrite } from './store.ts';
import type { Db } from '../storage/db.ts';

/** The key of the friends extension at the top level of a /sync response (and a WebSocket push). */
export const SYNC_KEY = 'io.superserver.friends';

/** The EDU a friend request (and its answers) travels as to another server (README "Friends API"). */
export const FRIEND_REQUEST_EDU = 'io.superserver.friend_request';

export type FriendAction = 'request' | 'accept' | 'decline' | 'cancel' | 'remove';
const ACTIONS = new Set<string>(['request', 'accept', 'decline', 'cancel', 'remove']);

/** The content of an `io.superserver.friend_request` EDU. */
export interface FriendEdu {
  sender: string;
  target: string;
  action: FriendAction;
  message?: string;
}

/**
 * Set by federation/setup.ts only (homeserver/ never imports federation): whether a server may be
 * federated with, and the queueing of an EDU to the target's server.
 */
export interface FriendRemote {
  allows(serverName: string): boolean;
  /** Queues the EDU inside `trx` (it commits with the change, or not at all). */
  queue(trx: Db, destination: string, content: FriendEdu): Promise<void>;
  /** After the commit: send what was queued for `destination`. */
  kick(destination: string): void;
}

/** What a change of a pair decides: each side's new row, and what the caller learns. */
interface PairChange {
  mine?: LinkWrite;
  theirs?: LinkWrite;
  result?: LinkState;
  /** The action a block sends to the other's server (the relation it ended). */
  ends?: FriendAction;
}

/** An inbound friend EDU that is not applied (logged by federation, never failing the transaction). */
export class IgnoredFriendEdu extends Error {}

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
  /** Federation's hook (federation/setup.ts); unset: requests to users of other servers are refused (501). */
  remote?: FriendRemote;

  constructor(private store: FriendStore, private deps: FriendDeps, private notifier: Notifier) {}

  private serverOf(userId: string): string {
    return userId.slice(userId.indexOf(':') + 1);
  }

  private isLocal(userId: string): boolean {
    return this.serverOf(userId) === this.deps.serverName;
  }

  /** A local user that exists, or a user of a server we federate with; else the clear refusal. */
  private async target(me: string, userId: string): Promise<void> {
    if (typeof userId !== 'string' || !isValidUserId(userId)) throw invalidParam(`Invalid user ID ${userId}`);
    if (userId === me) throw invalidParam('You cannot be your own friend');
    if (!this.isLocal(userId)) {
      const server = this.serverOf(userId);
      if (!this.remote) throw new MatrixError(501, 'M_UNRECOGNIZED', `${userId} is on another server, and federation is off on this server: friends on other servers need it (the ${FRIEND_REQUEST_EDU} EDU)`);
      if (!this.remote.allows(server)) throw new MatrixError(501, 'M_UNRECOGNIZED', `${userId} is on ${server}, which this server does not federate with (FEDERATION_DOMAIN_WHITELIST / FEDERATION_DOMAIN_BLOCKLIST)`);
      return;
    }
    if (!(await this.deps.profileOf(userId))) throw notFound(`Unknown user ${userId}`);
  }

  /**
   * A change of a pair. With a user of another server only our user's row is ours: their side is
   * not known here (their server keeps it), so `theirs` is undefined and its write is dropped; the
   * action then goes to their server as the friend EDU, queued in the same transaction (a crash
   * loses neither or both) and sent once it committed.
   */
  private async change(
    me: string, other: string, action: (r: PairChange) => FriendAction | undefined,
    decide: (mine: LinkRow | undefined, theirs: LinkRow | undefined) => PairChange, message?: string,
  ): Promise<PairChange> {
    if (this.isLocal(other)) return this.store.change(me, other, decide);
    if (!this.remote) throw new MatrixError(501, 'M_UNRECOGNIZED', `${other} is on another server, and federation is off on this server`);
    const remote = this.remote;
    const destination = this.serverOf(other);
    let queued = false;
    const r = await this.store.change(me, other, (mine) => {
      const { theirs: _dropped, ...rest } = decide(mine, undefined);
      return rest;
    }, async (trx, result) => {
      const a = action(result);
      if (!a) return;
      await remote.queue(trx, destination, { sender: me, target: other, action: a, ...(a === 'request' && message ? { message } : {}) });
      queued = true;
    });
    if (queued) remote.kick(destination);
    return r;
  }

  async request(me: string, other: string, message?: string): Promise<{ state: LinkState }> {
    await this.target(me, other);
    const r = await this.change(me, other, (x) => (x.result === 'friend' ? 'accept' : 'request'), (mine, theirs) => {
      if (mine?.blocked) throw invalidParam(`You have blocked ${other}: unblock them first`);
      if (theirs?.blocked) throw forbidden(`${other} does not accept friend requests from you`);
      if (mine?.state === 'friend') throw invalidParam(`You are already friends with ${other}`);
      if (mine?.state === 'outgoing') throw invalidParam(`You already sent a friend request to ${other}`);
      // They asked first: asking back is accepting.
      if (mine?.state === 'incoming') return { result: 'friend' as LinkState, mine: { state: 'friend' as const, message: null }, theirs: { state: 'friend' as const, message: null } };
      const note = message ?? null;
      return { result: 'outgoing' as LinkState, mine: { state: 'outgoing' as const, message: note }, theirs: { state: 'incoming' as const, message: note } };
    }, message);
    return { state: r.result! };
  }

  async accept(me: string, other: string): Promise<void> {
    await this.change(me, other, () => 'accept', (mine) => {
      if (mine?.state !== 'incoming') throw notFound(`No friend request from ${other}`);
      return { mine: { state: 'friend', message: null }, theirs: { state: 'friend', message: null } };
    });
  }

  async decline(me: string, other: string): Promise<void> {
    await this.change(me, other, () => 'decline', (mine) => {
      if (mine?.state !== 'incoming') throw notFound(`No friend request from ${other}`);
      return { mine: { state: 'none', message: null }, theirs: { state: 'none', message: null } };
    });
  }

  async cancel(me: string, other: string): Promise<void> {
    await this.change(me, other, () => 'cancel', (mine) => {
      if (mine?.state !== 'outgoing') throw notFound(`You have no pending friend request to ${other}`);
      return { mine: { state: 'none', message: null }, theirs: { state: 'none', message: null } };
    });
  }

  async remove(me: string, other: string): Promise<void> {
    await this.change(me, other, () => 'remove', (mine) => {
      if (mine?.state !== 'friend') throw notFound(`${other} is not your friend`);
      return { mine: { state: 'none', message: null }, theirs: { state: 'none', message: null } };
    });
  }

  /**
   * Ends any relation or request between the two, and refuses the other's requests and DMs. The
   * block stays on this server; a user of another server only sees the relation end (as a remove,
   * a cancel or a decline would end it), never why.
   */
  async block(me: string, other: string): Promise<void> {
    if (typeof other !== 'string' || !isValidUserId(other)) throw invalidParam(`Invalid user ID ${other}`);
    if (other === me) throw invalidParam('You cannot block yourself');
    const ended: Partial<Record<LinkState, FriendAction>> = { friend: 'remove', outgoing: 'cancel', incoming: 'decline' };
    const local = this.isLocal(other) || !this.remote;
    const decide = (mine: LinkRow | undefined, theirs: LinkRow | undefined): PairChange => {
      if (mine?.blocked) return { ends: undefined };
      return {
        ends: mine ? ended[mine.state] : undefined,
        mine: { state: 'none' as const, blocked: true, message: null },
        ...(theirs && theirs.state !== 'none' ? { theirs: { state: 'none' as const, message: null } } : {}),
      };
    };
    if (local) await this.store.change(me, other, decide);
    else await this.change(me, other, (r) => r.ends, decide);
  }

  async unblock(me: string, other: string): Promise<void> {
    await this.store.change(me, other, (mine) => {
      if (!mine?.blocked) throw notFound(`You have not blocked ${other}`);
      return { mine: { state: 'none', blocked: false } };
    });
  }

  /**
   * An `io.superserver.friend_request` EDU from `origin` (federation/edus.ts): applied to our user's
   * row as the matching local endpoint would apply it to the pair. Throws IgnoredFriendEdu (the
   * caller logs it) for a sender not of `origin`, an unknown or non-local target, bad content, a
   * block, or an action that does not fit the row (a stale or repeated EDU). `pay` charges the rate
   * limits a local request pays (the sender's, the recipient's); a refusal ignores the EDU.
   */
  async applyRemote(origin: string, content: Record<string, unknown>, pay?: (sender: string, target: string) => Promise<void>): Promise<void> {
    const { sender, target, action, message } = content;
    if (typeof sender !== 'string' || !isValidUserId(sender)) throw new IgnoredFriendEdu('sender is not a user ID');
    if (this.serverOf(sender) !== origin) throw new IgnoredFriendEdu(`${sender} is not a user of ${origin}`);
    if (typeof target !== 'string' || !isValidUserId(target) || !this.isLocal(target)) throw new IgnoredFriendEdu('target is not a user of this server');
    if (typeof action !== 'string' || !ACTIONS.has(action)) throw new IgnoredFriendEdu(`unknown action ${String(action)}`);
    if (message !== undefined && (typeof message !== 'string' || message.length > 500)) throw new IgnoredFriendEdu('message must be a string of at most 500 characters');
    if (!(await this.deps.profileOf(target))) throw new IgnoredFriendEdu(`unknown user ${target}`);
    if (action === 'request' && pay) {
      try { await pay(sender, target); } catch (err) { throw new IgnoredFriendEdu(`rate limited: ${(err as Error).message}`); }
    }
    const none = { mine: { state: 'none' as const, message: null } };
    const unfit = () => new IgnoredFriendEdu(`${action} from ${sender} does not fit ${target}'s friend state`);
    await this.store.change(target, sender, (mine) => {
      if (mine?.blocked) throw new IgnoredFriendEdu(`${target} has blocked ${sender}`);
      switch (action as FriendAction) {
        case 'request':
          if (mine?.state === 'friend') return {};
          // We had asked them too (crossing requests): friends, as asking back is locally.
          if (mine?.state === 'outgoing') return { mine: { state: 'friend' as const, message: null } };
          return { mine: { state: 'incoming' as const, message: typeof message === 'string' ? message : null } };
        case 'accept':
          if (mine?.state === 'friend') return {};
          if (mine?.state !== 'outgoing') throw unfit();
          return { mine: { state: 'friend' as const, message: null } };
        case 'decline':
          if (mine?.state !== 'outgoing') throw unfit();
          return none;
        case 'cancel':
          if (mine?.state !== 'incoming') throw unfit();
          return none;
        case 'remove':
          if (mine?.state !== 'friend') throw unfit();
          return none;
      }
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
