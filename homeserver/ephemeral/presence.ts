import type { Logger } from 'pino';
import type { Redis } from '../coordination/redis.ts';
import { LUA_NEXT_POS, SnapshotCache, Subscription, WakeBatcher, nextPos, type Published } from './positions.ts';

/** Presence changes within this long of each other wake their readers once, together. */
const PRESENCE_BATCH_MS = 50;

export type PresenceValue = 'online' | 'unavailable' | 'offline';

/** What the server knows of one user's presence. */
export interface PresenceRecord {
  presence: PresenceValue;
  status_msg: string | null;
  /** Milliseconds since the epoch; 0: never active. */
  last_active: number;
  /** Position of the last change others were told about. */
  pos: number;
}

/**
 * How a presence changes:
 * - set: PUT /presence (presence and status_msg as given; online also bumps last_active);
 * - online: a /sync with set_presence=online, or activity (sending): online if not already, and
 *   last_active bumped when older than `granularityMs` (without telling anyone: no new position);
 * - unavailable: a /sync with set_presence=unavailable: offline users become unavailable;
 * - timeout: offline, unless the user was seen after `cutoff` (the sweep of the background job).
 */
export type PresenceChange =
  | { kind: 'set'; presence: PresenceValue; statusMsg: string | null }
  | { kind: 'online'; granularityMs: number }
  | { kind: 'unavailable' }
  | { kind: 'timeout'; cutoff: number }
  | { kind: 'announce' };

/** Change log entries older than this are dropped; a token older than that gets a full presence list. */
export const PRESENCE_RETENTION_MS = 24 * 3600_000;
/** Joins remembered per user (a sync reads those after its token). */
const MAX_JOINS_KEPT = 100;
/** Presence records live in Redis this long after their last write or sighting. */
const RECORD_TTL_MS = 7 * 24 * 3600_000;

/**
 * Presence state: records, a change log by position (who changed after a token), and when each
 * non-offline user was last seen (for the timeout). In process by default, in Redis with several
 * workers: one interface, two implementations.
 */
export interface PresenceState {
  current(): number;
  /** From this position on, every change was notified to this process (set by start()). */
  knownFrom(): number;
  get(userIds: string[]): Promise<Map<string, PresenceRecord>>;
  /**
   * Applies a change; wakes `keys` in the presence stream when others must be told. The new state,
   * and the change's position (0: nobody is told).
   */
  apply(userId: string, change: PresenceChange, keys: string[]): Promise<{ state: PresenceValue; pos: number }>;
  /** Resolves when `pos` is readable here (at most `timeoutMs` later). */
  reached(pos: number, timeoutMs: number): Promise<void>;
  /** Users whose presence changed in (since, to]; undefined when `since` is older than the log. */
  changed(since: number, to: number): Promise<string[] | undefined>;
  /** Users who are not offline. */
  notOffline(): Promise<string[]>;
  /** Records that these users were seen now; returns those the state holds as offline. */
  seen(userIds: string[]): Promise<string[]>;
  /** Non-offline users not seen since `cutoff`. */
  timedOut(cutoff: number): Promise<string[]>;
  /** Drops change log entries and offline records past the retention. */
  trim(): Promise<void>;
  /** A user joined a room: their next sync lists the presence of its members (wakes the user). */
  joined(userId: string, roomId: string): Promise<void>;
  /** The rooms `userId` joined in (since, to]. */
  joinedRooms(userId: string, since: number, to: number): Promise<string[]>;
  /** Tells `keys` again of a user who is not offline (they have new room-mates); no state change. */
  announce(userId: string, keys: string[]): Promise<void>;
  start(): Promise<void>;
  stop(): void;
}

type Wake = (keys: string[], pos: number) => void;

const OFFLINE: PresenceRecord = { presence: 'offline', status_msg: null, last_active: 0, pos: 0 };

/** The state after a change, and whether others must be told (presence or status_msg moved). */
function transition(cur: PresenceRecord, change: PresenceChange, now: number, seenAt: number | undefined): { next: PresenceRecord; notify: boolean } | undefined {
  const next = { ...cur };
  switch (change.kind) {
    case 'set':
      next.presence = change.presence;
      next.status_msg = change.statusMsg;
      if (change.presence === 'online') next.last_active = now;
      break;
    case 'online':
      if (cur.presence !== 'online') { next.presence = 'online'; next.last_active = now; }
      else if (now - cur.last_active >= change.granularityMs) next.last_active = now;
      break;
    case 'unavailable':
      if (cur.presence === 'offline') next.presence = 'unavailable';
      break;
    case 'timeout':
      if (seenAt !== undefined && seenAt > change.cutoff) return undefined;
      next.presence = 'offline';
      break;
    case 'announce':
      return undefined;
  }
  return { next, notify: next.presence !== cur.presence || next.status_msg !== cur.status_msg };
}

