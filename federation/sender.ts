// Outbound transactions: a queue per destination (durable: federation_outbound_queue), sent as
// PUT /send/{txnId} of up to 50 PDUs and 100 EDUs; a destination that fails is retried with
// exponential back-off (the schedule is durable too: federation_destinations) and caught up as
// soon as it is heard from again. Queuing never waits for sending: a local send is never blocked.
// Sending runs on the one worker holding the background jobs' lock; the others only queue.
import type { Logger } from 'pino';
import type { BackgroundJob } from '../homeserver/coordination/jobs.ts';
import { FederationRequestError, type FederationClient } from './client.ts';
import type { OutboundQueueStore } from './queue-store.ts';
import type { Db } from '../homeserver/storage/db.ts';

export const MAX_PDUS_PER_TXN = 50;
export const MAX_EDUS_PER_TXN = 100;

export interface RetryPolicy { retryMinMs: number; retryMaxMs: number }

/** The wait after `failures` failed attempts: doubling from the minimum, capped, ±20 % jitter. */
export function backoffMs(failures: number, policy: RetryPolicy, random = Math.random): number {
  const base = Math.min(policy.retryMinMs * 2 ** Math.min(Math.max(failures - 1, 0), 30), policy.retryMaxMs);
  return Math.round(base * (0.8 + 0.4 * random()));
}

export class FederationSender implements BackgroundJob {
  private running = false;
  private active = new Map<string, Promise<void>>();
  private again = new Set<string>();
  private timers = new Map<string, NodeJS.Timeout>();
  /** Another worker's queue changes reach the sender through this (composition root: the bus). */
  kickElsewhere: (destination: string) => void = () => {};

  constructor(
    private store: OutboundQueueStore,
    private client: FederationClient,
    private serverName: string,
    private policy: RetryPolicy,
    private log: Logger,
  ) {}

  /** EDUs for destinations (typing, receipts, presence, device lists, to-device): queued, then sent off the caller's path. */
  async queueEdus(items: Array<{ destination: string; edu: { edu_type: string; content: Record<string, unknown> } }>): Promise<void> {
    const allowed = items.filter((i) => this.client.allows(i.destination));
    await this.store.enqueue(allowed.map((i) => ({ destination: i.destination, kind: 'edu', body: i.edu })));
    for (const d of new Set(allowed.map((i) => i.destination))) this.kick(d);
  }

  /**
   * EDUs queued inside the caller's transaction (durable with the change that caused them); the
   * caller kicks the destinations once it committed. Returns the destinations queued for.
   */
  async queueEdusIn(trx: Db, items: Array<{ destination: string; edu: { edu_type: string; content: Record<string, unknown> } }>): Promise<string[]> {
    const allowed = items.filter((i) => this.client.allows(i.destination));
    await this.store.enqueue(allowed.map((i) => ({ destination: i.destination, kind: 'edu', body: i.edu })), trx);
    return [...new Set(allowed.map((i) => i.destination))];
  }

  /**
   * The hook for the room engine's outbox (the DAG integration calls it): persisted events of a
   * room, as signed PDUs, for the servers in the room other than ours.
   */
  async queueRoomEventsForDestinations(pdus: Array<Record<string, unknown>>, destinations: string[]): Promise<void> {
    const allowed = destinations.filter((d) => this.client.allows(d));
    await this.store.enqueue(allowed.flatMap((destination) => pdus.map((body) => ({ destination, kind: 'pdu' as const, body }))));
    for (const d of allowed) this.kick(d);
  }

  /** A destination was heard from (a signed request): it is up, so what waits for it goes now. */
  async destinationUp(destination: string): Promise<void> {
    if (await this.store.up(destination)) {
      this.log.info({ destination }, 'destination is back: catching up');
      this.kick(destination);
    }
  }

  /** Something was queued for `destination`: send it (here if this worker sends, else on the one that does). */
  kick(destination: string): void {
    if (!this.running) { this.kickElsewhere(destination); return; }
    const t = this.timers.get(destination);
    if (t) { clearTimeout(t); this.timers.delete(destination); }
    if (this.active.has(destination)) { this.again.add(destination); return; }
    const run = this.drain(destination)
      .catch((err) => this.log.error({ err, destination }, 'federation sender failed'))
      .finally(() => {
        this.active.delete(destination);
        if (this.again.delete(destination) && this.running) this.kick(destination);
      });
    this.active.set(destination, run);
  }

  /** A kick heard from another worker: acted on only where the sender runs (never forwarded again). */
  kickHere(destination: string): void {
    if (this.running) this.kick(destination);
  }

  async start(): Promise<void> {
    this.running = true;
    // Catch-up after a restart or a take-over: every destination with something queued.
    for (const d of await this.store.pending()) this.kick(d.destination);
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    // A transaction in flight finishes (or fails once the client's sockets close) on its own; a
    // shutdown waits a little for it, not for a slow peer's full timeout.
    await Promise.race([Promise.allSettled([...this.active.values()]), new Promise((r) => setTimeout(r, 2_000).unref())]);
  }

  private schedule(destination: string, at: number): void {
    if (!this.running) return;
    const old = this.timers.get(destination);
    if (old) clearTimeout(old);
    const t = setTimeout(() => { this.timers.delete(destination); this.kick(destination); }, Math.max(0, at - Date.now()));
    t.unref();
    this.timers.set(destination, t);
  }

  /** Sends what waits for one destination, a transaction at a time, until nothing is left or it fails. */
  private async drain(destination: string): Promise<void> {
    for (;;) {
      if (!this.running) return;
      const state = await this.store.state(destination);
      if (state.retryAt > Date.now()) { this.schedule(destination, state.retryAt); return; }
      // Coming back from a failure: what is no longer worth sending goes first.
      if (state.failures > 0) {
        const dropped = await this.store.dropStale(destination, Date.now());
        if (dropped) this.log.info({ destination, dropped }, 'stale typing / presence / receipt EDUs dropped');
      }
      const items = await this.store.next(destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
      if (!items.length) return;
      // The same batch keeps the same id across retries, so the receiver applies it once.
      const txnId = `${items[0]!.id}-${items.at(-1)!.id}`;
      const body = {
        origin: this.serverName,
        origin_server_ts: Date.now(),
        pdus: items.filter((i) => i.kind === 'pdu').map((i) => i.body),
        edus: items.filter((i) => i.kind === 'edu').map((i) => i.body),
      };
      try {
        await this.client.request(destination, 'PUT', `/_matrix/federation/v1/send/${encodeURIComponent(txnId)}`, body);
        await this.store.sent(destination, items.map((i) => i.id));
      } catch (err) {
        const status = err instanceof FederationRequestError ? err.status : undefined;
        if (status !== undefined && status >= 400 && status < 500 && status !== 429 && status !== 401 && status !== 408) {
          // Refused for good (a bad transaction): retrying it would block the queue forever.
          this.log.warn({ destination, txnId, status, err: (err as Error).message }, 'transaction refused by the destination: dropped');
          await this.store.sent(destination, items.map((i) => i.id));
          continue;
        }
        const failures = state.failures + 1;
        const retryAt = Date.now() + backoffMs(failures, this.policy);
        await this.store.failed(destination, failures, retryAt, (err as Error).message);
        this.log.info({ destination, failures, retryInMs: retryAt - Date.now(), err: (err as Error).message }, 'transaction not delivered: backing off');
        this.schedule(destination, retryAt);
        return;
      }
    }
  }
}
