// "Redact all recent events of a user" (Synapse's POST /_synapse/admin/v1/user/{userId}/redact):
// runs in the background, its status polled by redact_id. Each redaction is sent by the user
// themselves while they are in the room, else by the local member of the room with the highest
// power level that may redact others' events.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { notFound } from '../http/errors.ts';
import { actionLevel, userLevel, type PowerLevelsContent } from '../protocol/power-levels.ts';
import { versionOfCreate } from '../protocol/room-versions.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { RoomService } from '../rooms/service.ts';
import type { ModerationStore } from './store.ts';

export class UserRedactions {
  private running = new Map<string, Promise<void>>();

  constructor(private store: ModerationStore, private rooms: RoomService, private reader: RoomReader, private serverName: string, private log: Logger) {}

  async start(userId: string, opts: { rooms?: string[]; reason?: string; limit: number }, requester: string): Promise<string> {
    const redactId = randomBytes(12).toString('base64url');
    await this.store.insertRedaction(redactId, userId, requester, Date.now());
    const run = this.run(redactId, userId, opts).finally(() => this.running.delete(redactId));
    this.running.set(redactId, run);
    return redactId;
  }

  async idle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  private async run(redactId: string, userId: string, opts: { rooms?: string[]; reason?: string; limit: number }): Promise<void> {
    const failed: Record<string, string> = {};
    try {
      await this.store.updateRedaction(redactId, 'active', failed);
      const events = await this.reader.recentEventsOf(userId, opts.rooms?.length ? opts.rooms : undefined, opts.limit);
      const senders = new Map<string, string | undefined>();
      for (const e of events) {
        try {
          if (!senders.has(e.room_id)) senders.set(e.room_id, await this.redactor(e.room_id, userId));
          const sender = senders.get(e.room_id);
          if (!sender) { failed[e.event_id] = 'no local member of the room may redact it'; continue; }
          const content: Record<string, unknown> = opts.reason !== undefined ? { reason: opts.reason } : {};
          const { version } = await this.rooms.room(e.room_id);
          if (version.redactsInContent) content.redacts = e.event_id;
          await this.rooms.engine.send(e.room_id, { type: 'm.room.redaction', sender, content, redacts: e.event_id });
        } catch (err) {
          failed[e.event_id] = (err as Error).message ?? String(err);
        }
      }
      await this.store.updateRedaction(redactId, 'complete', failed);
    } catch (err) {
      this.log.error({ err, userId, redactId }, 'user redaction failed');
      await this.store.updateRedaction(redactId, 'failed', failed).catch(() => {});
    }
  }

  /** Who sends the redactions in a room: the user while joined, else the most powerful local member allowed to. */
  private async redactor(roomId: string, userId: string): Promise<string | undefined> {
    const room = await this.reader.roomMeta(roomId);
    if (!room) return undefined;
    const m = await this.reader.membership(userId, room.room_nid);
    if (m?.membership === 'join') return userId;
    const [plRow, createRow] = await Promise.all([
      this.reader.currentStateFor(room.room_nid, [['m.room.power_levels', '']]),
      this.reader.currentStateFor(room.room_nid, [['m.room.create', '']]),
    ]);
    const pl = plRow[0] ? (JSON.parse(plRow[0].json) as { content: PowerLevelsContent }).content : undefined;
    const create = createRow[0] ? (JSON.parse(createRow[0].json) as { sender: string; content: Record<string, unknown> }) : undefined;
    const needed = actionLevel(pl, 'redact');
    const locals = await this.reader.localJoined(room.room_nid, this.serverName);
    const ranked = locals.map((u) => ({ u, level: userLevel(pl, u, create, versionOfCreate(create)) })).filter((x) => x.level >= needed).sort((a, b) => b.level - a.level);
    return ranked[0]?.u;
  }

  async status(redactId: string): Promise<{ status: string; failed_redactions: Record<string, string> }> {
    const row = await this.store.redaction(redactId);
    if (!row) throw notFound('redact id not found');
    return { status: row.status === 'complete' ? 'completed' : row.status, failed_redactions: JSON.parse(row.failed) as Record<string, string> };
  }
}
