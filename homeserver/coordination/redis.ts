import { createClient } from 'redis';
import type { Logger } from 'pino';
import { StartupError } from '../startup-error.ts';

function newClient(url: string, reconnectDelay: (retries: number, cause: Error) => number | Error) {
  return createClient({
    url,
    // While Redis is away, commands fail at once instead of queueing without bound.
    disableOfflineQueue: true,
    socket: { connectTimeout: 2_000, reconnectStrategy: reconnectDelay },
  });
}

export type Redis = ReturnType<typeof newClient>;

/** A URL with its password masked, for messages. */
function redact(url: string): string {
  try { const u = new URL(url); if (u.password) u.password = '***'; return u.toString(); } catch { return '(unparseable URL)'; }
}

/**
 * Connects to REDIS_URL. Unreachable at start: a StartupError naming it, after `graceMs` for a
 * Redis that is still starting. Later outages: the client reconnects by itself with back-off (at
 * most 2 s apart), for as long as it takes.
 */
export async function connectRedis(url: string, log: Logger, graceMs = 3_000): Promise<Redis> {
  const deadline = Date.now() + graceMs;
  let connected = false;
  const client = newClient(url, (retries, cause) => {
    if (!connected && Date.now() > deadline) return cause;
    return connected ? Math.min(50 * 2 ** retries, 2_000) : 250;
  });
  let warned = false;
  client.on('error', (err: Error) => {
    // The client reports each failed reconnect; one line per outage is enough.
    if (connected && !warned) log.warn({ err: err.message }, 'redis connection lost; reconnecting');
    if (connected) warned = true;
  });
  client.on('ready', () => {
    if (warned) log.info('redis connection restored');
    warned = false;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    client.destroy();
    throw new StartupError(`REDIS_URL ${redact(url)} is unreachable: ${((err as Error).message || String(err)).split('\n')[0]}`);
  }
  connected = true;
  return client;
}
