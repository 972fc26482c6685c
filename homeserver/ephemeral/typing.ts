import type { Logger } from 'pino';
import type { Redis } from '../coordination/redis.ts';
import { forbidden } from '../http/errors.ts';
import type { Notifier } from '../realtime/notifier.ts';
import type { ClientEvent, RoomReader } from '../rooms/reader.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import { eventAllowed, roomPasses } from './filter.ts';
import { LUA_NEXT_POS, SnapshotCache, Subscription, nextPos, type Published } from './positions.ts';

/** A typing notification lasts this long when the client names no timeout… */
export const TYPING_DEFAULT_TIMEOUT_MS = 30_000;
/** …and at most this long whatever it names (Synapse caps at 120 s too). */
export const TYPING_MAX_TIMEOUT_MS = 120_000;
/** A room's typing state is kept this long after its last change (Redis key TTL, memory). */
const ROOM_RETENTION_MS = TYPING_MAX_TIMEOUT_MS + 60_000;
/** How often the background job looks for typing that ran out on a worker that went away. */
const SWEEP_INTERVAL_MS = 1_000;

/** Who is typing in one room, as delivered: the users and the position of the room's last change. */
export interface RoomTyping {
  pos: number;
  userIds: string[];
}

/**
 * Typing state: per room, who types until when, and the position of the room's last change (a
 * change is a user starting or stopping; renewing does not count, so it wakes nobody). In process
 * by default, in Redis with several workers: one interface, two implementations.
 */
export interface TypingState {
  /** Up to where the typing stream is readable here. */
  current(): number;
  /** From this position on, every change was notified to this process (set by start()). */
  knownFrom(): number;
  /** Starts (expiresAt > 0) or stops (0) one user's typing; wakes the room's members on a change. */
  set(roomId: string, userId: string, expiresAt: number): Promise<void>;
  /** The typing in each of these rooms (rooms with no state are absent); expired entries are left out. */
  read(roomIds: string[]): Promise<Map<string, RoomTyping>>;
  /** Removes typing that ran out in every room and wakes those rooms (the background job). */
  sweep(): Promise<void>;
  start(): Promise<void>;
  stop(): void;
}

type Wake = (keys: string[], pos: number) => void;

interface LocalRoom {
  pos: number;
  users: Map<string, number>;
  timer?: NodeJS.Timeout;
}

/** One process: a map of rooms, each with a timer at its first expiry. */
export class LocalTypingState implements TypingState {
  private pos = nextPos(0);
  private rooms = new Map<string, LocalRoom>();

  constructor(private wake: Wake) {}

  current(): number {
    return this.pos;
  }

  knownFrom(): number {
    return this.started;
  }

  private started = this.pos;

  async set(roomId: string, userId: string, expiresAt: number): Promise<void> {
    let room = this.rooms.get(roomId);
    if (!room) {
      if (expiresAt === 0) return;
      this.rooms.set(roomId, (room = { pos: 0, users: new Map() }));
    }
    const had = this.expire(roomId, room, Date.now()) || false;
    const was = room.users.has(userId);
    if (expiresAt > 0) room.users.set(userId, expiresAt);
    else room.users.delete(userId);
    if (had || was !== expiresAt > 0) this.changed(roomId, room);
    this.schedule(roomId, room);
  }

  async read(roomIds: string[]): Promise<Map<string, RoomTyping>> {
    const now = Date.now();
    const out = new Map<string, RoomTyping>();
    for (const id of roomIds) {
      const room = this.rooms.get(id);
      if (room) out.set(id, { pos: room.pos, userIds: [...room.users].filter(([, exp]) => exp > now).map(([u]) => u) });
    }
    return out;
  }

  /** The rooms' own timers do this on time; the sweep only catches a timer that fired late. */
  async sweep(): Promise<void> {
    const now = Date.now();
    for (const [id, room] of this.rooms) {
      if (!this.expire(id, room, now)) continue;
      this.changed(id, room);
      this.schedule(id, room);
    }
  }

  async start(): Promise<void> {}

  stop(): void {
    for (const room of this.rooms.values()) clearTimeout(room.timer);
    this.rooms.clear();
  }

  /** Drops the entries that ran out; whether there were any. */
  private expire(_roomId: string, room: LocalRoom, now: number): boolean {
    let any = false;
    for (const [u, exp] of room.users) if (exp <= now) { room.users.delete(u); any = true; }
    return any;
  }

  private changed(roomId: string, room: LocalRoom): void {
    room.pos = this.pos = nextPos(this.pos);
    this.wake([roomId], room.pos);
  }