/** One process: maps, and an append-only change log compacted now and then. */
export class LocalPresenceState implements PresenceState {
  private pos = nextPos(0);
  private readonly started = this.pos;
  private batch: WakeBatcher;
  private records = new Map<string, PresenceRecord>();
  private seenAt = new Map<string, number>();
  private log: Array<{ pos: number; userId: string }> = [];
  private horizon = 0;

  constructor(wake: Wake) {
    this.batch = new WakeBatcher(this.pos, wake, PRESENCE_BATCH_MS);
  }

  current(): number { return this.batch.readable; }
  knownFrom(): number { return this.started; }

  async get(userIds: string[]): Promise<Map<string, PresenceRecord>> {
    const out = new Map<string, PresenceRecord>();
    for (const u of userIds) out.set(u, this.records.get(u) ?? OFFLINE);
    return out;
  }

  async apply(userId: string, change: PresenceChange, keys: string[]): Promise<{ state: PresenceValue; pos: number }> {
    const cur = this.records.get(userId) ?? OFFLINE;
    const now = Date.now();
    const t = transition(cur, change, now, this.seenAt.get(userId));
    if (!t) return { state: cur.presence, pos: 0 };
    if (change.kind === 'timeout' || t.next.presence === 'offline') this.seenAt.delete(userId);
    else this.seenAt.set(userId, now);
    if (t.notify) {
      t.next.pos = this.pos = nextPos(this.pos);
      this.log.push({ pos: t.next.pos, userId });
      if (this.log.length > 2 * this.records.size + 1000) this.compact();
    }
    this.records.set(userId, t.next);
    if (t.notify) this.batch.push(keys, t.next.pos);
    return { state: t.next.presence, pos: t.notify ? t.next.pos : 0 };
  }

  reached(pos: number, timeoutMs: number): Promise<void> {
    return this.batch.reached(pos, timeoutMs);
  }

  async changed(since: number, to: number): Promise<string[] | undefined> {
    // The same rule as in Redis (positions are at least the clock): older tokens get the full list.
    if (since < Math.max(this.horizon, Date.now() - PRESENCE_RETENTION_MS)) return undefined;
    // The first entry after `since` (the log is in position order).
    let lo = 0;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.log[mid]!.pos <= since) lo = mid + 1;
      else hi = mid;
    }
    const out = new Set<string>();
    for (let i = lo; i < this.log.length && this.log[i]!.pos <= to; i++) out.add(this.log[i]!.userId);
    return [...out];
  }

  async notOffline(): Promise<string[]> {
    return [...this.records].filter(([, r]) => r.presence !== 'offline').map(([u]) => u);
  }

  async seen(userIds: string[]): Promise<string[]> {
    const now = Date.now();
    const offline: string[] = [];
    for (const u of userIds) {
      if (this.seenAt.has(u)) this.seenAt.set(u, now);
      else offline.push(u);
    }
    return offline;
  }

  async timedOut(cutoff: number): Promise<string[]> {
    return [...this.seenAt].filter(([, at]) => at <= cutoff).map(([u]) => u);
  }

  async trim(): Promise<void> {
    const horizon = Date.now() - PRESENCE_RETENTION_MS;
    let dropped = false;
    for (const [u, r] of this.records) if (r.presence === 'offline' && r.pos < horizon) { this.records.delete(u); dropped = true; }
    if (dropped) { this.horizon = horizon; this.compact(); }
  }

  /** Per user, the rooms they joined and when (a few recent ones). */
  private joins = new Map<string, Array<{ roomId: string; pos: number }>>();

  async joined(userId: string, roomId: string): Promise<void> {
    const pos = this.pos = nextPos(this.pos);
    const list = (this.joins.get(userId) ?? []).filter((j) => j.roomId !== roomId && j.pos > Date.now() - PRESENCE_RETENTION_MS);
    list.push({ roomId, pos });
    this.joins.set(userId, list.slice(-MAX_JOINS_KEPT));
    this.batch.push([userId], pos);
  }

  async joinedRooms(userId: string, since: number, to: number): Promise<string[]> {
    return (this.joins.get(userId) ?? []).filter((j) => j.pos > since && j.pos <= to).map((j) => j.roomId);
  }

  async announce(userId: string, keys: string[]): Promise<void> {
    const rec = this.records.get(userId);
    if (!rec || rec.presence === 'offline') return;
    rec.pos = this.pos = nextPos(this.pos);
    this.log.push({ pos: rec.pos, userId });
    this.batch.push(keys, rec.pos);
  }

  /** The log keeps only each user's latest entry. */
  private compact(): void {
    this.log = [...this.records].filter(([, r]) => r.pos > 0).map(([userId, r]) => ({ pos: r.pos, userId })).sort((a, b) => a.pos - b.pos);
  }

  async start(): Promise<void> {}
  stop(): void { this.batch.stop(); }
}

