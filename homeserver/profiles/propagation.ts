import type { Logger } from 'pino';
import { MatrixError } from '../http/errors.ts';
import type { RoomService } from '../rooms/service.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { ProfileStore } from './store.ts';

/** Member events sent at once: enough to fill the engine's write lanes, few enough to leave room for others. */
const CHUNK = 64;
/** How long a claim lasts without being extended (each chunk extends it). */
const LEASE_MS = 30_000;
/** When a propagation failed for a reason of the server's (not a room's refusal), try again this much later. */
const RETRY_MS = 5_000;
/** Looks for queued work this often even when nothing kicks it (retries, claims that expired). */
const POLL_MS = 10_000;

/**
 * Sends a user's new display name and avatar to every room they are joined to, off the request
 * path. The queue is the profile_propagations table (written with the profile itself), so a
 * change survives a crash; this loop drains it and resumes what is left at start. Sending is
 * idempotent: a room whose member event already shows the profile is skipped, so a round cut
 * short by a crash sends only what is missing.
 */
export class ProfilePropagator {
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private store: ProfileStore, private rooms: RoomService, private reader: RoomReader, private log: Logger) {}

  /** A BackgroundJob (coordination/jobs.ts): runs on the one worker that holds the jobs' lock, and may start again after a stop. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.store.releaseAllPropagations();
    this.timer = setInterval(() => this.kick(), POLL_MS);
    this.timer.unref();
    this.kick();
  }

  /** Stops after the chunk in flight; what is left stays queued for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** Something was queued: drain the queue (once at a time in this process). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((err) => this.log.error({ err }, 'profile propagation failed'))
      .finally(() => {
        this.running = undefined;
      });
  }

  private async drain(): Promise<void> {
    do {
      this.again = false;
      while (!this.stopped) {
        const job = await this.store.claimPropagation(LEASE_MS);
        if (!job) break;
        try {
          const complete = await this.propagate(job.user_id);
          if (complete) await this.store.finishPropagation(job.user_id, job.generation);
          else if (!this.stopped) await this.store.releasePropagation(job.user_id, Date.now() + RETRY_MS);
        } catch (err) {
          this.log.warn({ err, userId: job.user_id }, 'profile propagation will be retried');
          await this.store.releasePropagation(job.user_id, Date.now() + RETRY_MS).catch(() => {});
        }
      }
    } while (this.again && !this.stopped);
  }

  /** Sends the member events still missing; false when some could not be sent yet. */
  private async propagate(userId: string): Promise<boolean> {
    const profile = (await this.store.get(userId)) ?? {};
    const pending: Array<{ roomId: string; content: Record<string, unknown> }> = [];
    for (const row of await this.reader.joinedMemberEvents(userId)) {
      const current = (JSON.parse(row.json).content ?? {}) as Record<string, unknown>;
      const content: Record<string, unknown> = { ...current, membership: 'join' };
      delete content.displayname;
      delete content.avatar_url;
      if (profile.displayname) content.displayname = profile.displayname;
      if (profile.avatar_url) content.avatar_url = profile.avatar_url;
      if (current.displayname === content.displayname && current.avatar_url === content.avatar_url) continue;
      pending.push({ roomId: row.room_id, content });
    }
    let complete = true;
    for (let i = 0; i < pending.length && !this.stopped; i += CHUNK) {
      const results = await Promise.allSettled(pending.slice(i, i + CHUNK).map(({ roomId, content }) =>
        this.rooms.engine.send(roomId, { type: 'm.room.member', sender: userId, content, stateKey: userId })));
      results.forEach((r, k) => {
        if (r.status === 'fulfilled') return;
        const roomId = pending[i + k]!.roomId;
        // A room that refuses the event (the user was banned meanwhile, power levels) keeps its old one.
        if (r.reason instanceof MatrixError && r.reason.status < 500) this.log.info({ err: r.reason, roomId, userId }, 'room refused the profile change');
        else {
          complete = false;
          this.log.warn({ err: r.reason, roomId, userId }, 'could not send the profile change');
        }
      });
      await this.store.extendPropagation(userId, LEASE_MS);
    }
    return complete && !this.stopped;
  }
}
