import { availableParallelism } from 'node:os';
import { MatrixError } from '../http/errors.ts';

/**
 * Password hashing is the costliest thing an unauthenticated client can ask for (argon2id, 19 MiB
 * and tens of milliseconds of CPU each). Unbounded, a login flood runs one hash on every libuv
 * thread and starves the event loop that serves everyone else; through this gate at most
 * `concurrency` hashes run at once (one core stays for the rest), and at most `maxWaiting` wait —
 * past that a request is refused with 429 at once rather than queued without bound.
 */
export class HashGate {
  private running = 0;
  private waiting: Array<() => void> = [];

  constructor(private concurrency = Math.max(1, availableParallelism() - 1), private maxWaiting = 256) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many password checks in progress; try again shortly', { retry_after_ms: 1_000 }, { 'Retry-After': '1' });
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else this.running++;
    try {
      return await work();
    } finally {
      // The slot passes straight to the next waiter (running stays counted), or is given back.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