/**
 * Redis: a hash per user (`presence:u:<user>`, with a TTL), a sorted set of users by the position
 * of their last change (`presence:changes`, trimmed by time: positions are at least the wall clock
 * in ms), and a sorted set of non-offline users by when they were last seen (`presence:seen`).
 * One Lua script applies a change: reads the record, decides, positions, stores and publishes.
 */
const PRESENCE_LUA = `
local kind, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'presence', 'status_msg', 'has_status', 'last_active')
local state, status, has, last = cur[1] or 'offline', cur[2] or '', cur[3] or '0', tonumber(cur[4] or '0')
local nstate, nstatus, nhas, nlast = state, status, has, last
local force = false
if kind == 'announce' then
  if state == 'offline' then return {state, 0} end
  force = true
elseif kind == 'set' then
  nstate, nstatus, nhas = ARGV[4], ARGV[5], ARGV[6]
  if nstate == 'online' then nlast = now end
elseif kind == 'online' then
  if state ~= 'online' then nstate = 'online'; nlast = now
  elseif now - last >= tonumber(ARGV[4]) then nlast = now end
elseif kind == 'unavailable' then
  if state == 'offline' then nstate = 'unavailable' end
elseif kind == 'timeout' then
  local seen = redis.call('ZSCORE', KEYS[4], user)
  if seen and tonumber(seen) > tonumber(ARGV[4]) then return {state, 0} end
end
if kind == 'timeout' then nstate = 'offline' end
if nstate == 'offline' then redis.call('ZREM', KEYS[4], user)
elseif kind ~= 'announce' then redis.call('ZADD', KEYS[4], string.format('%d', now), user) end
local result = 0
if force or nstate ~= state or nstatus ~= status or nhas ~= has then
  ${LUA_NEXT_POS('KEYS[2]')}
  local p = string.format('%d', pos)
  redis.call('HSET', KEYS[1], 'presence', nstate, 'status_msg', nstatus, 'has_status', nhas, 'last_active', string.format('%d', nlast), 'pos', p)
  redis.call('ZADD', KEYS[3], p, user)
  redis.call('PUBLISH', ARGV[7], '{"pos":' .. p .. ',"keys":' .. ARGV[8] .. '}')
  result = pos
elseif nlast ~= last then
  redis.call('HSET', KEYS[1], 'last_active', string.format('%d', nlast))
end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
-- Nothing outlives a week without writes (positions restart from the clock, past every old token).
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
return {nstate, result}`;

/** A join: positioned, kept (the last ${MAX_JOINS_KEPT}), published to the joiner. */
const JOIN_LUA = `
local now = tonumber(ARGV[2])
${LUA_NEXT_POS('KEYS[2]')}
local p = string.format('%d', pos)
redis.call('ZADD', KEYS[1], p, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -${MAX_JOINS_KEPT + 1})
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[3], '{"pos":' .. p .. ',"keys":' .. ARGV[4] .. '}')
return pos`;

/** Seen users: refreshed if tracked; the untracked (offline) ones are returned. */
const SEEN_LUA = `
local out = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    redis.call('PEXPIRE', ARGV[2] .. ARGV[i], ${RECORD_TTL_MS})
  else
    out[#out + 1] = ARGV[i]
  end
end
return out`;

export class RedisPresenceState implements PresenceState {
  private started = Number.MAX_SAFE_INTEGER;
  private sub: Subscription;
  private batch: WakeBatcher;

  constructor(private redis: Redis, private prefix: string, wake: Wake, log: Logger) {
    this.batch = new WakeBatcher(0, wake, PRESENCE_BATCH_MS);
    // Every worker, the writer too, makes a change readable only with its wake (see WakeBatcher).
    // The subject of a change is the first key (see PresenceService.change).
    this.sub = new Subscription(redis, `${prefix}presence:wake`, (m: Published) => {
      if (m.keys[0]) this.records.invalidate(m.keys[0]);
      this.batch.push(m.keys, m.pos);
    }, log);
  }

  /**
   * Records as read from Redis, shared by the syncs a wake-up sends to read them; dropped when a
   * change of the user is published, and after a minute (last_active moves without one).
   */
  private records = new SnapshotCache<PresenceRecord>(100_000, 60_000);
  /** Who changed between two positions: the same question from every sync woken by one batch. */
  private changes = new Map<string, Promise<string[]>>();

