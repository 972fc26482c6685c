import { randomBytes } from 'node:crypto';
import { LruCache } from '../cache/lru.ts';
import type { Requester } from '../http/context.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { deviceKey, type Notifier } from '../realtime/notifier.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { SyncPart, SyncPartContext, SyncPartOutput } from '../sync/parts.ts';
import type { DeviceDirectory } from './keys.ts';
import type { ToDeviceMessage, ToDeviceStore } from './to-device-store.ts';

/** To-device messages one /sync delivers at most (the spec recommends 100, as Synapse sends). */
export const TO_DEVICE_PER_SYNC = 100;

/** Devices whose last delivered position this worker remembers (the most recent ones). */
const DELIVERED_KEPT = 100_000;

/** Recipients' device lists read at once. */
const DEVICE_LOOKUPS_AT_ONCE = 16;

/**
 * Send-to-device messaging: a message waits for its device until the device syncs past it (its
 * next /sync with a `since` beyond the message's position), at most TO_DEVICE_PER_SYNC per sync,
 * the rest on the following ones. Each send takes one position of the stream sequence and wakes
 * the recipients' devices (`user|device` keys), on whichever worker they sync.
 */
/**
 * issue 11: hands messages for other servers' users to federation (m.direct_to_device EDUs, one
 * per server); e2ee never imports federation.
 */
export type RemoteToDevice = (sender: string, type: string, messageId: string, byServer: Map<string, Record<string, Record<string, Record<string, unknown>>>>) => Promise<void>;

export class ToDeviceService {
  /** issue 11: set by the composition root when federation runs. */
  remote: RemoteToDevice | undefined;

  /** Per device (`user|device`): the last position this worker delivered, until a sync acknowledges it. */
  private delivered = new LruCache<string, number>(DELIVERED_KEPT);

  constructor(
    private store: ToDeviceStore,
    private devices: DeviceDirectory,
    private tracker: StreamTracker,
    private notifier: Notifier,
    private serverName: string,
  ) {}

  /**
   * PUT /sendToDevice/{eventType}/{txnId}. `*` reaches every device of the user; unknown users and
   * devices (and other servers' users: no federation yet) are dropped, as Synapse does. A repeated
   * transaction id of the sending device sends nothing again.
   */
  async send(me: Requester, type: string, txnId: string, messages: Record<string, Record<string, Record<string, unknown>>>): Promise<void> {
    const out: ToDeviceMessage[] = [];
    const users = Object.keys(messages).filter((u) => u.endsWith(`:${this.serverName}`));
    for (let i = 0; i < users.length; i += DEVICE_LOOKUPS_AT_ONCE) {
      await Promise.all(users.slice(i, i + DEVICE_LOOKUPS_AT_ONCE).map(async (userId) => {
        const byDevice = messages[userId]!;
        const known = (await this.devices.devices(userId)).map((d) => d.device_id);
        if ('*' in byDevice) {
          const content = canonicalJson(byDevice['*']);
          for (const deviceId of known) out.push({ userId, deviceId, content });
          return;
        }
        const exists = new Set(known);
        for (const [deviceId, content] of Object.entries(byDevice)) if (exists.has(deviceId)) out.push({ userId, deviceId, content: canonicalJson(content) });
      }));
    }
    const { pos, fresh } = await this.store.send(me, txnId, type, out);
    if (pos !== undefined) {
      const keys = [...new Set(out.map((m) => deviceKey(m.userId, m.deviceId)))];
      this.tracker.whenVisible(pos, () => this.notifier.notify('toDevice', keys, pos));
    }
    // issue 11: other servers' users, once per transaction id (a retried PUT sends nothing again).
    const remoteUsers = Object.keys(messages).filter((u) => !u.endsWith(`:${this.serverName}`));
    if (fresh && remoteUsers.length && this.remote) {
      const byServer = new Map<string, Record<string, Record<string, Record<string, unknown>>>>();
      for (const u of remoteUsers) {
        const server = u.slice(u.indexOf(':') + 1);
        let m = byServer.get(server);
        if (!m) byServer.set(server, (m = {}));
        m[u] = messages[u]!;
      }
      await this.remote(me.userId, type, randomBytes(16).toString('hex'), byServer);
    }
  }

