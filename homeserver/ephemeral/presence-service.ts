import type { Logger } from 'pino';
import { LruCache } from '../cache/lru.ts';
import { forbidden, notFound } from '../http/errors.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { ClientEvent, RoomReader } from '../rooms/reader.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import { eventAllowed, limited } from './filter.ts';
import type { PresenceRecord, PresenceState, PresenceValue } from './presence.ts';

/** last_active moves at most this often without a state change; currently_active lasts this long. */
const LAST_ACTIVE_GRANULARITY_MS = 60_000;
/** Who is in which room, cached this long at most (and dropped at once on a local member event). */
const MEMBERS_TTL_MS = 10_000;
const MEMBER_CACHE_ROOMS = 10_000;
const MEMBER_CACHE_USERS = 100_000;
/** How long a /sync waits for its own presence change to be readable (Redis: its published wake). */
const OWN_CHANGE_WAIT_MS = 1_000;
/** Joins within this long of each other are told together. */
const JOIN_BATCH_MS = 50;
/** Sightings sent to the state per call. */
const FLUSH_CHUNK = 1_000;

export interface PresenceOptions {
  /** PRESENCE=off: nothing is tracked or sent; everyone reads as offline. */
  enabled: boolean;
  /** A user not seen (no /sync in flight or ended) for this long goes offline. */
  timeoutMs: number;
}

/** The body of GET /presence/{userId}/status and the content of m.presence. */
export interface PresenceContent {
  presence: PresenceValue;
  last_active_ago?: number;
  currently_active?: boolean;
  status_msg?: string | null;
}

/**
 * Presence: the state set by PUT /presence and by /sync's set_presence, timeouts to offline, and
 * the m.presence events of /sync, delivered only to users who share a room with the subject.
 *
 * Presence is the top CPU cost of small Synapse servers, so it writes only when something changes:
 * a /sync of a user known to be online here writes nothing (it is remembered in memory and flushed
 * as one batch of sightings every `flushMs`); last_active moves at most once a minute without a
 * state change; one change is one stream position and one notify of the subject's rooms.
 */
export class PresenceService {
  /** What this process last knew of a user's state (fast path for syncs). */
  private known = new LruCache<string, PresenceValue>(MEMBER_CACHE_USERS);
  /** Users seen since the last flush. */
  private seenSince = new Set<string>();
  /** Syncs in flight per user (seen for as long as they last). */
  private inFlight = new Map<string, number>();
  /**
   * Joined members per room. The entry holds the load while it runs, so the syncs one wake-up
   * sends share one query, and a member event (which deletes the entry) is never overwritten by a
   * load that began before it.
   */
  private roomMembers = new LruCache<string, { at: number; load: Promise<Set<string>>; users?: Set<string> }>(MEMBER_CACHE_ROOMS);
  private userRooms = new LruCache<string, { at: number; rooms: string[] }>(MEMBER_CACHE_USERS);
  private lastActivity = new LruCache<string, number>(MEMBER_CACHE_USERS);
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly flushMs: number;

  constructor(
    private state: PresenceState,
    private rooms: RoomReader,
    private notifier: Notifier,
    private userExists: (userId: string) => Promise<boolean>,
    readonly opts: PresenceOptions,
    private log: Logger,
  ) {
    // Sightings reach the shared state well within the timeout, so no syncing user times out.
    this.flushMs = Math.max(100, Math.min(Math.floor(opts.timeoutMs / 3), 30_000));
  }

  async start(): Promise<void> {
    if (!this.opts.enabled) return;
    await this.state.start();
    this.flushTimer = setInterval(() => { this.flush().catch((err) => this.log.warn({ err }, 'presence flush failed')); }, this.flushMs);
    this.flushTimer.unref();
  }

  stop(): void {
    clearInterval(this.flushTimer);
    clearTimeout(this.joinTimer);
    this.state.stop();
  }