  /** A timer at the room's next expiry, or, once nobody types, at the end of its retention. */
  private schedule(roomId: string, room: LocalRoom): void {
    clearTimeout(room.timer);
    const next = Math.min(...room.users.values());
    const at = Number.isFinite(next) ? next : Date.now() + ROOM_RETENTION_MS;
    room.timer = setTimeout(() => {
      if (room.users.size === 0) { this.rooms.delete(roomId); return; }
      if (this.expire(roomId, room, Date.now())) this.changed(roomId, room);
      this.schedule(roomId, room);
    }, Math.max(0, at - Date.now()) + 5);
    room.timer.unref();
  }
}

/**
 * Redis: per room a hash `typing:<room>` of user → expiry plus `~pos`, with a TTL; a sorted set
 * `typing:deadlines` of rooms by their next expiry for the sweep. One Lua script expires, changes
 * and positions a room atomically and publishes the wake-up, which every worker turns into a local
 * notify after advancing its own readable position.
 */
const TYPING_LUA = `
local h, now = KEYS[1], tonumber(ARGV[3])
local user, exp = ARGV[1], tonumber(ARGV[2])
local changed = false
local min = nil
local all = redis.call('HGETALL', h)
for i = 1, #all, 2 do
  local f, v = all[i], tonumber(all[i + 1])
  if f ~= '~pos' then
    if v <= now then
      redis.call('HDEL', h, f)
      changed = true
    elseif f ~= user and (min == nil or v < min) then
      min = v
    end
  end
end
if user ~= '' then
  local had = redis.call('HEXISTS', h, user) == 1
  if exp > 0 then
    redis.call('HSET', h, user, ARGV[2])
    if not had then changed = true end
    if min == nil or exp < min then min = exp end
  elseif had then
    redis.call('HDEL', h, user)
    changed = true
  end
end
local result = 0
if changed then
  ${LUA_NEXT_POS('KEYS[2]')}
  redis.call('HSET', h, '~pos', string.format('%d', pos))
  redis.call('PUBLISH', ARGV[6], '{"pos":' .. string.format('%d', pos) .. ',"keys":' .. ARGV[7] .. '}')
  result = pos
end
if min == nil then redis.call('ZREM', KEYS[3], ARGV[4]) else redis.call('ZADD', KEYS[3], string.format('%d', min), ARGV[4]) end
redis.call('PEXPIRE', h, ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
-- Idle for a week, the counter may go: positions restart from the clock, past every old token.
redis.call('PEXPIRE', KEYS[2], 604800000)
return result`;

export class RedisTypingState implements TypingState {
  private pos = 0;
  private sub: Subscription;
  private timers = new Map<string, NodeJS.Timeout>();

  /** Rooms' typing as read from Redis, until a change of the room is published. */
  private cache = new SnapshotCache<RoomTyping & { expiries: number[] }>(10_000, ROOM_RETENTION_MS);

  constructor(private redis: Redis, private prefix: string, private wake: Wake, log: Logger) {
    this.sub = new Subscription(redis, `${prefix}typing:wake`, (m: Published) => {
      for (const k of m.keys) this.cache.invalidate(k);
      if (m.pos > this.pos) this.pos = m.pos;
      this.wake(m.keys, m.pos);
    }, log);
  }

  current(): number {
    return this.pos;
  }

  knownFrom(): number {
    return this.started;
  }

  private started = Number.MAX_SAFE_INTEGER;

  async start(): Promise<void> {
    await this.sub.start();
    const stored = Number(await this.redis.get(`${this.prefix}typing:pos`) ?? 0);
    this.pos = Math.max(this.pos, stored);
    this.started = this.pos;
  }