  /**
   * issue 11: an m.direct_to_device EDU from `origin` (whose user `sender` is): delivered to this
   * server's users and devices (`*`: all of them); a repeated message_id from the same sender is
   * delivered once.
   */
  async applyRemote(origin: string, sender: string, type: string, messageId: string, messages: Record<string, Record<string, Record<string, unknown>>>): Promise<void> {
    const out: ToDeviceMessage[] = [];
    for (const [userId, byDevice] of Object.entries(messages)) {
      if (!userId.endsWith(`:${this.serverName}`) || typeof byDevice !== 'object' || byDevice === null) continue;
      const known = (await this.devices.devices(userId)).map((d) => d.device_id);
      if ('*' in byDevice) {
        const content = canonicalJson(byDevice['*']);
        for (const deviceId of known) out.push({ userId, deviceId, content });
        continue;
      }
      const exists = new Set(known);
      for (const [deviceId, content] of Object.entries(byDevice)) if (exists.has(deviceId)) out.push({ userId, deviceId, content: canonicalJson(content) });
    }
    const { pos } = await this.store.send({ userId: sender, deviceId: `federation:${origin}` }, messageId, type, out);
    if (pos !== undefined) {
      const keys = [...new Set(out.map((m) => deviceKey(m.userId, m.deviceId)))];
      this.tracker.whenVisible(pos, () => this.notifier.notify('toDevice', keys, pos));
    }
  }

  /** Devices gone: their pending messages and transaction ids too. */
  async devicesRemoved(userId: string, deviceIds: string[] | 'all'): Promise<void> {
    await this.store.transaction((trx) => this.store.deleteDevices(trx, userId, deviceIds));
  }

  /** A background job: forgets transaction ids older than a day, hourly. */
  pruneJob(): { start(): void; stop(): void } {
    let timer: NodeJS.Timeout | undefined;
    return {
      start: () => {
        timer = setInterval(() => { this.store.pruneTxns().catch(() => {}); }, 3600_000);
        timer.unref();
      },
      stop: () => clearInterval(timer),
    };
  }

  /** The to_device section of /sync (and of the WebSocket's batches). */
  syncPart(): SyncPart {
    return {
      name: 'to-device',
      stream: 'toDevice',
      current: () => this.tracker.current(),
      waitKeys: (me) => [deviceKey(me.userId, me.deviceId)],
      read: (ctx) => this.read(ctx),
      acknowledge: (me, since) => this.acknowledge(me, since.toDevice),
    };
  }

  /**
   * A sync from a token past what this worker delivered to the device: those messages go now, even
   * when the sync finds nothing new (a sync that reads deletes them anyway, on any worker).
   */
  private async acknowledge(me: Requester, since: number): Promise<void> {
    const key = deviceKey(me.userId, me.deviceId);
    const delivered = this.delivered.get(key);
    if (delivered === undefined || since <= 0) return;
    if (since >= delivered) this.delivered.delete(key);
    await this.store.deleteUpTo(me.userId, me.deviceId, since);
  }

  private async read(ctx: SyncPartContext): Promise<SyncPartOutput> {
    const { userId, deviceId } = ctx.me;
    const since = ctx.since?.toDevice ?? 0;
    const to = ctx.to.toDevice;
    if (since >= to) return {};
    if (ctx.since && this.notifier.changedSince('toDevice', [deviceKey(userId, deviceId)], since) === false) return {};
    // The client holds a token past these: it has them (delivered by another worker, or before a restart).
    if (since > 0) await this.store.deleteUpTo(userId, deviceId, since);
    const rows = await this.store.pending(userId, deviceId, since, to, TO_DEVICE_PER_SYNC + 1);
    if (!rows.length) return {};
    const page = rows.slice(0, TO_DEVICE_PER_SYNC);
    const events = page.map((r) => ({ sender: r.sender, type: r.type, content: JSON.parse(r.content) }));
    const key = deviceKey(userId, deviceId);
    this.delivered.set(key, Math.max(this.delivered.get(key) ?? 0, Number(page.at(-1)!.stream_pos)));
    return {
      top: { to_device: { events } },
      news: true,
      // More are waiting: the next batch starts after this page.
      ...(rows.length > TO_DEVICE_PER_SYNC ? { upTo: Number(page.at(-1)!.stream_pos) } : {}),
    };
  }
}
