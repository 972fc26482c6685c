import http from 'node:http';
import https from 'node:https';

/** What a POST to a push gateway came to. */
export type GatewayResult =
  | { ok: true; rejected: string[] }
  /** Worth trying again later: a network error, a timeout, 5xx, 429. */
  | { ok: false; retry: true; reason: string }
  /** The gateway refuses this notification for good (4xx other than 429, a redirect): skip it. */
  | { ok: false; retry: false; reason: string };

export interface GatewayOptions {
  /** The whole exchange (connect, send, answer) must end within this. */
  timeoutMs: number;
  /** Answers longer than this are cut off and count as failed (a gateway has no reason to send much). */
  maxResponseBytes: number;
  signal?: AbortSignal;
}

// Gateways are few and called often: keep their connections open.
const agents = { http: new http.Agent({ keepAlive: true, maxSockets: 16 }), https: new https.Agent({ keepAlive: true, maxSockets: 16 }) };

/**
 * POSTs a JSON body to a push gateway. Any http(s) URL is allowed (operators deploy gateways
 * anywhere, loopback included), so the care is in the bounds: one deadline for the whole exchange,
 * a cap on the answer, no redirects followed.
 */
export function postToGateway(url: string, body: unknown, opts: GatewayOptions): Promise<GatewayResult> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return Promise.resolve({ ok: false, retry: false, reason: 'unparseable URL' });
  }
  const lib = target.protocol === 'https:' ? https : target.protocol === 'http:' ? http : undefined;
  if (!lib) return Promise.resolve({ ok: false, retry: false, reason: `unsupported scheme ${target.protocol}` });
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: GatewayResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve(r);
    };
    const req = lib.request(target, {
      method: 'POST',
      agent: target.protocol === 'https:' ? agents.https : agents.http,
      headers: { 'content-type': 'application/json', 'content-length': payload.length, 'user-agent': 'super-server' },
    }, (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > opts.maxResponseBytes) {
          req.destroy();
          // The status already says how it went; only a 2xx's rejected keys are lost (none removed).
          finish(classify(status, Buffer.alloc(0)));
          return;
        }
        chunks.push(c);
      });
      res.on('error', (err) => finish({ ok: false, retry: true, reason: `answer failed: ${err.message}` }));
      res.on('end', () => finish(classify(status, Buffer.concat(chunks))));
    });
    const timer = setTimeout(() => {
      req.destroy();
      finish({ ok: false, retry: true, reason: `no answer within ${opts.timeoutMs} ms` });
    }, opts.timeoutMs);
    const onAbort = () => {
      req.destroy();
      finish({ ok: false, retry: true, reason: 'stopped' });
    };
    if (opts.signal?.aborted) { onAbort(); return; }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => finish({ ok: false, retry: true, reason: err.message }));
    req.end(payload);
  });
}

/** 2xx: sent; 5xx and 429: try again later; anything else (4xx, a redirect): refused for good. */
function classify(status: number, answer: Buffer): GatewayResult {
  if (status >= 200 && status < 300) return { ok: true, rejected: rejectedKeys(answer) };
  if (status >= 500 || status === 429) return { ok: false, retry: true, reason: `HTTP ${status}` };
  return { ok: false, retry: false, reason: `HTTP ${status}` };
}

/** The `rejected` pushkeys of a 2xx answer; an answer that is not the spec's shape rejects none. */
function rejectedKeys(raw: Buffer): string[] {
  try {
    const parsed = JSON.parse(raw.toString('utf8')) as { rejected?: unknown };
    return Array.isArray(parsed?.rejected) ? parsed.rejected.filter((k): k is string => typeof k === 'string') : [];
  } catch {
    return [];
  }
}
