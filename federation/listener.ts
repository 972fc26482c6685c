// FEDERATION_PORT: the server terminates TLS itself (as Synapse can) and serves the federation,
// key and server-discovery paths there; everything else is for clients, on PORT (or Caddy).
import fs from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StartupError } from '../homeserver/startup-error.ts';

const FEDERATION_PATHS = ['/_matrix/federation/', '/_matrix/key/', '/.well-known/matrix/server'];

export function isFederationPath(url: string | undefined): boolean {
  const path = (url ?? '').split('?')[0]!;
  return FEDERATION_PATHS.some((p) => path.startsWith(p) || path === p.replace(/\/$/, ''));
}

export async function listenForFederation(
  opts: { port: number; bindAddress: string; cert: string; key: string; serverOptions?: Record<string, unknown>; configure?: (server: https.Server) => void },
  handle: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<https.Server> {
  let cert: Buffer;
  let key: Buffer;
  try { cert = fs.readFileSync(opts.cert); } catch (err) {
    throw new StartupError(`TLS_CERT ${opts.cert} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): it must name a PEM certificate (chain)`);
  }
  try { key = fs.readFileSync(opts.key); } catch (err) {
    throw new StartupError(`TLS_KEY ${opts.key} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): it must name the PEM private key of TLS_CERT`);
  }
  let server: https.Server;
  try {
    server = https.createServer({ ...opts.serverOptions, cert, key }, (req, res) => {
      if (isFederationPath(req.url)) { handle(req, res); return; }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }));
    });
  } catch (err) {
    throw new StartupError(`TLS_CERT / TLS_KEY are not a usable certificate and key: ${(err as Error).message}`);
  }
  // The same timeouts and connection caps as PORT (slow or hoarding peers).
  opts.configure?.(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new StartupError(err.code === 'EADDRINUSE'
        ? `FEDERATION_PORT ${opts.port} is already in use on ${opts.bindAddress}: set FEDERATION_PORT to a free port`
        : `cannot listen on FEDERATION_PORT ${opts.port}: ${err.message}`));
    });
    server.listen(opts.port, opts.bindAddress, () => resolve());
  });
  return server;
}
