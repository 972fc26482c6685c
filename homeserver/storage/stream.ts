import type { Db } from './db.ts';

/**
 * What a StreamTracker shares with the other workers (homeserver/coordination/positions.ts): the
 * readable position over all writers. Without it the tracker is the whole story (one process).
 */
export interface SharedStream {
  /** Called once by the tracker it serves; resolves with a position every worker has persisted up to. */
  attach(tracker: StreamTracker): Promise<number>;
  /**
   * Before an allocation: makes sure the other workers' readers stop at or below this worker's
   * floor (resolves once registered, or at once when the coordination service is away).
   */
  lowerFloor(floor: number): Promise<void>;
  /** This worker finished positions up to `maxDone` (undefined: only its floor changed). Batched. */
  changed(maxDone?: number): void;
}

/**
 * Hands out positions of the one persistent stream (events, memberships, account data) and knows
 * up to where everything is persisted.
 *
 * Concurrent writers take positions from a sequence and may commit out of order: a reader that
 * used the highest committed position could skip an earlier one still in flight. Readers therefore
 * only read up to `current`: the lowest position still in flight, minus one (as Synapse's id
 * generators do).
 *
 * With several workers (a SharedStream, Synapse's MultiWriterIdGenerator is the model), each
 * worker registers a floor before it allocates, and `current` is the position persisted by every
 * writer (min over the writers' floors and the highest done position), learnt from the others.
 * There `whenVisible` runs once this worker's own positions up to `pos` are done (what a
 * notification needs to be published: the notifier delivers it when `whenReadable`), so that
 * every worker hears of a change before its readers can pass it.
 */
export class StreamTracker {
  private inFlight = new Set<number>();
  private maxDone: number;
  private listeners: Array<(pos: number) => void> = [];
  private waiting: Array<{ pos: number; fn: () => void }> = [];
  private readableWaiting: Array<{ pos: number; fn: () => void }> = [];
  /**
   * Readers' ceilings while an allocation is on its way back from PostgreSQL: a position handed out
   * there is unknown here until the reply arrives, and a later one may commit meanwhile.
   */
  private holds: number[] = [];
  /** With a SharedStream: the position every worker has persisted up to, as last heard. */
  private readable = 0;
  private lastReported = -1;

  private constructor(start: number, private shared?: SharedStream) {
    this.maxDone = start;
    this.readable = start;
  }

  static async open(db: Db, shared?: SharedStream): Promise<StreamTracker> {
    if (shared) {
      const t = new StreamTracker(0, shared);
      const start = await shared.attach(t);
      t.maxDone = start;
      t.readable = start;
      return t;
    }
    const r = await db.raw('SELECT last_value, is_called FROM stream_positions');
    const row = r.rows[0] as { last_value: number; is_called: boolean };
    // Nothing is in flight when we start, so everything handed out so far is either there or lost.
    return new StreamTracker(row.is_called ? Number(row.last_value) : 0);
  }

  /** Whether positions are shared with other workers. */
  get isShared(): boolean {
    return this.shared !== undefined;
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
      // Any position allocated from now on is above `hold`: registered first, no reader passes it.
      if (this.shared) await this.shared.lowerFloor(this.floor()!);
      const positions = await allocate();
      for (const p of positions) this.inFlight.add(p);
      return positions;
    } finally {
      this.holds.splice(this.holds.indexOf(hold), 1);
      this.shared?.changed();
      // Readers may now see further: what waited for that must run now, not at the next commit.
      this.advanced();
    }
  }

  done(positions: number[]): void {
    let max: number | undefined;
    for (const p of positions) {
      this.inFlight.delete(p);
      if (p > this.maxDone) this.maxDone = p;
      if (max === undefined || p > max) max = p;
    }
    this.advanced();
    // After the callbacks above (notifications are published before the others can read past them).
    this.shared?.changed(max);
  }

  /**
   * This worker's floor: no position it has in flight or is allocating is at or below it
   * (undefined: it has nothing in flight).
   */
  floor(): number | undefined {
    let f: number | undefined;
    for (const h of this.holds) if (f === undefined || h < f) f = h;
    for (const p of this.inFlight) if (f === undefined || p - 1 < f) f = p - 1;
    return f;
  }

  /** The shared readable position moved (told by SharedStream; never backwards). */
  sharedAdvanced(pos: number): boolean {
    if (pos <= this.readable) return false;
    this.readable = pos;
    this.advanced();
    return true;
  }

  private lowestInFlight(): number {
    let lowest = Infinity;
    for (const p of this.inFlight) if (p < lowest) lowest = p;
    return lowest;
  }

  /** Runs what waited for positions that are now readable. Every change of current() ends here. */
  private advanced(): void {
    const now = this.current();
    if (this.waiting.length) {
      const ready = this.shared ? this.lowestInFlight() - 1 : now;
      const due = this.waiting.filter((w) => w.pos <= ready);
      if (due.length) {
        this.waiting = this.waiting.filter((w) => w.pos > ready);
        for (const w of due) w.fn();
      }
    }
    if (this.readableWaiting.length) {
      const due = this.readableWaiting.filter((w) => w.pos <= now);
      if (due.length) {
        this.readableWaiting = this.readableWaiting.filter((w) => w.pos > now);
        for (const w of due) w.fn();
      }
    }
    if (now !== this.lastReported) {
      this.lastReported = now;
      for (const l of this.listeners) l(now);
    }
  }

  /**
   * Runs `fn` once everything up to `pos` is readable: a notification for a position that an
   * earlier, still uncommitted one hides would wake readers that cannot see it yet. With a
   * SharedStream: once this worker's own writes up to `pos` are done (the notifier delivers what
   * `fn` publishes when the position is readable; see the class comment). Call it in the same
   * tick as `done` (before any timer or I/O callback).
   */
  whenVisible(pos: number, fn: () => void): void {
    if (pos <= (this.shared ? this.lowestInFlight() - 1 : this.current())) fn();
    else this.waiting.push({ pos, fn });
  }

  /** Runs `fn` once every position up to `pos` is readable here (from every writer). */
  whenReadable(pos: number, fn: () => void): void {
    if (pos <= this.current()) fn();
    else this.readableWaiting.push({ pos, fn });
  }

  /** Every position at or below this one is persisted (or will never exist). */
  current(): number {
    const lowest = this.lowestInFlight();
    if (this.shared) return lowest === Infinity ? this.readable : Math.min(this.readable, lowest - 1);
    let now = lowest === Infinity ? this.maxDone : Math.min(this.maxDone, lowest - 1);
    for (const h of this.holds) if (h < now) now = h;
    return now;
  }

  /**
   * Resolves once everything this worker has written so far is readable here, hence (the
   * position travels to every worker at once) on the others: a write answered after it is read
   * by the next request on any worker. At once without a SharedStream; at most `maxMs`.
   */
  settled(maxMs = 2_000): Promise<void> {
    return this.shared ? this.untilReadable(this.maxDone, maxMs) : Promise.resolve();
  }

  /** Resolves once `pos` is readable here, or after `maxMs` (then it stops waiting: nothing is left behind). */
  untilReadable(pos: number, maxMs: number): Promise<void> {
    if (pos <= this.current()) return Promise.resolve();
    return new Promise((resolve) => {
      const w = { pos, fn: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => {
        const i = this.readableWaiting.indexOf(w);
        if (i >= 0) this.readableWaiting.splice(i, 1);
        resolve();
      }, maxMs);
      this.readableWaiting.push(w);
    });
  }

  onAdvance(listener: (pos: number) => void): void {
    this.listeners.push(listener);
  }
}
