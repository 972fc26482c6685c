// The rooms admin API's logic (Synapse's /_synapse/admin/v1/rooms…, delete v2, block): reads go
// through RoomReader, writes through RoomService (the room engine owns its tables).
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { notFound, MatrixError } from '../http/errors.ts';
import type { RoomReader, AdminRoomRow, RoomOrder, ClientEvent } from '../rooms/reader.ts';
import type { RoomService } from '../rooms/service.ts';
import type { RoomEventFilter } from '../rooms/filter.ts';
import { posToken } from '../storage/stream-token.ts';
import type { DeletionRow, ModerationStore } from './store.ts';

export interface DeleteParams {
  block: boolean;
  purge: boolean;
  new_room_user_id?: string;
  room_name?: string;
  message?: string;
}

export interface ShutdownResult {
  kicked_users: string[];
  failed_to_kick_users: string[];
  local_aliases: string[];
  new_room_id: string | null;
}

const DEFAULT_ROOM_NAME = 'Content Violation Notification';
const DEFAULT_MESSAGE = 'Sharing illegal content on this server is not permitted and rooms in violation will be blocked.';

/** The list's columns (details add topic and avatar). */
function listed(r: AdminRoomRow): Record<string, unknown> {
  const { topic: _t, avatar: _a, ...rest } = r;
  return rest;
}

export class RoomAdmin {
  /** Deletions running in this process (their status is in the database for every worker). */
  private running = new Map<string, Promise<void>>();

  constructor(
    private rooms: RoomService,
    private reader: RoomReader,
    private store: ModerationStore,
    private serverName: string,
    private current: () => number,
    private log: Logger,
  ) {}

  async list(q: { term?: string; orderBy: RoomOrder; dir: 'f' | 'b'; from: number; limit: number }): Promise<Record<string, unknown>> {
    const { rooms, total } = await this.reader.adminRooms({ ...q, serverName: this.serverName, asOf: this.current() });
    const out: Record<string, unknown> = { rooms: rooms.map(listed), offset: q.from, total_rooms: total };
    if (q.from + rooms.length < total) out.next_batch = q.from + rooms.length;
    if (q.from > 0) out.prev_batch = Math.max(0, q.from - q.limit);
    return out;
  }

  private async known(roomId: string) {
    const room = await this.reader.roomMeta(roomId);
    if (!room) throw notFound('Room not found');
    return room;
  }

  async details(roomId: string): Promise<Record<string, unknown>> {
    const row = (await this.reader.adminRoomDetails([roomId], this.serverName)).get(roomId);
    if (!row) throw notFound('Room not found');
    return { ...row, joined_local_devices: undefined, forgotten: false };
  }

  async members(roomId: string): Promise<{ members: string[]; total: number }> {
    await this.known(roomId);
    const members = (await this.reader.roomMembersOf([roomId])).get(roomId) ?? [];
    return { members, total: members.length };
  }

  async state(roomId: string): Promise<{ state: ClientEvent[] }> {
    const room = await this.known(roomId);
    return { state: await this.reader.format(await this.reader.currentState(room.room_nid)) };
  }

  async messages(roomId: string, opts: { from?: number; to?: number; dir: 'f' | 'b'; limit: number; filter: RoomEventFilter }): Promise<Record<string, unknown>> {
    const room = await this.known(roomId);
    const now = this.current();
    const from = Math.min(opts.from ?? (opts.dir === 'b' ? now : 0), now);
    const to = opts.dir === 'f' ? Math.min(opts.to ?? now, now) : opts.to;
    const rows = await this.reader.eventsBetween(room.room_nid, from, to, opts.dir, opts.limit, opts.filter);
    const out: Record<string, unknown> = { chunk: await this.reader.format(rows), start: posToken(from) };
    if (rows.length === opts.limit && rows.length) {
      const last = Number(rows[rows.length - 1]!.stream_pos);
      out.end = posToken(opts.dir === 'b' ? last - 1 : last);
    }
    return out;
  }

  // ---- block

  async block(roomId: string, block: boolean, by: string): Promise<void> {
    if (block) await this.store.block(roomId, by, Date.now());
    else await this.store.unblock(roomId);
  }

  async blockStatus(roomId: string): Promise<{ block: boolean; user_id?: string }> {
    const b = await this.store.blockOf(roomId);
    return b ? { block: true, user_id: b.blocked_by } : { block: false };
  }

  /** The join gate: nobody joins a blocked room. */
  async refuseBlocked(roomId: string): Promise<void> {
    if (await this.store.blockOf(roomId)) throw new MatrixError(403, 'M_FORBIDDEN', 'This room has been blocked on this server');
  }

