// Every federation request received is authenticated before anything is done: an X-Matrix
// header for this server, signed over the method, target and body by a key the origin publishes
// (and that is valid now). Anything else is 401 M_UNAUTHORIZED.
import type { Context } from 'koa';
import { MatrixError } from '../homeserver/http/errors.ts';
import { isValidServerName } from '../homeserver/protocol/identifiers.ts';
import { parseXMatrix, verifyRequest } from '../homeserver/protocol/x-matrix.ts';
import type { KeyRing } from './key-ring.ts';

const unauthorized = (msg: string) => new MatrixError(401, 'M_UNAUTHORIZED', msg);

export class RequestAuthenticator {
  constructor(
    private keyRing: KeyRing,
    private serverName: string,
    /** Whether the domain lists let this origin talk to us. */
    private allows: (origin: string) => boolean,
    /** A signed request came from `origin`: it is up (the sender may retry its queue at once). */
    private heardFrom: (origin: string) => void,
  ) {}

  /** The origin of an authentic request; throws 401 (403 for a server the domain lists exclude). */
  async authenticate(ctx: Context): Promise<string> {
    const header = ctx.get('authorization');
    if (!header) throw unauthorized('Missing Authorization header (X-Matrix)');
    const auth = parseXMatrix(header);
    if (!auth) throw unauthorized('Malformed X-Matrix Authorization header');
    if (!isValidServerName(auth.origin)) throw unauthorized('The origin is not a server name');
    if (auth.destination !== undefined && auth.destination !== this.serverName) {
      throw unauthorized(`The request is for ${auth.destination}, not this server (${this.serverName})`);
    }
    if (auth.origin === this.serverName) throw unauthorized('A request from this server itself');
    if (!this.allows(auth.origin)) throw new MatrixError(403, 'M_FORBIDDEN', 'Federation with this server is not allowed');
    const key = await this.keyRing.publicKey(auth.origin, auth.key);
    if (key === undefined) throw unauthorized(`Unknown key ${auth.key} of ${auth.origin}`);
    if (key === 'expired') throw unauthorized(`The key ${auth.key} of ${auth.origin} has expired`);
    const content = ctx.method === 'GET' || ctx.method === 'HEAD' ? undefined : ctx.state.body;
    const ok = verifyRequest(auth, { method: ctx.method, uri: ctx.originalUrl, destination: this.serverName, ...(content !== undefined ? { content } : {}) }, key);
    if (!ok) throw unauthorized('Invalid signature on the request');
    this.heardFrom(auth.origin);
    return auth.origin;
  }
}
