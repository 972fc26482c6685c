// GET /preview_url's fetcher: never connects to an address the IP policy refuses, on any hop. Each
// host name is resolved once, every address checked, and the connection pinned to the checked
// address (the `lookup` hook), so a DNS answer that changes between check and connect (rebinding)
// cannot reach a private address.
import dns from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { MatrixError } from '../http/errors.ts';
import type { IpRangePolicy } from './ip-ranges.ts';
import type { SpooledFile, UploadSpool } from './spool.ts';

/** Synapse's max_spider_size: the page is read up to this many bytes (the head is what matters). */
export const MAX_PREVIEW_BYTES = 10 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const FETCH_TIMEOUT_MS = 10_000;
const MAX_DESCRIPTION = 500;
const MAX_VALUE = 1000;

export type OpenGraph = Record<string, string | number>;

const refused = (why: string) => new MatrixError(403, 'M_FORBIDDEN', `URL preview refused: ${why}`);
const failed = (why: string) => new MatrixError(502, 'M_UNKNOWN', `URL preview failed: ${why}`);

const HTML = /^(text\/html|application\/xhtml\+xml)\b/i;
/** Images a preview may carry (what the thumbnailer reads). */
const PREVIEW_IMAGE = /^image\/(png|jpeg|gif|webp)\b/i;

/** An image fetched for a preview, in a temp file of the spool, for the service to store. */
export interface PreviewImage { file: SpooledFile; contentType: string }

export interface Preview { og: OpenGraph; image?: PreviewImage }

export class UrlPreviewer {
  constructor(private readonly policy: IpRangePolicy, private readonly spool: UploadSpool, private readonly maxImageBytes: number) {}

  /**
   * The page's Open Graph tags; when the page names an image (og:image) or the URL is an image
   * itself, that image is fetched too, under the same rules, for the service to store as media.
   */
  async preview(url: string): Promise<Preview> {
    const signal = AbortSignal.timeout(FETCH_TIMEOUT_MS);
    const { res, url: final } = await this.get(parseHttpUrl(url), signal);
    const contentType = String(res.headers['content-type'] ?? '');
    if (PREVIEW_IMAGE.test(contentType)) {
      const image = await this.receiveImage(res, contentType).catch(() => undefined);
      return { og: {}, image };
    }
    if (!HTML.test(contentType)) { res.destroy(); return { og: {} }; }
    const { og, imageUrl } = parseOpenGraph((await readCapped(res, MAX_PREVIEW_BYTES)).toString('utf8'), final);
    if (!imageUrl) return { og };
    // The page is worth showing without its image: a refused or failed image is left out.
    try {
      const image = await this.get(parseHttpUrl(imageUrl), signal);
      const type = String(image.res.headers['content-type'] ?? '');
      if (!PREVIEW_IMAGE.test(type)) { image.res.destroy(); return { og }; }
      return { og, image: await this.receiveImage(image.res, type) };
    } catch {
      return { og };
    }
  }

  private async receiveImage(res: http.IncomingMessage, contentType: string): Promise<PreviewImage> {
    const file = await this.spool.receive(res, { maxBytes: this.maxImageBytes }).finally(() => res.destroy());
    return { file, contentType: contentType.split(';')[0]!.trim().toLowerCase() };
  }

