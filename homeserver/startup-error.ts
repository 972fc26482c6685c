/**
 * A start-up failure the operator can act on: main() prints its message as one line (no stack) and
 * exits non-zero, after stopping whatever it had started.
 */
export class StartupError extends Error {
  constructor(message: string) {
    // One line, whatever the cause's text held.
    super(message.replace(/\s*\n\s*/g, ' ').trim());
    this.name = 'StartupError';
  }
}
