import type { Logger } from 'pino';
import type { Db } from '../storage/db.ts';
import type { StreamTracker } from '../storage/stream.ts';
import type { BackgroundJob } from '../coordination/jobs.ts';
import type { PDU } from '../protocol/auth.ts';
import { OutboxStore, type OutboxRow } from './outbox-store.ts';

/** How often a consumer drops the EDUs every consumer has handed off. */
const PRUNE_EVERY_MS = 60_000;

/** A consumer that handed nothing off saves its position at most this often. */
const IDLE_SAVE_MS = 1_000;
/** A consumer reads the outbox at most this often (a read per write batch would cost a send a statement). */
const MIN_READ_INTERVAL_MS = 10;

/** What a consumer is handed, in stream order. */
export type OutboxItem =
  | { kind: 'pdu'; pos: number; roomId: string; eventId: string; pdu: PDU }
  | { kind: 'edu'; pos: number; destination: string | null; type: string; content: Record<string, unknown> };

export interface OutboxConsumerOptions {
  /** Items handed at once at most. */
  batch?: number;
  /** How often to look again when no advance of the stream was heard (other workers' writes). */
  pollMs?: number;
}

/**
 * A durable, position-based outbox: the events persisted with their state (local and remote,
 * backfill excluded: its positions are negative) and the EDUs other capabilities append, both at
 * positions of the one event stream. A consumer (the federation sender) reads from its own saved
 * position up to the persisted-up-to position, is handed a batch, and only then is its position
 * saved: a crash anywhere between a commit and the hand-off loses nothing (the batch is read
 * again), a crash after the hand-off and before the save hands it again (consumers deduplicate by
 * event id / position, as transactions to a destination do). Run as a background job: one
 * elected reader when there are several workers.
 */
export class Outbox {
  private store: OutboxStore;
  private wakers = new Set<() => void>();

  constructor(db: Db, private tracker: StreamTracker, private log: Logger) {
    this.store = new OutboxStore(db);
    tracker.onAdvance(() => {
      for (const w of this.wakers) w();
    });
  }

  /** Queues EDUs (destination null: every server the consumer decides). Durable once this resolves. */
  async appendEdus(edus: Array<{ destination: string | null; type: string; content: Record<string, unknown> }>): Promise<void> {
    if (!edus.length) return;
    let positions: number[] = [];
    try {
      positions = await this.tracker.reserve(() => this.store.nextPositions(edus.length));
      await this.store.insertEdus(positions, edus.map((e) => ({ destination: e.destination, type: e.type, content: JSON.stringify(e.content) })));
    } finally {
      this.tracker.done(positions);
    }
  }

  /** The saved position of a consumer (undefined before its first run). */
  position(consumer: string): Promise<number | undefined> {
    return this.store.position(consumer);
  }

  /**
   * A consumer as a background job. Its first run starts at the stream's current position (a new
   * sender does not replay history); afterwards, from its saved position.
   */
  consumer(name: string, handle: (items: OutboxItem[]) => Promise<unknown>, opts: OutboxConsumerOptions = {}): BackgroundJob {
    const batch = opts.batch ?? 100;
    const pollMs = opts.pollMs ?? 1_000;
    let running = false;
    let pruned = Date.now();
    let loop: Promise<void> | undefined;
    let wake: (() => void) | undefined;
    const waker = () => wake?.();
    let saved = 0;
    let savedAt = 0;
    /**
     * Saves the position. `handedOff` false (the consumer handed nothing anywhere, e.g. no room had
     * another server): at most every IDLE_SAVE_MS, since handing those items again after a crash
     * does nothing either. A save a send would otherwise pay on every write batch.
     */
    const save = async (pos: number, handedOff: boolean) => {
      if (!handedOff && Date.now() - savedAt < IDLE_SAVE_MS) return;
      await this.store.savePosition(name, pos);
      saved = pos;
      savedAt = Date.now();
    };
    let lastRead = 0;
    const run = async () => {
      let pos = await this.store.position(name);
      if (pos === undefined) {
        pos = this.tracker.current();
        await save(pos, true);
      }
      saved = pos;
      while (running) {
        // Reads at most every MIN_READ_INTERVAL_MS: under load one read covers many write batches.
        const since = Date.now() - lastRead;
        if (since < MIN_READ_INTERVAL_MS) await new Promise((r) => setTimeout(r, MIN_READ_INTERVAL_MS - since));
        lastRead = Date.now();
        const upto = this.tracker.current();
        let rows: OutboxRow[] = [];
        if (upto > pos) {
          try {
            rows = await this.store.between(pos, upto, batch);
          } catch (err) {
            this.log.warn({ err, consumer: name }, 'outbox: reading failed; trying again');
          }
        }
        if (rows.length) {
          let handedOff: unknown;
          try {
            handedOff = await handle(rows.map(itemOf));
          } catch (err) {
            // Not handed off: the same items again after a pause.
            this.log.warn({ err, consumer: name }, 'outbox consumer failed; handing the batch again');
            await new Promise((r) => setTimeout(r, pollMs));
            continue;
          }
          pos = rows.length < batch ? upto : rows[rows.length - 1]!.stream_pos;
          await save(pos, handedOff !== false);
          if (Date.now() - pruned > PRUNE_EVERY_MS) {
            pruned = Date.now();
            await this.store.pruneEdus().catch((err) => this.log.warn({ err }, 'outbox: pruning EDUs failed'));
          }
          continue;
        }
        if (upto > pos) {
          pos = upto;
          await save(pos, false);
        }
        if (!running) break;
        await new Promise<void>((r) => {
          const t = setTimeout(r, pollMs);
          wake = () => { clearTimeout(t); wake = undefined; r(); };
        });
      }
      if (pos > saved) await this.store.savePosition(name, pos);
    };
    return {
      start: () => {
        running = true;
        this.wakers.add(waker);
        loop = run().catch((err) => this.log.error({ err, consumer: name }, 'outbox consumer stopped'));
      },
      stop: async () => {
        running = false;
        this.wakers.delete(waker);
        wake?.();
        await loop;
      },
    };
  }

  /** Drops EDUs every consumer has passed (consumers do it about once a minute). */
  prune(): Promise<void> {
    return this.store.pruneEdus();
  }
}

function itemOf(r: OutboxRow): OutboxItem {
  if (r.kind === 'pdu') {
    const pdu = JSON.parse(r.json) as PDU;
    pdu.event_id = r.event_id!;
    return { kind: 'pdu', pos: r.stream_pos, roomId: r.room_id!, eventId: r.event_id!, pdu };
  }
  return { kind: 'edu', pos: r.stream_pos, destination: r.destination, type: r.edu_type!, content: JSON.parse(r.json) };
}
