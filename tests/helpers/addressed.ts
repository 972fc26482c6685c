// HTTP requests from a chosen loopback address (Linux routes all of 127.0.0.0/8 to lo), so one
// test process can be many clients to the server's per-address limits.
import http from 'node:http';

export interface AddressedResponse { status: number; body: any; headers: http.IncomingHttpHeaders }

/** Keep-alive agents, one per source address. */
const agents = new Map<string, http.Agent>();
export function agentFor(localAddress: string): http.Agent {
  let a = agents.get(localAddress);
  if (!a) {
    a = new http.Agent({ keepAlive: true, localAddress, maxSockets: 64 });
    agents.set(localAddress, a);
  }
  return a;
}

/** Closes every agent's idle sockets (call in after()). */
export function closeAgents(): void {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

export function request(
  base: string, method: string, path: string,
  opts: { from?: string; agent?: http.Agent; token?: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<AddressedResponse> {
  const url = new URL(path, base);
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method,
      agent: opts.agent ?? agentFor(opts.from ?? '127.0.0.1'),
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        ...opts.headers,
      },
      timeout: opts.timeoutMs ?? 30_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try { body = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Registers a user from `from` (m.login.dummy), returning its credentials; throws on any refusal. */
export async function registerFrom(base: string, from: string, localpart: string, password = 'correct horse battery staple'): Promise<{ userId: string; accessToken: string; password: string }> {
  const req = { username: localpart, password };
  let r = await request(base, 'POST', '/_matrix/client/v3/register', { from, body: req });
  if (r.status === 401) r = await request(base, 'POST', '/_matrix/client/v3/register', { from, body: { ...req, auth: { type: 'm.login.dummy', session: r.body.session } } });
  if (r.status !== 200) throw new Error(`register ${localpart} from ${from}: ${r.status} ${JSON.stringify(r.body)}`);
  return { userId: r.body.user_id, accessToken: r.body.access_token, password };
}
