/**
 * A side effect between capabilities as an explicit subscription: a service publishes what
 * happened ("account registered", "events persisted"), and the composition root subscribes the
 * capabilities that react to it. The publisher imports none of them, and nothing reassigns a
 * callback another module installed.
 */
export class Topic<T> {
  private handlers: Array<(value: T) => unknown> = [];

  constructor(readonly name: string) {}

  /** Adds a handler; returns a function that removes it. */
  subscribe(handler: (value: T) => unknown): () => void {
    this.handlers.push(handler);
    return () => {
      this.handlers = this.handlers.filter((h) => h !== handler);
    };
  }

  /**
   * Runs every handler in subscription order, awaiting each: what a handler does (an account's
   * push rules, its auto-joined rooms) is done when publish resolves. The first failure rejects.
   */
  async publish(value: T): Promise<void> {
    for (const handler of this.handlers) await handler(value);
  }

  /** For hot paths whose handlers are synchronous (cache invalidation): no promise per call. */
  publishSync(value: T): void {
    for (const handler of this.handlers) handler(value);
  }
}