  /** A member event was persisted: who shares a room with whom changed there. */
  membershipChanged(roomId: string, userId: string, membership: string | undefined): void {
    // A join event of a member already known here is a profile change, not a new room-mate.
    const hit = this.roomMembers.get(roomId);
    const wasMember = hit?.users && Date.now() - hit.at < MEMBERS_TTL_MS && hit.users.has(userId);
    this.roomMembers.delete(roomId);
    this.userRooms.delete(userId);
    if (membership !== 'join' || wasMember || !this.opts.enabled) return;
    let rooms = this.pendingJoins.get(userId);
    if (!rooms) this.pendingJoins.set(userId, (rooms = new Set()));
    rooms.add(roomId);
    this.joinTimer ??= setTimeout(() => {
      this.joinTimer = undefined;
      const batch = [...this.pendingJoins];
      this.pendingJoins.clear();
      for (const [u, rs] of batch) this.joined(u, [...rs]).catch((err) => this.log.warn({ err, userId: u }, 'presence update failed'));
    }, JOIN_BATCH_MS);
  }

  /** Joins waiting to be told (a user joining many rooms at once is announced once). */
  private pendingJoins = new Map<string, Set<string>>();
  private joinTimer: NodeJS.Timeout | undefined;

  /**
   * New room-mates learn of each other, as Synapse does: the joiner's next sync lists the rooms'
   * members that are not offline, and the members hear of the joiner (once for all the rooms).
   */
  private async joined(userId: string, roomIds: string[]): Promise<void> {
    for (const roomId of roomIds) await this.state.joined(userId, roomId);
    await this.state.announce(userId, [...new Set([userId, ...(await this.roomsOf(userId)), ...roomIds])]);
  }