  // ---- delete v2

  /** Schedules a deletion; it runs in the background and is polled by its delete_id. */
  async startDelete(roomId: string, params: DeleteParams, requester: string): Promise<string> {
    await this.known(roomId);
    if (await this.store.runningDeletion(roomId)) throw new MatrixError(400, 'M_UNKNOWN', `History purge already in progress for ${roomId}`);
    const deleteId = randomBytes(12).toString('base64url');
    await this.store.insertDeletion({ deleteId, roomId, requester, params, now: Date.now() });
    const run = this.runDelete(deleteId, roomId, params).finally(() => this.running.delete(deleteId));
    this.running.set(deleteId, run);
    return deleteId;
  }

  /** The deletion of the v1 API: runs it and answers when done (Synapse's synchronous DELETE /v1/rooms). */
  async deleteNow(roomId: string, params: DeleteParams, requester: string): Promise<ShutdownResult> {
    const deleteId = await this.startDelete(roomId, params, requester);
    await this.running.get(deleteId);
    const row = await this.store.deletion(deleteId);
    if (row?.status !== 'complete') throw new MatrixError(500, 'M_UNKNOWN', `Room deletion failed: ${row?.error ?? 'unknown error'}`);
    return (status(row).shutdown_room as ShutdownResult);
  }

  /** Waits for the deletions running here (shutdown, tests of this process). */
  async idle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  private async runDelete(deleteId: string, roomId: string, params: DeleteParams): Promise<void> {
    const result: ShutdownResult = { kicked_users: [], failed_to_kick_users: [], local_aliases: [], new_room_id: null };
    try {
      await this.store.updateDeletion(deleteId, 'active', result, null, Date.now());
      if (params.block) await this.store.block(roomId, params.new_room_user_id ?? `@_server:${this.serverName}`, Date.now());
      const room = await this.known(roomId);
      const locals = await this.reader.localJoined(room.room_nid, this.serverName);
      if (params.new_room_user_id) {
        const { room_id } = await this.rooms.createRoom(params.new_room_user_id, {
          preset: 'public_chat', name: params.room_name ?? DEFAULT_ROOM_NAME,
          power_level_content_override: { users_default: -10 },
        });
        result.new_room_id = room_id;
        await this.rooms.engine.send(room_id, { type: 'm.room.message', sender: params.new_room_user_id, content: { msgtype: 'm.text', body: params.message ?? DEFAULT_MESSAGE } });
        result.local_aliases = await this.rooms.aliases.forRoom(roomId);
        await this.rooms.moveAliases(roomId, room_id);
      }
      for (const userId of locals) {
        try {
          await this.rooms.leave(userId, roomId);
          await this.rooms.forget(userId, roomId).catch(() => {});
          if (result.new_room_id && userId !== params.new_room_user_id) await this.rooms.join(userId, result.new_room_id);
          result.kicked_users.push(userId);
        } catch (err) {
          this.log.warn({ err, userId, roomId }, 'room deletion could not move a user');
          result.failed_to_kick_users.push(userId);
        }
      }
      await this.rooms.setPublished(roomId, false);
      if (params.purge) await this.rooms.purge(roomId);
      await this.store.updateDeletion(deleteId, 'complete', result, null, Date.now());
    } catch (err) {
      this.log.error({ err, roomId, deleteId }, 'room deletion failed');
      await this.store.updateDeletion(deleteId, 'failed', result, (err as Error).message ?? String(err), Date.now()).catch(() => {});
    }
  }

  async deleteStatus(deleteId: string): Promise<Record<string, unknown>> {
    const row = await this.store.deletion(deleteId);
    if (!row) throw notFound('delete id not found');
    return status(row);
  }

  async deleteStatusOfRoom(roomId: string): Promise<{ results: Array<Record<string, unknown>> }> {
    const rows = await this.store.deletionsOf(roomId);
    if (!rows.length) throw notFound('No delete task for room');
    return { results: rows.map((r) => ({ delete_id: r.delete_id, ...status(r) })) };
  }
}

function status(row: DeletionRow): Record<string, unknown> {
  const result = (row.result ? JSON.parse(row.result) : {}) as Partial<ShutdownResult>;
  const out: Record<string, unknown> = {
    status: row.status === 'scheduled' ? 'scheduled' : row.status === 'active' ? 'active' : row.status,
    shutdown_room: {
      kicked_users: result.kicked_users ?? [], failed_to_kick_users: result.failed_to_kick_users ?? [],
      local_aliases: result.local_aliases ?? [], new_room_id: result.new_room_id ?? null,
    },
  };
  if (row.error) out.error = row.error;
  return out;
}
