import type { StreamName, SyncToken } from '../storage/stream-token.ts';

/**
 * Wakes long-polling /sync requests and sockets when something they care about is readable. A
 * waiter listens on keys (room ids, its user id, `<userId>|<deviceId>` for its device) and holds a
 * position in every stream; a notification names one stream, some keys and the stream position now
 * readable, so each stream wakes only who it concerns.
 *
 * The in-process implementation is the whole story for one worker; with several, the Redis
 * implementation publishes each notification to every worker, which feeds its own LocalNotifier.
 */
export interface Notifier {
  /** Something changed in `stream` for these keys, now readable up to `pos`. */
  notify(stream: StreamName, keys: Iterable<string>, pos: number): void;
  /**
   * Resolves with true when one of the keys is notified in some stream past `since`'s position of
   * that stream (at once if that already happened), false after timeoutMs or when aborted.
   */
  wait(keys: Iterable<string>, since: SyncToken, timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * Whether anything was notified in `stream` for these keys after `pos`; undefined when `pos` is
   * older than what this notifier has seen (before it started), so only the database can tell.
   */
  changedSince(stream: StreamName, keys: Iterable<string>, pos: number): boolean | undefined;
}

/** The device key of a waiter (to-device messages wake one device, not every device of the user). */
export function deviceKey(userId: string, deviceId: string): string {
  return `${userId}|${deviceId}`;
}

export class LocalNotifier implements Notifier {
  /** Every notification of a stream after its position here has been seen here. */
  constructor(private baseline: SyncToken) {}

  private waiters = new Map<string, Set<(stream: StreamName, pos: number) => void>>();
  // The last position notified per key and stream, so a waiter that read before a notify does not miss it.
  private lastPos = new Map<string, Partial<Record<StreamName, number>>>();
  /** Positions notified for every key at once (conservatively, when notifications may have been missed). */
  private allPos: Partial<Record<StreamName, number>> = {};

  /**
   * Something may have changed in `stream` for any key, up to `pos` (notifications from other
   * workers were missed): every waiter behind `pos` wakes and reads the database.
   */
  notifyAll(stream: StreamName, pos: number): void {
    if ((this.allPos[stream] ?? 0) < pos) this.allPos[stream] = pos;
    for (const set of [...this.waiters.values()]) for (const wake of [...set]) wake(stream, pos);
  }

  /** Wakes every waiter once, without recording a position (streams whose positions are not known here). */
  wakeAll(stream: StreamName): void {
    for (const set of [...this.waiters.values()]) for (const wake of [...set]) wake(stream, Number.MAX_SAFE_INTEGER);
  }

  notify(stream: StreamName, keys: Iterable<string>, pos: number): void {
    for (const k of keys) {
      let last = this.lastPos.get(k);
      if (!last) this.lastPos.set(k, (last = {}));
      if ((last[stream] ?? 0) < pos) last[stream] = pos;
      const set = this.waiters.get(k);
      if (!set) continue;
      for (const wake of [...set]) wake(stream, pos);
    }
  }

  changedSince(stream: StreamName, keys: Iterable<string>, pos: number): boolean | undefined {
    if (pos < this.baseline[stream]) return undefined;
    if ((this.allPos[stream] ?? 0) > pos) return true;
    for (const k of keys) if ((this.lastPos.get(k)?.[stream] ?? 0) > pos) return true;
    return false;
  }

  private passed(k: string, since: SyncToken): boolean {
    for (const s in this.allPos) if (this.allPos[s as StreamName]! > since[s as StreamName]) return true;
    const last = this.lastPos.get(k);
    if (!last) return false;
    for (const s in last) if (last[s as StreamName]! > since[s as StreamName]) return true;
    return false;
  }

  wait(keys: Iterable<string>, since: SyncToken, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const list = [...keys];
    if (list.some((k) => this.passed(k, since))) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (woken: boolean) => {
        if (timer) clearTimeout(timer);
        for (const k of list) {
          const set = this.waiters.get(k);
          set?.delete(wake);
          if (set && set.size === 0) this.waiters.delete(k);
        }
        signal?.removeEventListener('abort', onAbort);
        resolve(woken);
      };
      const wake = (stream: StreamName, pos: number) => { if (pos > since[stream]) finish(true); };
      const onAbort = () => finish(false);
      for (const k of list) {
        let set = this.waiters.get(k);
        if (!set) this.waiters.set(k, (set = new Set()));
        set.add(wake);
      }
      timer = setTimeout(() => finish(false), timeoutMs);
      signal?.addEventListener('abort', onAbort);
    });
  }
}
