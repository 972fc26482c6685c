import type { Topic } from '../subscriptions/topic.ts';
import type { PusherSender } from './sender.ts';
import type { PusherService } from './service.ts';

/** A background job as the job runner (coordination/jobs.ts) takes it: runs on exactly one worker. */
export interface BackgroundJob {
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}

/**
 * The HTTP pusher sender as a background job: while it runs here it is woken by the feed's
 * `notified` topic (notifications staged on this worker) and by pushers set or removed on this
 * worker; everything else it finds by polling.
 */
export function pusherSenderJob(sender: PusherSender, pushers: PusherService, notified: Topic<{ userIds: string[]; streamPos: number }>): BackgroundJob {
  let off: Array<() => void> = [];
  return {
    async start() {
      off = [
        notified.subscribe(({ userIds }) => sender.wake(userIds)),
        pushers.changed.subscribe((ids) => { void sender.pusherChanged(ids).catch(() => { /* the next poll reloads */ }); }),
      ];
      await sender.start();
    },
    async stop() {
      for (const o of off.splice(0)) o();
      await sender.stop();
    },
  };
}