  current(): number { return this.batch.readable; }
  knownFrom(): number { return this.started; }

  private key(what: string): string {
    return `${this.prefix}presence:${what}`;
  }

  async start(): Promise<void> {
    await this.sub.start();
    this.batch.readable = Math.max(this.batch.readable, Number(await this.redis.get(this.key('pos')) ?? 0));
    this.started = this.batch.readable;
  }

  stop(): void {
    this.sub.stop();
    this.batch.stop();
  }

  get(userIds: string[]): Promise<Map<string, PresenceRecord>> {
    return this.records.getMany(userIds, (missing) => this.load(missing));
  }

  private async load(userIds: string[]): Promise<Map<string, PresenceRecord>> {
    const out = new Map<string, PresenceRecord>();
    if (!userIds.length) return out;
    const multi = this.redis.multi();
    for (const u of userIds) multi.hGetAll(this.key(`u:${u}`));
    const replies = (await multi.execAsPipeline()) as unknown as Array<Record<string, string>>;
    userIds.forEach((u, i) => {
      const h = replies[i];
      if (!h?.presence) { out.set(u, OFFLINE); return; }
      out.set(u, {
        presence: h.presence as PresenceValue,
        status_msg: h.has_status === '1' ? h.status_msg ?? '' : null,
        last_active: Number(h.last_active ?? 0),
        pos: Number(h.pos ?? 0),
      });
    });
    return out;
  }

  reached(pos: number, timeoutMs: number): Promise<void> {
    return this.batch.reached(pos, timeoutMs);
  }

  async apply(userId: string, change: PresenceChange, keys: string[]): Promise<{ state: PresenceValue; pos: number }> {
    const extra = change.kind === 'set' ? [change.presence, change.statusMsg ?? '', change.statusMsg === null ? '0' : '1']
      : change.kind === 'online' ? [String(change.granularityMs), '', '']
      : change.kind === 'timeout' ? [String(change.cutoff), '', ''] : ['', '', ''];
    const r = await this.redis.eval(PRESENCE_LUA, {
      keys: [this.key(`u:${userId}`), this.key('pos'), this.key('changes'), this.key('seen')],
      arguments: [change.kind, userId, String(Date.now()), ...extra, this.key('wake'), JSON.stringify(keys), String(RECORD_TTL_MS)],
    });
    // Read-your-writes here: this worker's cache forgets the user now, not when the wake arrives.
    this.records.invalidate(userId);
    const [state, pos] = r as [string, number];
    return { state: state as PresenceValue, pos: Number(pos) };
  }

  async changed(since: number, to: number): Promise<string[] | undefined> {
    if (since < Date.now() - PRESENCE_RETENTION_MS) return undefined;
    // Positions up to `to` are readable, so their log entries are final: one read serves all.
    const key = `${since} ${to}`;
    let hit = this.changes.get(key);
    if (!hit) {
      hit = this.redis.zRangeByScore(this.key('changes'), `(${since}`, String(to));
      hit.catch(() => this.changes.delete(key));
      if (this.changes.size >= 256) this.changes.delete(this.changes.keys().next().value as string);
      this.changes.set(key, hit);
    }
    return hit;
  }

  async notOffline(): Promise<string[]> {
    return this.redis.zRange(this.key('seen'), 0, -1);
  }

  async seen(userIds: string[]): Promise<string[]> {
    if (!userIds.length) return [];
    const r = await this.redis.eval(SEEN_LUA, { keys: [this.key('seen')], arguments: [String(Date.now()), this.key('u:'), ...userIds] });
    return r as string[];
  }

  async timedOut(cutoff: number): Promise<string[]> {
    return this.redis.zRangeByScore(this.key('seen'), '-inf', String(cutoff));
  }

  async trim(): Promise<void> {
    await this.redis.zRemRangeByScore(this.key('changes'), '-inf', String(Date.now() - PRESENCE_RETENTION_MS));
  }

  async joined(userId: string, roomId: string): Promise<void> {
    await this.redis.eval(JOIN_LUA, {
      keys: [this.key(`joins:${userId}`), this.key('pos')],
      arguments: [roomId, String(Date.now()), this.key('wake'), JSON.stringify([userId]), String(PRESENCE_RETENTION_MS)],
    });
  }

  async joinedRooms(userId: string, since: number, to: number): Promise<string[]> {
    return this.redis.zRangeByScore(this.key(`joins:${userId}`), `(${since}`, String(to));
  }

  async announce(userId: string, keys: string[]): Promise<void> {
    await this.apply(userId, { kind: 'announce' }, keys);
  }
}
