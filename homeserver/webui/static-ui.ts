// GET /admin/…   the admin dashboard (admin-ui/dist), SERVE_ADMIN_UI
// GET /…         the chat app (chat-ui/dist), SERVE_CHAT_UI
// Static files of the two Vite builds, with a single-page-app fallback: a browser navigating to a
// path that is no file (/admin/users/@a:b) gets the app's index.html. Never answers under the
// server's own prefixes (/_matrix, /_synapse, /_super, /.well-known, /health, /metrics) nor for a
// path the router knows, so no API answer is ever shadowed; a non-browser request for an unknown
// path still gets the API's 404 M_UNRECOGNIZED.
import fs from 'node:fs';
import path from 'node:path';
import type { Context, Middleware } from 'koa';

/** Paths that belong to the homeserver's APIs, whatever the UIs hold. */
export const RESERVED_PREFIXES = ['/_matrix', '/_synapse', '/_super', '/.well-known', '/health', '/metrics'];

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.avif': 'image/avif',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.otf': 'font/otf',
  '.wasm': 'application/wasm',
};

/** Vite's hashed output: the name changes with the content, so it may be cached for good. */
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** index.html (and unhashed files such as favicon.ico) are checked on every load, so a deploy shows at once. */
const REVALIDATE = 'no-cache';

/**
 * Under the homeserver without Caddy, the UI pages carry the same protections the Caddyfile adds:
 * no framing (clickjacking of the admin dashboard), no MIME sniffing, no referrer to other sites.
 */
const PAGE_HEADERS: Record<string, string> = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'strict-origin-when-cross-origin',
};

/** The Caddyfile's CSP: this origin only (its WebSocket too), WebAssembly for the chat app's crypto, no framing. */
function contentSecurityPolicy(host: string): string {
  const sockets = /^[A-Za-z0-9.:[\]-]+$/.test(host) ? ` ws://${host} wss://${host}` : '';
  return `default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self' data:; connect-src 'self'${sockets}; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'`;
}

export interface UiMount {
  /** The URL prefix, ending in '/': '/admin/' or '/'. */
  prefix: string;
  /** The built app (its index.html and assets/). */
  dir: string;
  /** For the message when the app has not been built. */
  name: string;
  /** Turned off (SERVE_ADMIN_UI=off…): its paths are the API's 404, not another app's pages. */
  off?: boolean;
}

function reserved(p: string): boolean {
  return RESERVED_PREFIXES.some((r) => p === r || p.startsWith(`${r}/`));
}

/** The file under `dir` a URL path names, or undefined if it leaves `dir` or names a hidden file. */
function fileFor(dir: string, rest: string): string | undefined {
  let decoded: string;
  try { decoded = decodeURIComponent(rest); } catch { return undefined; }
  if (decoded.includes('\0') || decoded.includes('\\')) return undefined;
  const parts = decoded.split('/').filter(Boolean);
  if (parts.some((s) => s.startsWith('.'))) return undefined; // '..', '.git', '.env'
  const file = path.join(dir, ...parts);
  return file.startsWith(dir + path.sep) || file === dir ? file : undefined;
}

function statFile(file: string): fs.Stats | undefined {
  try {
    const st = fs.statSync(file);
    return st.isFile() ? st : undefined;
  } catch { return undefined; }
}

/** A browser navigating (not a script asking for data or an asset). */
function wantsPage(ctx: Context): boolean {
  return (ctx.get('accept') || '').includes('text/html');
}

async function send(ctx: Context, file: string, st: fs.Stats, cacheControl: string): Promise<void> {
  const etag = `W/"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  // The UIs need no cross-origin access; the API's CORS headers do not apply to them.
  for (const h of ['Access-Control-Allow-Origin', 'Access-Control-Allow-Methods', 'Access-Control-Allow-Headers', 'Access-Control-Expose-Headers']) ctx.remove(h);
  ctx.set('Cache-Control', cacheControl);
  ctx.set('ETag', etag);
  ctx.set('Last-Modified', st.mtime.toUTCString());
  ctx.set('X-Content-Type-Options', 'nosniff');
  const ext = path.extname(file).toLowerCase();
  if (ext === '.html') {
    for (const [k, v] of Object.entries(PAGE_HEADERS)) ctx.set(k, v);
    ctx.set('Content-Security-Policy', contentSecurityPolicy(ctx.host));
  }
  ctx.type = CONTENT_TYPES[ext] ?? 'application/octet-stream';
  if (ctx.get('if-none-match') === etag) {
    ctx.status = 304;
    return;
  }
  ctx.status = 200;
  // Read whole (the apps' files are small, and the page cache keeps them): a browser that goes away
  // mid-download is then no stream error in the log. HEAD reads nothing; the length is the file's.
  ctx.body = ctx.method === 'HEAD' ? Buffer.alloc(0) : await fs.promises.readFile(file);
  if (ctx.method === 'HEAD') ctx.length = st.size;
}

/**
 * Serves each mounted app. `known(path)` is true for a path the API router serves (any method):
 * it is left to the router.
 */
export function staticUi(mounts: UiMount[], known: (p: string) => boolean): Middleware {
  // Longest prefix first: /admin/… is the admin app even though '/' would match it too.
  const ordered = [...mounts].map((m) => ({ ...m, dir: path.resolve(m.dir) })).sort((a, b) => b.prefix.length - a.prefix.length);
  return async (ctx, next) => {
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || reserved(ctx.path)) return next();
    const mount = ordered.find((m) => ctx.path.startsWith(m.prefix) || `${ctx.path}/` === m.prefix);
    if (!mount || mount.off || known(ctx.path)) return next();
    if (`${ctx.path}/` === mount.prefix) {
      // /admin → /admin/ (relative asset URLs and the app's router expect the slash).
      ctx.status = 301;
      ctx.redirect(`${mount.prefix}${ctx.querystring ? `?${ctx.querystring}` : ''}`);
      return;
    }
    const index = path.join(mount.dir, 'index.html');
    const rest = ctx.path.slice(mount.prefix.length);
    const file = rest === '' ? index : fileFor(mount.dir, rest);
    const st = file ? statFile(file) : undefined;
    if (file && st) {
      const hashed = file.startsWith(path.join(mount.dir, 'assets') + path.sep);
      return send(ctx, file, st, hashed ? IMMUTABLE : REVALIDATE);
    }
    // No such file: a page navigation gets the app (its router shows the page or its own "not
    // found"); a missing asset or an API-style request is the server's 404.
    const looksLikeAsset = path.extname(rest) !== '';
    if (!wantsPage(ctx) || looksLikeAsset) return next();
    const indexStat = statFile(index);
    if (!indexStat) {
      ctx.status = 503;
      ctx.type = 'text/plain; charset=utf-8';
      ctx.set('Cache-Control', 'no-store');
      ctx.body = `The ${mount.name} is not built (${index} is missing): run \`npm run build\` in the server's folder, or \`npm start\`, which builds it.\n`;
      return;
    }
    return send(ctx, index, indexStat, REVALIDATE);
  };
}
