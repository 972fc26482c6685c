import type { Db } from './db.ts';

/**
 * Hands out positions of the one persistent stream (events, memberships, account data) and knows
 * up to where everything is persisted.
 *
 * Concurrent writers take positions from a sequence and may commit out of order: a reader that
 * used the highest committed position could skip an earlier one still in flight. Readers therefore
 * only read up to `current`: the lowest position still in flight, minus one (as Synapse's id
 * generators do).
 */
export class StreamTracker {
  private inFlight = new Set<number>();
  private maxDone: number;
  private listeners: Array<(pos: number) => void> = [];
  private waiting: Array<{ pos: number; fn: () => void }> = [];
  /**
   * Readers' ceilings while an allocation is on its way back from PostgreSQL: a position handed out
   * there is unknown here until the reply arrives, and a later one may commit meanwhile.
   */
  private holds: number[] = [];

  private constructor(start: number) {
    this.maxDone = start;
  }

  static async open(db: Db): Promise<StreamTracker> {
    const r = await db.raw('SELECT last_value, is_called FROM stream_positions');
    const row = r.rows[0] as { last_value: number; is_called: boolean };
    // Nothing is in flight when we start, so everything handed out so far is either there or lost.
    return new StreamTracker(row.is_called ? Number(row.last_value) : 0);
  }

  /** Takes the next position inside the caller's transaction; call `done` after commit or rollback. */
  async allocate(trx: Db): Promise<number> {
    const [pos] = await this.reserve(async () => {
      const r = await trx.raw("SELECT nextval('stream_positions') AS pos");
      return [Number(r.rows[0].pos)];
    });
    return pos!;
  }

  /** Runs an allocation of positions (nextval) and marks them in flight; call `done` for each later. */
  async reserve(allocate: () => Promise<number[]>): Promise<number[]> {
    const hold = this.current();
    this.holds.push(hold);
    try {
      const positions = await allocate();
      for (const p of positions) this.inFlight.add(p);
      return positions;
    } finally {
      this.holds.splice(this.holds.indexOf(hold), 1);
      // Readers may now see further: what waited for that must run now, not at the next commit.
      this.advanced();
    }
  }

  done(positions: number[]): void {
    for (const p of positions) {
      this.inFlight.delete(p);
      if (p > this.maxDone) this.maxDone = p;
    }
    this.advanced();
  }

  /** Runs what waited for positions that are now readable. Every change of current() ends here. */
  private advanced(): void {
    const now = this.current();
    if (this.waiting.length) {
      const ready = this.waiting.filter((w) => w.pos <= now);
      this.waiting = this.waiting.filter((w) => w.pos > now);
      for (const w of ready) w.fn();
    }
    for (const l of this.listeners) l(now);
  }

  /**
   * Runs `fn` once everything up to `pos` is readable: a notification for a position that an
   * earlier, still uncommitted one hides would wake readers that cannot see it yet.
   */
  whenVisible(pos: number, fn: () => void): void {
    if (pos <= this.current()) fn();
    else this.waiting.push({ pos, fn });
  }

  /** Every position at or below this one is persisted (or will never exist). */
  current(): number {
    let lowest = Infinity;
    for (const p of this.inFlight) if (p < lowest) lowest = p;
    let now = lowest === Infinity ? this.maxDone : Math.min(this.maxDone, lowest - 1);
    for (const h of this.holds) if (h < now) now = h;
    return now;
  }

  onAdvance(listener: (pos: number) => void): void {
    this.listeners.push(listener);
  }
}