  /** GET, following redirects (each hop checked); the 200 response, its body unread. */
  private async get(start: URL, signal: AbortSignal): Promise<{ res: http.IncomingMessage; url: URL }> {
    let current = start;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const res = await this.fetchOnce(current, signal);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (status >= 300 && status < 400 && location) {
        res.destroy();
        current = parseHttpUrl(new URL(location, current).toString());
        continue;
      }
      if (status !== 200) { res.destroy(); throw failed(`the server answered ${status}`); }
      return { res, url: current };
    }
    throw failed('too many redirects');
  }

  private async fetchOnce(url: URL, signal: AbortSignal): Promise<http.IncomingMessage> {
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    let addresses: Array<{ address: string; family: number }>;
    if (net.isIP(host)) addresses = [{ address: host, family: net.isIP(host) }];
    else {
      try { addresses = await dns.lookup(host, { all: true }); } catch { throw failed(`${host} does not resolve`); }
    }
    // As Synapse's blocking resolver: one refused address refuses the host.
    if (!addresses.length || addresses.some((a) => !this.policy.permits(a.address))) throw refused(`${host} resolves to an address this server does not fetch from`);
    const pinned = addresses[0]!;
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = transport.request(url, {
        method: 'GET',
        signal,
        headers: { 'user-agent': 'super-server URL preview (Matrix homeserver)', accept: 'text/html, application/xhtml+xml;q=0.9, image/*;q=0.8, */*;q=0.1' },
        lookup: ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
          if (opts?.all) cb(null, [{ address: pinned.address, family: pinned.family }]);
          else cb(null, pinned.address, pinned.family);
        }) as never,
      }, resolve);
      req.once('error', (err) => reject(signal.aborted ? failed('timed out') : failed((err as Error).message)));
      req.end();
    });
  }
}

/** Up to `cap` bytes of the body; past the cap the head of the page is all that is needed. */
function readCapped(res: http.IncomingMessage, cap: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => { res.off('data', onData); resolve(Buffer.concat(chunks)); };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk.subarray(0, cap - size));
      size += chunk.length;
      if (size >= cap) { done(); res.destroy(); }
    };
    res.on('data', onData);
    res.once('end', done);
    res.once('error', done);
    res.once('close', done);
  });
}

function parseHttpUrl(text: string): URL {
  let url: URL;
  try { url = new URL(text); } catch { throw new MatrixError(400, 'M_INVALID_PARAM', 'url is not a valid URL'); }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new MatrixError(400, 'M_INVALID_PARAM', 'url must be http or https');
  if (url.username || url.password) throw new MatrixError(400, 'M_INVALID_PARAM', 'url must not carry credentials');
  return url;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]{1,6}|#\d{1,7}|[a-z]+);/gi, (whole, name: string) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? Number.parseInt(name.slice(2), 16) : Number(name.slice(1));
      return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

function attributes(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))/g)) {
    out[m[1]!.toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * The page's Open Graph tags (og:*), with the <title> and the description meta tag as fallbacks.
 * og:image* tags are not passed on (the spec wants an mxc:// URI there): the image's absolute URL
 * is returned for the previewer to fetch and the service to store.
 */
export function parseOpenGraph(html: string, base: URL): { og: OpenGraph; imageUrl?: string } {
  const head = html.slice(0, MAX_PREVIEW_BYTES);
  const og: OpenGraph = {};
  let imageUrl: string | undefined;
  for (const m of head.matchAll(/<meta\b[^>]*>/gi)) {
    const a = attributes(m[0]);
    const key = a.property ?? a.name;
    const content = a.content;
    if (!key || content === undefined || !/^og:[a-z0-9_:.-]+$/i.test(key)) continue;
    if (/^og:image/i.test(key)) {
      if ((key.toLowerCase() === 'og:image' || key.toLowerCase() === 'og:image:url') && imageUrl === undefined) {
        try { imageUrl = new URL(content.trim(), base).toString(); } catch { /* not a URL */ }
      }
      continue;
    }
    if (!(key in og)) og[key] = clip(content.trim(), key === 'og:description' ? MAX_DESCRIPTION : MAX_VALUE);
  }
  if (!('og:title' in og)) {
    const title = /<title\b[^>]*>([\s\S]*?)<\/title>/i.exec(head);
    if (title) og['og:title'] = clip(decodeEntities(title[1]!).trim().replace(/\s+/g, ' '), MAX_VALUE);
  }
  if (!('og:description' in og)) {
    for (const m of head.matchAll(/<meta\b[^>]*>/gi)) {
      const a = attributes(m[0]);
      if (a.name?.toLowerCase() === 'description' && a.content) { og['og:description'] = clip(a.content.trim(), MAX_DESCRIPTION); break; }
    }
  }
  return { og, ...(imageUrl ? { imageUrl } : {}) };
}