  stop(): void {
    this.sub.stop();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private async run(roomId: string, userId: string, expiresAt: number): Promise<number> {
    const r = await this.redis.eval(TYPING_LUA, {
      keys: [this.roomKey(roomId), `${this.prefix}typing:pos`, `${this.prefix}typing:deadlines`],
      arguments: [userId, String(expiresAt), String(Date.now()), roomId, String(ROOM_RETENTION_MS), `${this.prefix}typing:wake`, JSON.stringify([roomId])],
    });
    this.cache.invalidate(roomId);
    // Readable here only with the published wake, like on every other worker: a position that
    // moved before its notify could be passed over by a sync that found nothing notified yet.
    return Number(r);
  }

  private roomKey(roomId: string): string {
    return `${this.prefix}typing:${roomId}`;
  }

  async set(roomId: string, userId: string, expiresAt: number): Promise<void> {
    await this.run(roomId, userId, expiresAt);
    // This worker wakes the room when the typing runs out; the job covers a worker that went away.
    if (expiresAt > 0) {
      clearTimeout(this.timers.get(`${roomId} ${userId}`));
      const t = setTimeout(() => {
        this.timers.delete(`${roomId} ${userId}`);
        this.run(roomId, '', 0).catch(() => {});
      }, Math.max(0, expiresAt - Date.now()) + 5);
      t.unref();
      this.timers.set(`${roomId} ${userId}`, t);
    }
  }

  async read(roomIds: string[]): Promise<Map<string, RoomTyping>> {
    const out = new Map<string, RoomTyping>();
    if (!roomIds.length) return out;
    const rooms = await this.cache.getMany(roomIds, async (missing) => {
      const multi = this.redis.multi();
      for (const id of missing) multi.hGetAll(this.roomKey(id));
      const replies = (await multi.execAsPipeline()) as unknown as Array<Record<string, string>>;
      const loaded = new Map<string, RoomTyping & { expiries: number[] }>();
      missing.forEach((id, i) => {
        const h = replies[i];
        if (!h || h['~pos'] === undefined) return;
        const entries = Object.entries(h).filter(([f]) => f !== '~pos');
        loaded.set(id, { pos: Number(h['~pos']), userIds: entries.map(([f]) => f), expiries: entries.map(([, exp]) => Number(exp)) });
      });
      return loaded;
    });
    // Entries that ran out are left out at once, before the sweep publishes their removal.
    const now = Date.now();
    for (const [id, t] of rooms) out.set(id, { pos: t.pos, userIds: t.userIds.filter((_, i) => t.expiries[i]! > now) });
    return out;
  }

  async sweep(): Promise<void> {
    const due = await this.redis.zRangeByScore(`${this.prefix}typing:deadlines`, '-inf', String(Date.now()));
    for (const roomId of due) await this.run(roomId, '', 0);
  }
}

/**
 * Typing: PUT /rooms/{roomId}/typing/{userId} for oneself in a joined room, the m.typing
 * ephemeral event of /sync to the room's members, and the sweep of typing that ran out.
 */
export class TypingService {
  /** issue 11: told of every typing change made here (federation sends local users' to the room's other servers). */
  onTyping: ((roomId: string, userId: string, typing: boolean, timeoutMs: number) => void) | undefined;

  constructor(private state: TypingState, private rooms: RoomReader, private notifier: Notifier) {}

  async setTyping(userId: string, roomId: string, typing: boolean, timeoutMs: number | undefined): Promise<void> {
    const room = await this.rooms.roomMeta(roomId);
    const m = room ? await this.rooms.membership(userId, room.room_nid) : undefined;
    if (m?.membership !== 'join') throw forbidden(`User ${userId} not in room ${roomId}`);
    const timeout = Math.min(timeoutMs ?? TYPING_DEFAULT_TIMEOUT_MS, TYPING_MAX_TIMEOUT_MS);
    await this.state.set(roomId, userId, typing && timeout > 0 ? Date.now() + timeout : 0);
    this.onTyping?.(roomId, userId, typing && timeout > 0, timeout);
  }

  /** A member left a room: they stop typing there. */
  async left(roomId: string, userId: string): Promise<void> {
    await this.state.set(roomId, userId, 0);
  }

  /** The background job: typing that ran out on a worker that went away still wakes its room. */
  job(): { start(): void; stop(): void } {
    let timer: NodeJS.Timeout | undefined;
    return {
      start: () => {
        timer = setInterval(() => { this.state.sweep().catch(() => {}); }, SWEEP_INTERVAL_MS);
        timer.unref();
      },
      stop: () => clearInterval(timer),
    };
  }

  /** The typing stream of /sync: per joined room whose typing set changed, m.typing. */
  part(): SyncPart {
    return {
      name: 'typing',
      stream: 'typing',
      current: () => this.state.current(),
      read: async (ctx: SyncPartContext): Promise<SyncPartOutput> => {
        const since = ctx.since?.typing;
        const filter = ctx.filter.room?.ephemeral;
        if (!eventAllowed(filter, 'm.typing')) return {};
        let roomIds = ctx.joinedRoomIds.filter((r) => roomPasses(filter, r));
        // The notifier knows which rooms changed since it started; older tokens read every room.
        if (since !== undefined && since >= this.state.knownFrom()) {
          roomIds = roomIds.filter((r) => this.notifier.changedSince('typing', [r], since) !== false);
        }
        let typing: Map<string, RoomTyping>;
        try {
          typing = await this.state.read(roomIds);
        } catch {
          // Redis away: /sync still answers, without typing (positions do not move while no wake arrives).
          return {};
        }
        const ephemeral = new Map<string, ClientEvent[]>();
        for (const [roomId, t] of typing) {
          const include = since === undefined ? t.userIds.length > 0 : t.pos > since && t.pos <= ctx.to.typing;
          if (include) ephemeral.set(roomId, [{ type: 'm.typing', content: { user_ids: t.userIds } } as unknown as ClientEvent]);
        }
        return { ephemeral };
      },
    };
  }
}
