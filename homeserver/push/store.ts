import type { Db } from '../storage/db.ts';

/** Advisory lock class of push rule edits (the second key is a hash of the user ID). */
const LOCK_CLASS = 7271100;

/** Serialises read-modify-write cycles on one user's push rules, across workers too. */
export class PushRuleLock {
  private chains = new Map<string, Promise<unknown>>();

  constructor(private db: Db) {}

  /**
   * Runs `fn` holding the user's lock: an in-process queue first (so a worker holds one
   * connection per user at most), then a PostgreSQL advisory lock held by a transaction that
   * commits when `fn` is done.
   */
  run<T>(userId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(userId) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(() =>
      this.db.transaction(async (trx) => {
        await trx.raw('SELECT pg_advisory_xact_lock(?, hashtext(?))', [LOCK_CLASS, userId]);
        return fn();
      }),
    );
    this.chains.set(userId, next);
    const clear = () => {
      if (this.chains.get(userId) === next) this.chains.delete(userId);
    };
    next.then(clear, clear);
    return next;
  }
}