  /**
   * A /sync starts with this set_presence; the returned function is called when it ends. online
   * (the default) and unavailable count as being seen for as long as the sync lasts; offline does not.
   */
  async syncing(userId: string, setPresence: PresenceValue): Promise<() => void> {
    if (!this.opts.enabled || setPresence === 'offline') return () => {};
    this.inFlight.set(userId, (this.inFlight.get(userId) ?? 0) + 1);
    this.seenSince.add(userId);
    const known = this.known.get(userId);
    const needs = setPresence === 'online' ? known !== 'online' : known === undefined || known === 'offline';
    if (needs) {
      // Awaited until readable: this very sync carries the user's new presence, and a long-poll
      // is not woken by it right after.
      try {
        const pos = await this.change(userId, setPresence === 'online' ? { kind: 'online', granularityMs: Number.MAX_SAFE_INTEGER } : { kind: 'unavailable' });
        if (pos) await this.state.reached(pos, OWN_CHANGE_WAIT_MS);
      } catch (err) {
        this.log.warn({ err, userId }, 'presence update failed');
      }
    }
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const n = (this.inFlight.get(userId) ?? 1) - 1;
      if (n > 0) this.inFlight.set(userId, n);
      else this.inFlight.delete(userId);
      this.seenSince.add(userId);
    };
  }

  /** The user did something (sent an event): online, and last_active at most a minute old. */
  activity(userId: string): void {
    if (!this.opts.enabled) return;
    const now = Date.now();
    if (this.known.get(userId) === 'online' && now - (this.lastActivity.get(userId) ?? 0) < LAST_ACTIVE_GRANULARITY_MS) return;
    this.lastActivity.set(userId, now);
    this.change(userId, { kind: 'online', granularityMs: LAST_ACTIVE_GRANULARITY_MS }).catch((err) => this.log.warn({ err, userId }, 'presence update failed'));
  }

  /** PUT /presence/{userId}/status (for oneself). */
  async set(userId: string, presence: PresenceValue, statusMsg: string | null): Promise<void> {
    if (!this.opts.enabled) return;
    await this.change(userId, { kind: 'set', presence, statusMsg });
  }

  /** GET /presence/{userId}/status: one's own, or a user one shares a room with. */
  async get(me: string, userId: string): Promise<PresenceContent> {
    if (userId !== me) {
      if (!(await this.userExists(userId))) throw notFound(`Unknown user ${userId}`);
      const visible = await this.visibleTo(me, await this.roomsOf(me), [userId]);
      if (!visible.length) throw forbidden(`You are not allowed to see the presence of ${userId}`);
    }
    if (!this.opts.enabled) return { presence: 'offline' };
    const rec = (await this.state.get([userId])).get(userId)!;
    return content(rec, Date.now());
  }

  /**
   * The presence of users the caller may see for another reason than a shared room (friends,
   * issue 13): no visibility check here; the caller has made it.
   */
  async many(userIds: string[]): Promise<Map<string, PresenceContent>> {
    const out = new Map<string, PresenceContent>();
    if (!userIds.length) return out;
    if (!this.opts.enabled) {
      for (const u of userIds) out.set(u, { presence: 'offline' });
      return out;
    }
    const now = Date.now();
    for (const [u, rec] of await this.state.get(userIds)) out.set(u, content(rec, now));
    return out;
  }

  /** Applies a change; its position (0: nobody is told). */
  /** issue 11: told of every presence change others see, with the user's rooms (federation sends local users' as m.presence). */
  onChange: ((userId: string, presence: PresenceValue, roomIds: string[], statusMsg: string | null | undefined) => void) | undefined;

  private async change(userId: string, change: Exclude<Parameters<PresenceState['apply']>[1], { kind: 'announce' }>): Promise<number> {
    const keys = [userId, ...(await this.roomsOf(userId))];
    const { state, pos } = await this.state.apply(userId, change, keys);
    this.known.set(userId, state);
    // issue 11: a change others are told of (pos 0: nothing changed) goes to other servers too.
    if (pos && this.onChange) this.onChange(userId, state, keys.slice(1), change.kind === 'set' ? change.statusMsg : undefined);
    return pos;
  }

  /** Sends this process's sightings to the state in one batch. */
  private async flush(): Promise<void> {
    const users = new Set([...this.seenSince, ...this.inFlight.keys()]);
    this.seenSince.clear();
    if (!users.size) return;
    const list = [...users];
    for (let i = 0; i < list.length; i += FLUSH_CHUNK) {
      const offline = await this.state.seen(list.slice(i, i + FLUSH_CHUNK));
      // The state holds them as offline (timed out, or set so elsewhere): the next sync says online again.
      for (const u of offline) this.known.delete(u);
    }
  }

  /** The background job: users not seen for the timeout go offline. One worker runs it. */
  job(): { start(): void; stop(): void } {
    let timer: NodeJS.Timeout | undefined;
    let trimmed = 0;
    const sweep = async () => {
      const cutoff = Date.now() - this.opts.timeoutMs;
      for (const userId of await this.state.timedOut(cutoff)) await this.change(userId, { kind: 'timeout', cutoff });
      if (Date.now() - trimmed > 3600_000) { trimmed = Date.now(); await this.state.trim(); }
    };
    let running = false;
    return {
      start: () => {
        if (!this.opts.enabled) return;
        const every = Math.max(100, Math.min(Math.floor(this.opts.timeoutMs / 4), 10_000));
        timer = setInterval(() => {
          if (running) return;
          running = true;
          sweep().catch((err) => this.log.warn({ err }, 'presence sweep failed')).finally(() => { running = false; });
        }, every);
        timer.unref();
      },
      stop: () => clearInterval(timer),
    };
  }

  /** The presence stream of /sync: m.presence of room-mates (and oneself) that changed since the token. */
  part(): SyncPart {
    return {
      name: 'presence',
      stream: 'presence',
      current: () => this.state.current(),
      read: (ctx) => this.read(ctx).catch((err) => {
        // Redis away: /sync still answers, without presence (ephemeral: a change missed in the
        // outage shows with the user's next change; positions do not move while no wake arrives).
        this.log.warn({ err }, 'presence unreadable; /sync answers without it');
        return { top: {} };
      }),
    };
  }

  private async read(ctx: SyncPartContext): Promise<SyncPartOutput> {
    const me = ctx.me.userId;
    const since = ctx.since?.presence;
    const filter = ctx.filter.presence;
    // A client that filters presence out costs nothing here.
    if (!eventAllowed(filter, 'm.presence')) return {};
    if (since !== undefined && since >= this.state.knownFrom() && this.notifier.changedSince('presence', [me, ...ctx.joinedRoomIds], since) === false) return {};
    const changed = since === undefined ? undefined : await this.state.changed(since, ctx.to.presence);
    const initial = changed === undefined;
    // Rooms joined since the token: their members' presence is news to this user (unless offline).
    const joins = initial || (since! >= this.state.knownFrom() && this.notifier.changedSince('presence', [me], since!) === false)
      ? [] : (await this.state.joinedRooms(me, since!, ctx.to.presence)).filter((r) => ctx.joinedRoomIds.includes(r));
    let candidates = changed ?? (await this.state.notOffline());
    const onlyIfOnline = new Set<string>();
    if (joins.length) {
      const members = await this.membersOf(joins);
      const told = new Set(candidates);
      for (const u of await this.state.notOffline()) if (!told.has(u) && members.some((m) => m.has(u))) { candidates.push(u); onlyIfOnline.add(u); }
    }
    candidates = candidates.filter((u) => eventAllowed(filter, 'm.presence', u));
    if (!candidates.length) return {};
    const visible = await this.visibleTo(me, ctx.joinedRoomIds, candidates);
    const recs = await this.state.get(visible);
    const now = Date.now();
    const events: ClientEvent[] = [];
    for (const [userId, rec] of recs) {
      if ((initial || onlyIfOnline.has(userId)) && rec.presence === 'offline') continue;
      events.push({ type: 'm.presence', sender: userId, content: content(rec, now) } as unknown as ClientEvent);
    }
    return events.length ? { top: { presence: { events: limited(filter, events) } }, news: true } : {};
  }

  /** Which of `candidates` are `me` or members of one of `myRooms`. */
  private async visibleTo(me: string, myRooms: string[], candidates: string[]): Promise<string[]> {
    const members = await this.membersOf(myRooms);
    return candidates.filter((c) => c === me || members.some((s) => s.has(c)));
  }

  private async membersOf(roomIds: string[]): Promise<Array<Set<string>>> {
    const now = Date.now();
    const loads: Array<Promise<Set<string>>> = [];
    const missing: string[] = [];
    for (const r of roomIds) {
      const hit = this.roomMembers.get(r);
      if (hit && now - hit.at < MEMBERS_TTL_MS) loads.push(hit.load);
      else missing.push(r);
    }
    if (missing.length) {
      const all = this.rooms.roomMembersOf(missing);
      for (const r of missing) {
        const entry: { at: number; load: Promise<Set<string>>; users?: Set<string> } = { at: now, load: all.then((m) => new Set(m.get(r) ?? [])) };
        entry.load.then((users) => { entry.users = users; }, () => { if (this.roomMembers.get(r) === entry) this.roomMembers.delete(r); });
        this.roomMembers.set(r, entry);
        loads.push(entry.load);
      }
    }
    return Promise.all(loads);
  }


  private async roomsOf(userId: string): Promise<string[]> {
    const now = Date.now();
    const hit = this.userRooms.get(userId);
    if (hit && now - hit.at < MEMBERS_TTL_MS) return hit.rooms;
    const rooms = await this.rooms.joinedRoomIds(userId);
    this.userRooms.set(userId, { at: now, rooms });
    return rooms;
  }
}

function content(rec: PresenceRecord, now: number): PresenceContent {
  const out: PresenceContent = { presence: rec.presence };
  if (rec.last_active > 0) out.last_active_ago = Math.max(0, now - rec.last_active);
  if (rec.presence === 'online') out.currently_active = rec.last_active > 0 && now - rec.last_active < LAST_ACTIVE_GRANULARITY_MS;
  if (rec.status_msg !== null) out.status_msg = rec.status_msg;
  return out;
}
