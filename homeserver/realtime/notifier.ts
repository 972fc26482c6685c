/**
 * Wakes long-polling /sync requests when something they care about is persisted. A waiter listens on
 * keys: room ids and its own user id. In-process; a Redis pub/sub implementation plugs in here for
 * several workers.
 */
export interface Notifier {
  /** Something changed for these keys, now readable up to `pos`. */
  notify(keys: Iterable<string>, pos: number): void;
  /**
   * Resolves with true when one of the keys is notified past `sincePos` (at once if that already
   * happened), false after timeoutMs or when aborted.
   */
  wait(keys: Iterable<string>, sincePos: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * Whether anything was notified for these keys after `pos`; undefined when `pos` is older than
   * what this notifier has seen (before it started), so only the database can tell.
   */
  changedSince(keys: Iterable<string>, pos: number): boolean | undefined;
}

export class LocalNotifier implements Notifier {
  /** Every notification after this position has been seen here. */
  constructor(private baseline: number) {}

  private waiters = new Map<string, Set<() => void>>();
  // The last position notified per key, so a waiter that read before a notify does not miss it.
  private lastPos = new Map<string, number>();

  notify(keys: Iterable<string>, pos: number): void {
    for (const k of keys) {
      if ((this.lastPos.get(k) ?? 0) < pos) this.lastPos.set(k, pos);
      const set = this.waiters.get(k);
      if (!set) continue;
      for (const wake of [...set]) wake();
    }
  }

  changedSince(keys: Iterable<string>, pos: number): boolean | undefined {
    if (pos < this.baseline) return undefined;
    for (const k of keys) if ((this.lastPos.get(k) ?? 0) > pos) return true;
    return false;
  }

  wait(keys: Iterable<string>, sincePos: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const list = [...keys];
    if (list.some((k) => (this.lastPos.get(k) ?? 0) > sincePos)) return Promise.resolve(true);
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
      const wake = () => finish(true);
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
