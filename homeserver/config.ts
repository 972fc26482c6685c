import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { StartupError } from './startup-error.ts';
import { ROOM_VERSIONS as KNOWN_ROOM_VERSIONS } from './protocol/room-versions.ts';
import { DEFAULT_PREVIEW_DENYLIST, parseCidr } from './media/ip-ranges.ts'; // issue 8: media
// issue 7 (limits7): rate limits, trusted proxies, overload.
import { LIMITERS, LIMITER_NAMES, type Rules } from './limits/rules.ts';
import { DEFAULT_TRUSTED_PROXIES, TrustedProxies } from './http/client-address.ts';
import { DEFAULT_ADMIN_ALLOW } from './http/admin-allow.ts'; // issue 12 (deploy12)

/** Every option: a default, an env name, a row in the README's table. */
export interface Config {
  serverName: string;
  port: number;
  bindAddress: string;
  publicBaseUrl: string;
  databaseUrl: string | undefined;
  dataDir: string;
  redisUrl: string | undefined;
  /** Prepended to every Redis key and channel, so several servers can share one Redis. */
  redisPrefix: string;
  registration: 'open' | 'token' | 'email' | 'closed';
  registrationSharedSecret: string | undefined;
  autoJoinRooms: string[];
  logLevel: string;
  maxRequestBytes: number;
  accessTokenLifetimeMs: number;
  defaultRoomVersion: string;
  uiDir: string;
  /** How long a request waits for a database connection before answering 503. */
  databaseTimeoutMs: number;
  /** PRESENCE=off: presence is neither tracked nor sent (everyone reads as offline). */
  presence: boolean;
  /** A user with no /sync in flight or ended for this long goes offline. */
  presenceTimeoutMs: number;
  /** WebSocket sync: how often every socket is pinged (a socket that missed the last pong is closed). */
  wsPingIntervalMs: number;
  /** WebSocket sync: open sockets one user may have at once. */
  wsMaxSocketsPerUser: number;
  /** Worker processes on this port (node:cluster); more than one needs REDIS_URL and DATABASE_URL. */
  workers: number;
  // issue 8: media repository
  /** Largest upload accepted (413 M_TOO_LARGE past it). */
  maxUploadBytes: number;
  /** Bytes of media one user may store in all; 0: no quota. */
  mediaQuotaBytes: number;
  /** URL_PREVIEW=on: GET /preview_url fetches pages (off: 404 M_UNRECOGNIZED). */
  urlPreview: boolean;
  /** CIDR ranges the URL previewer never connects to… */
  urlPreviewIpDenylist: string[];
  /** …unless they are in one of these. */
  urlPreviewIpAllowlist: string[];
  // ---- issue 7 (limits7)
  /** RATE_LIMITS=off: no rate limit refuses anything (benchmarks, test set-ups). */
  rateLimits: boolean;
  /** Each limiter's per-second refill and burst (limits/rules.ts). */
  rateLimitRules: Rules;
  /** Peers whose X-Forwarded-For / Forwarded headers are believed. */
  trustedProxies: TrustedProxies;
  /** Requests (other than long-polls) being answered at once; more are refused with 503 at once. */
  maxConcurrentRequests: number;
  /** Of those, writes (PUT/POST/DELETE): the bound of the write path's queue. */
  maxConcurrentWrites: number;
  /** /sync requests (long-polls included) one access token may have in flight at once. */
  maxSyncsPerToken: number;
  // issue 7 (abuse limits)
  /** Devices (sessions) one user may hold; a login past it evicts the least recently seen or is refused. */
  maxDevicesPerUser: number;
  devicePolicy: 'evict' | 'refuse';
  /** Passwords shorter than this are refused (M_WEAK_PASSWORD). */
  passwordMinLength: number;
  /** A user-interactive-auth session left unfinished this long is forgotten. */
  uiaSessionLifetimeMs: number;
  /** Unfinished user-interactive-auth sessions kept at most (the oldest go first). */
  uiaMaxSessions: number;
  /** An e-mail validation link works this long. */
  emailTokenLifetimeMs: number;
  /** Outgoing mail (e-mail validation); host undefined: no mail is sent. */
  smtp: { host: string | undefined; port: number; user: string | undefined; password: string | undefined; from: string; tls: 'implicit' | 'starttls' | 'off' };
  /** Slow clients: the whole header block, the whole request, and each body within these; idle keep-alive sockets after keepAliveTimeoutMs. */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  bodyTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** Open connections one client address may hold at once; the server's total. */
  maxConnectionsPerAddress: number;
  maxConnections: number;
  /** /sync long-polls in flight at once, per user and per client address. */
  maxLongPollsPerUser: number;
  maxLongPollsPerAddress: number;
  /** WebSocket sync sockets per client address (per user: wsMaxSocketsPerUser). */
  wsMaxSocketsPerAddress: number;
  // issue 12 (deploy12): the web UIs served by the homeserver; who may reach the admin API and UI.
  serveAdminUi: boolean;
  serveChatUi: boolean;
  /** CIDR ranges whose clients may use /_synapse/admin, /_super/admin and /admin/ (else 403). */
  adminAllow: string[];
  // issue 11 (fed11): federation
  /** issue 9: REGISTRATION_APPROVAL=on: new accounts wait in the approval queue until a moderator approves them. */
  registrationApproval: boolean;
  /** issue 9 (mod9): moderation — server notices, invite-spam controls, policy lists. */
  moderation: ModerationConfig;
  federation: FederationSettings;
}

export interface ModerationConfig {
  noticesLocalpart: string;
  noticesRoomName: string;
  inviteMinAccountAgeHours: number;
  inviteRequireSharedRoom: boolean;
  inviteSpamAction: 'refuse' | 'drop';
  inviteMaxPerDay: number;
  /** Room ids or aliases of the policy lists the server applies. */
  policyRooms: string[];
}

/** Federation (issue 11): keys, listening, discovery, outbound policy, retries. */
export interface FederationSettings {
  /** SIGNING_KEY_PATH: the signing key file (Synapse's `ed25519 <version> <seed>`); undefined: DATA_DIR/signing.key. */
  signingKeyPath: string | undefined;
  /** How long the published keys are valid (valid_until_ts = now + this). */
  keyValidityMs: number;
  /** Servers asked for others' keys when a server cannot be reached for its own. */
  trustedKeyServers: string[];
  /** 0: federation is served on PORT (behind Caddy); else a TLS listener of its own on this port. */
  port: number;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  /** The `m.server` of /.well-known/matrix/server; undefined: derived from PUBLIC_BASEURL (or FEDERATION_PORT). */
  wellKnown: string | undefined;
  /** Extra CA certificates (PEM) trusted for outbound federation, besides the system's. */
  caFile: string | undefined;
  verifyTls: boolean;
  /** Non-empty: only these server names are federated with. */
  domainWhitelist: string[];
  domainBlocklist: string[];
  /** Address ranges outbound federation may reach although private (Synapse's ip_range_whitelist). */
  ipRangeAllow: string[];
  requestTimeoutMs: number;
  retryMinMs: number;
  retryMaxMs: number;
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
/** The room versions the server can create (versions 1–2 have server-assigned event ids, which it does not make). */
const ROOM_VERSIONS = Object.values(KNOWN_ROOM_VERSIONS).filter((v) => v.eventIdFormat !== 'v1').map((v) => v.id) as [string, ...string[]];

/** An unset or empty variable takes the default. */
const unset = (v: unknown) => v === undefined || v === '';

/** A whole decimal number in [min, max], with what it accepts spelled out for the error line. */
function integer(min: number, max: number, fallback: number, accepts: string) {
  return z.preprocess(
    (v) => (unset(v) ? fallback : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN),
    z.number({ error: accepts }).int({ error: accepts }).min(min, { error: accepts }).max(max, { error: accepts }),
  );
}

/** A decimal number in (0, max] (a rate per second). */
function positive(max: number, fallback: number, accepts: string) {
  return z.preprocess(
    (v) => (unset(v) ? fallback : typeof v === 'string' && /^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(v) ? Number(v) : Number.NaN),
    z.number({ error: accepts }).gt(0, { error: accepts }).max(max, { error: accepts }),
  );
}

/** RC_<X>_PER_SECOND and RC_<X>_BURST for every limiter; ROOMS_PER_HOUR is one number (an hour's allowance). */
const rateLimitVariables = Object.fromEntries(Object.values(LIMITERS).flatMap((l) => l.env === 'ROOMS_PER_HOUR'
  ? [[l.env, integer(1, 1_000_000, l.burst, 'a whole number of rooms from 1 to 1000000')]]
  : [
    [`${l.env}_PER_SECOND`, positive(1_000_000, l.perSecond, 'a number of actions per second above 0, e.g. 0.17')],
    [`${l.env}_BURST`, integer(1, 1_000_000, l.burst, 'a whole number of actions from 1 to 1000000')],
  ]));

function oneOf<T extends readonly [string, ...string[]]>(values: T, accepts: string) {
  return z.preprocess((v) => (unset(v) ? undefined : v), z.enum(values, { error: accepts }).optional());
}

function url(protocols: string[], accepts: string) {
  return z.preprocess((v) => (unset(v) ? undefined : v), z.string().refine((s) => {
    try { return protocols.includes(new URL(s).protocol); } catch { return false; }
  }, { error: accepts }).optional());
}

/** A comma-separated list of CIDR ranges (a bare address is one host). */
function cidrList(fallback: string[]) {
  const accepts = 'a comma-separated list of CIDR ranges, e.g. 127.0.0.0/8,::1/128';
  return z.preprocess(
    (v) => (v === undefined ? fallback : typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v),
    z.array(z.string().refine((s) => parseCidr(s) !== undefined, { error: accepts }), { error: accepts }),
  );
}

/** CIDR ranges separated by commas or spaces (the Caddyfile reads the same variable, space-separated). */
function addressRanges(fallback: string[]) {
  const accepts = 'CIDR ranges separated by commas or spaces, e.g. 127.0.0.1/8,::1,10.0.0.0/8 (empty: nobody)';
  return z.preprocess(
    (v) => (v === undefined ? fallback : typeof v === 'string' ? v.split(/[\s,]+/).filter(Boolean) : v),
    z.array(z.string().refine((s) => parseCidr(s) !== undefined, { error: accepts }), { error: accepts }),
  );
}

const optionalText = z.preprocess((v) => (unset(v) ? undefined : v), z.string().optional());

/** The one schema every variable goes through; each message says what the variable accepts. */
const schema = z.object({
  SERVER_NAME: z.preprocess((v) => (unset(v) ? 'localhost' : v), z.string().regex(
    /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/,
    { error: 'a server name: a host name or IP literal, optionally with :port (e.g. example.org)' },
  )),
  PORT: integer(0, 65535, 8008, 'a port number from 0 to 65535'),
  BIND_ADDRESS: z.preprocess((v) => (unset(v) ? '0.0.0.0' : v), z.string().regex(/^[0-9A-Za-z.:%-]+$/, { error: 'an IP address or host name, e.g. 127.0.0.1' })),
  PUBLIC_BASEURL: url(['http:', 'https:'], 'an http:// or https:// URL'),
  DATABASE_URL: url(['postgres:', 'postgresql:'], 'a postgres:// or postgresql:// URL'),
  DATA_DIR: z.preprocess((v) => (unset(v) ? './data' : v), z.string()),
  REDIS_URL: url(['redis:', 'rediss:'], 'a redis:// or rediss:// URL'),
  REDIS_PREFIX: z.preprocess((v) => (unset(v) ? undefined : v), z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, { error: 'letters, digits and _ . : - (at most 64), e.g. chat.example.org:' }).optional()),
  REGISTRATION: oneOf(['open', 'token', 'email', 'closed'], 'open, token, email or closed'),
  REGISTRATION_SHARED_SECRET: optionalText,
  AUTO_JOIN_ROOMS: z.string().optional(),
  LOG_LEVEL: z.preprocess((v) => (unset(v) ? 'info' : v), z.enum(LOG_LEVELS, { error: LOG_LEVELS.join(', ') })),
  MAX_REQUEST_BYTES: integer(1024, 1024 ** 3, 1024 * 1024, 'a whole number of bytes from 1024 to 1073741824'),
  ACCESS_TOKEN_LIFETIME_MS: integer(1000, 2 ** 31 - 1, 5 * 60 * 1000, 'a whole number of milliseconds from 1000 to 2147483647'),
  DEFAULT_ROOM_VERSION: z.preprocess((v) => (unset(v) ? '10' : v), z.enum(ROOM_VERSIONS, { error: `a supported room version: ${ROOM_VERSIONS.join(', ')}` })),
  UI_DIR: z.preprocess((v) => (unset(v) ? '.' : v), z.string()),
  DATABASE_TIMEOUT_MS: integer(100, 600_000, 5_000, 'a whole number of milliseconds from 100 to 600000'),
  PRESENCE: oneOf(['on', 'off'], 'on or off'),
  PRESENCE_TIMEOUT_MS: integer(500, 86_400_000, 30_000, 'a whole number of milliseconds from 500 to 86400000'),
  WS_PING_INTERVAL_MS: integer(100, 600_000, 15_000, 'a whole number of milliseconds from 100 to 600000'),
  WS_MAX_SOCKETS_PER_USER: integer(1, 10_000, 10, 'a whole number from 1 to 10000'),
  WORKERS: integer(1, 64, 1, 'a whole number of worker processes from 1 to 64'),
  // issue 8: media repository
  MAX_UPLOAD_BYTES: integer(1, 2 ** 40, 50 * 1024 * 1024, 'a whole number of bytes from 1 to 1099511627776'),
  MEDIA_QUOTA_BYTES: integer(0, 2 ** 50, 0, 'a whole number of bytes (0: no quota)'),
  URL_PREVIEW: oneOf(['on', 'off'], 'on or off'),
  URL_PREVIEW_IP_RANGE_DENYLIST: cidrList(DEFAULT_PREVIEW_DENYLIST),
  URL_PREVIEW_IP_RANGE_ALLOWLIST: cidrList([]),
  // issue 7 (limits7)
  RATE_LIMITS: oneOf(['on', 'off'], 'on or off'),
  ...(rateLimitVariables as Record<string, z.ZodType<number>>),
  TRUSTED_PROXIES: z.string().optional(),
  MAX_CONCURRENT_REQUESTS: integer(1, 1_000_000, 512, 'a whole number of requests from 1 to 1000000'),
  MAX_CONCURRENT_WRITES: integer(1, 1_000_000, 256, 'a whole number of requests from 1 to 1000000'),
  MAX_SYNCS_PER_TOKEN: integer(1, 10_000, 4, 'a whole number from 1 to 10000'),
  // issue 7 (abuse limits)
  MAX_DEVICES_PER_USER: integer(1, 100_000, 100, 'a whole number from 1 to 100000'),
  DEVICE_LIMIT_POLICY: oneOf(['evict', 'refuse'], 'evict (log the least recently seen device out) or refuse (the login fails)'),
  PASSWORD_MIN_LENGTH: integer(1, 512, 8, 'a whole number of characters from 1 to 512'),
  UIA_SESSION_LIFETIME_MS: integer(1_000, 86_400_000, 15 * 60_000, 'a whole number of milliseconds from 1000 to 86400000'),
  UIA_MAX_SESSIONS: integer(10, 10_000_000, 10_000, 'a whole number from 10 to 10000000'),
  EMAIL_TOKEN_LIFETIME_MS: integer(1_000, 7 * 86_400_000, 60 * 60_000, 'a whole number of milliseconds from 1000 to 604800000'),
  SMTP_HOST: optionalText,
  SMTP_PORT: integer(1, 65535, 587, 'a port number from 1 to 65535'),
  SMTP_USER: optionalText,
  SMTP_PASSWORD: optionalText,
  SMTP_FROM: z.preprocess((v) => (unset(v) ? undefined : v), z.string().regex(/^(?:[^<>\r\n]*<[^\s<>@]+@[^\s<>@]+>|[^\s<>@]+@[^\s<>@]+)$/, { error: 'an e-mail address, optionally with a name: Chat <noreply@example.org>' }).optional()),
  SMTP_TLS: oneOf(['implicit', 'starttls', 'off'], 'implicit (TLS from the start, port 465), starttls (required upgrade) or off (plain text)'),
  HEADERS_TIMEOUT_MS: integer(1_000, 600_000, 20_000, 'a whole number of milliseconds from 1000 to 600000'),
  REQUEST_TIMEOUT_MS: integer(1_000, 3_600_000, 300_000, 'a whole number of milliseconds from 1000 to 3600000'),
  BODY_TIMEOUT_MS: integer(1_000, 3_600_000, 30_000, 'a whole number of milliseconds from 1000 to 3600000'),
  KEEP_ALIVE_TIMEOUT_MS: integer(1_000, 600_000, 65_000, 'a whole number of milliseconds from 1000 to 600000'),
  MAX_CONNECTIONS_PER_ADDRESS: integer(1, 1_000_000, 500, 'a whole number from 1 to 1000000'),
  MAX_CONNECTIONS: integer(1, 1_000_000, 10_000, 'a whole number from 1 to 1000000'),
  MAX_LONG_POLLS_PER_USER: integer(1, 100_000, 20, 'a whole number from 1 to 100000'),
  MAX_LONG_POLLS_PER_ADDRESS: integer(1, 1_000_000, 200, 'a whole number from 1 to 1000000'),
  WS_MAX_SOCKETS_PER_ADDRESS: integer(1, 1_000_000, 200, 'a whole number from 1 to 1000000'),
  // issue 12 (deploy12)
  SERVE_ADMIN_UI: oneOf(['on', 'off'], 'on or off'),
  SERVE_CHAT_UI: oneOf(['on', 'off'], 'on or off'),
  ADMIN_ALLOW: addressRanges(DEFAULT_ADMIN_ALLOW),
  // issue 11 (fed11): federation
  SIGNING_KEY_PATH: optionalText,
  FEDERATION_KEY_VALIDITY_MS: integer(60_000, 30 * 86_400_000, 86_400_000, 'a whole number of milliseconds from 60000 to 2592000000'),
  TRUSTED_KEY_SERVERS: serverNameList(),
  FEDERATION_PORT: integer(0, 65535, 0, 'a port number from 0 (off: federation on PORT) to 65535'),
  TLS_CERT: optionalText,
  TLS_KEY: optionalText,
  FEDERATION_WELL_KNOWN: z.preprocess((v) => (unset(v) ? undefined : v), z.string().regex(/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/, { error: 'host[:port] where peers reach federation, e.g. matrix.example.org:443' }).optional()),
  FEDERATION_CA_FILE: optionalText,
  FEDERATION_VERIFY_TLS: oneOf(['true', 'false'], 'true, or false (test set-ups only: certificates are not checked)'),
  FEDERATION_DOMAIN_WHITELIST: serverNameList(),
  FEDERATION_DOMAIN_BLOCKLIST: serverNameList(),
  FEDERATION_IP_RANGE_ALLOW: cidrList([]),
  FEDERATION_REQUEST_TIMEOUT_MS: integer(1_000, 600_000, 30_000, 'a whole number of milliseconds from 1000 to 600000'),
  FEDERATION_RETRY_MIN_MS: integer(100, 86_400_000, 10_000, 'a whole number of milliseconds from 100 to 86400000'),
  FEDERATION_RETRY_MAX_MS: integer(1_000, 7 * 86_400_000, 86_400_000, 'a whole number of milliseconds from 1000 to 604800000'),
  // issue 9 (roles9): new accounts wait until a moderator approves them
  REGISTRATION_APPROVAL: oneOf(['on', 'off'], 'on or off'),
  // issue 9 (mod9): moderation
  SERVER_NOTICES_LOCALPART: z.preprocess((v) => (unset(v) ? undefined : v), z.string().regex(/^[a-z0-9._=/+-]{1,64}$/, { error: 'a localpart (lower-case letters, digits, ._=/+-)' }).optional()),
  SERVER_NOTICES_ROOM_NAME: z.preprocess((v) => (unset(v) ? undefined : v), z.string().max(255).optional()),
  INVITE_MIN_ACCOUNT_AGE_HOURS: integer(0, 100_000, 0, 'a whole number of hours (0: no minimum)'),
  INVITE_REQUIRE_SHARED_ROOM: oneOf(['on', 'off'], "'on' or 'off'"),
  INVITE_SPAM_ACTION: oneOf(['refuse', 'drop'], "'refuse' or 'drop'"),
  INVITE_MAX_PER_DAY: integer(0, 1_000_000, 200, 'a whole number of invites (0: no limit)'),
  POLICY_ROOMS: z.preprocess((v) => (unset(v) ? undefined : v), z.string().refine((s) => s.split(',').map((x) => x.trim()).filter(Boolean).every((x) => /^[!#][^:\s]+:\S+$/.test(x)), { error: 'a comma-separated list of room ids or aliases, e.g. #policies:example.org' }).optional()),
});

/** Every variable the server reads (the schema's, and CONFIG_FILE): deploy/env.example and the README list them all. */
export const CONFIG_VARIABLES = [...Object.keys(schema.shape), 'CONFIG_FILE'];

/** A comma-separated list of server names (issue 11: federation). */
function serverNameList() {
  const accepts = 'a comma-separated list of server names, e.g. matrix.org,example.com:8448';
  return z.preprocess(
    (v) => (unset(v) ? [] : typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v),
    z.array(z.string().regex(/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/, { error: accepts }), { error: accepts }),
  );
}

/** A YAML-free config file: `CONFIG_FILE` names a JSON object whose keys are the env names. */
function fileValues(env: Env): Env {
  const file = env.CONFIG_FILE;
  if (!file) return {};
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (e) {
    throw new StartupError(`CONFIG_FILE ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): it must name a readable JSON file`);
  }
  let parsed: unknown;
  try { parsed = JSON.parse(text); } catch (e) {
    throw new StartupError(`CONFIG_FILE ${file} is not valid JSON (${(e as Error).message}): it must hold one object whose keys are the variable names`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StartupError(`CONFIG_FILE ${file} must hold one JSON object whose keys are the variable names`);
  }
  const known = new Set(Object.keys(schema.shape));
  const out: Env = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (!known.has(k)) throw new StartupError(`CONFIG_FILE ${file}: unknown key ${k}; it accepts ${[...known].join(', ')}`);
    if (v !== null && typeof v === 'object') throw new StartupError(`CONFIG_FILE ${file}: ${k} must be a string, number or boolean`);
    out[k] = v === null ? undefined : String(v);
  }
  return out;
}

/**
 * Reads and validates the configuration. A bad value throws a StartupError whose one-line message
 * names the variable, the value and what it accepts.
 */
export function loadConfig(processEnv: Env = process.env): Config {
  // The environment wins over the file, so one file can serve several setups.
  const fromFile = fileValues(processEnv);
  const env: Env = { ...fromFile };
  for (const key of Object.keys(schema.shape)) if (processEnv[key] !== undefined) env[key] = processEnv[key];
  const r = schema.safeParse(env);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const name = String(issue.path[0]);
    const where = processEnv[name] === undefined && fromFile[name] !== undefined ? ` (from CONFIG_FILE ${processEnv.CONFIG_FILE})` : '';
    throw new StartupError(`${name}=${JSON.stringify(env[name] ?? '')}${where} is not valid: ${name} accepts ${issue.message}`);
  }
  const v = r.data;
  if (v.WORKERS > 1 && !v.REDIS_URL) {
    throw new StartupError(`WORKERS=${v.WORKERS} needs REDIS_URL: several workers share wake-ups, caches and stream positions through Redis (README: "Scaling out")`);
  }
  if (v.WORKERS > 1 && !v.DATABASE_URL) {
    throw new StartupError(`WORKERS=${v.WORKERS} needs DATABASE_URL: the embedded PostgreSQL serves one process; run PostgreSQL yourself (README: "Scaling out")`);
  }
  const serverName = v.SERVER_NAME;
  if (v.REGISTRATION === 'email' && !v.SMTP_HOST) {
    throw new StartupError('REGISTRATION=email needs SMTP_HOST (and usually SMTP_FROM, SMTP_USER, SMTP_PASSWORD): the validation links are sent by e-mail');
  }
  // A public server name is a real deployment: nobody gets an account there unless the operator says so.
  const registration: Config['registration'] = (v.REGISTRATION as Config['registration'] | undefined) ?? (serverName === 'localhost' || serverName.startsWith('localhost:') ? 'open' : 'closed');
  const autoJoin = v.AUTO_JOIN_ROOMS ?? `#global:${serverName}`;
  return {
    serverName,
    port: v.PORT,
    bindAddress: v.BIND_ADDRESS,
    publicBaseUrl: (v.PUBLIC_BASEURL ?? `http://${serverName === 'localhost' ? `localhost:${v.PORT}` : serverName}`).replace(/\/+$/, ''),
    databaseUrl: v.DATABASE_URL,
    dataDir: path.resolve(v.DATA_DIR),
    redisUrl: v.REDIS_URL,
    redisPrefix: v.REDIS_PREFIX ?? `super-server:${serverName}:`,
    registration,
    registrationSharedSecret: v.REGISTRATION_SHARED_SECRET,
    autoJoinRooms: autoJoin.split(',').map((s) => s.trim()).filter(Boolean),
    logLevel: v.LOG_LEVEL,
    maxRequestBytes: v.MAX_REQUEST_BYTES,
    accessTokenLifetimeMs: v.ACCESS_TOKEN_LIFETIME_MS,
    defaultRoomVersion: v.DEFAULT_ROOM_VERSION,
    uiDir: path.resolve(v.UI_DIR),
    databaseTimeoutMs: v.DATABASE_TIMEOUT_MS,
    presence: v.PRESENCE !== 'off',
    presenceTimeoutMs: v.PRESENCE_TIMEOUT_MS,
    wsPingIntervalMs: v.WS_PING_INTERVAL_MS,
    wsMaxSocketsPerUser: v.WS_MAX_SOCKETS_PER_USER,
    workers: v.WORKERS,
    maxUploadBytes: v.MAX_UPLOAD_BYTES,
    mediaQuotaBytes: v.MEDIA_QUOTA_BYTES,
    urlPreview: v.URL_PREVIEW === 'on',
    urlPreviewIpDenylist: v.URL_PREVIEW_IP_RANGE_DENYLIST,
    urlPreviewIpAllowlist: v.URL_PREVIEW_IP_RANGE_ALLOWLIST,
    rateLimits: v.RATE_LIMITS !== 'off',
    rateLimitRules: rateLimitRules(v as unknown as Record<string, number>),
    trustedProxies: new TrustedProxies(v.TRUSTED_PROXIES ?? DEFAULT_TRUSTED_PROXIES),
    maxConcurrentRequests: v.MAX_CONCURRENT_REQUESTS,
    maxConcurrentWrites: Math.min(v.MAX_CONCURRENT_WRITES, v.MAX_CONCURRENT_REQUESTS),
    maxSyncsPerToken: v.MAX_SYNCS_PER_TOKEN,
    maxDevicesPerUser: v.MAX_DEVICES_PER_USER,
    devicePolicy: (v.DEVICE_LIMIT_POLICY as Config['devicePolicy'] | undefined) ?? 'evict',
    passwordMinLength: v.PASSWORD_MIN_LENGTH,
    uiaSessionLifetimeMs: v.UIA_SESSION_LIFETIME_MS,
    uiaMaxSessions: v.UIA_MAX_SESSIONS,
    emailTokenLifetimeMs: v.EMAIL_TOKEN_LIFETIME_MS,
    smtp: {
      host: v.SMTP_HOST, port: v.SMTP_PORT, user: v.SMTP_USER, password: v.SMTP_PASSWORD,
      from: v.SMTP_FROM ?? `noreply@${serverName.replace(/:\d+$/, '')}`,
      tls: (v.SMTP_TLS as Config['smtp']['tls'] | undefined) ?? (v.SMTP_PORT === 465 ? 'implicit' : 'starttls'),
    },
    headersTimeoutMs: v.HEADERS_TIMEOUT_MS,
    requestTimeoutMs: v.REQUEST_TIMEOUT_MS,
    bodyTimeoutMs: v.BODY_TIMEOUT_MS,
    keepAliveTimeoutMs: v.KEEP_ALIVE_TIMEOUT_MS,
    maxConnectionsPerAddress: v.MAX_CONNECTIONS_PER_ADDRESS,
    maxConnections: v.MAX_CONNECTIONS,
    maxLongPollsPerUser: v.MAX_LONG_POLLS_PER_USER,
    maxLongPollsPerAddress: v.MAX_LONG_POLLS_PER_ADDRESS,
    moderation: { // issue 9 (mod9)
      noticesLocalpart: v.SERVER_NOTICES_LOCALPART ?? '_notices',
      noticesRoomName: v.SERVER_NOTICES_ROOM_NAME ?? 'Server Notices',
      inviteMinAccountAgeHours: v.INVITE_MIN_ACCOUNT_AGE_HOURS,
      inviteRequireSharedRoom: v.INVITE_REQUIRE_SHARED_ROOM === 'on',
      inviteSpamAction: (v.INVITE_SPAM_ACTION as 'refuse' | 'drop' | undefined) ?? 'refuse',
      inviteMaxPerDay: v.INVITE_MAX_PER_DAY,
      policyRooms: (v.POLICY_ROOMS ?? '').split(',').map((x) => x.trim()).filter(Boolean),
    },
    wsMaxSocketsPerAddress: v.WS_MAX_SOCKETS_PER_ADDRESS,
    serveAdminUi: v.SERVE_ADMIN_UI !== 'off',
    serveChatUi: v.SERVE_CHAT_UI !== 'off',
    adminAllow: v.ADMIN_ALLOW,
    registrationApproval: v.REGISTRATION_APPROVAL === 'on', // issue 9 (roles9)
    federation: federationSettings(v),
  };
}

/** issue 11 (fed11): the federation settings, checked together. */
function federationSettings(v: z.infer<typeof schema>): FederationSettings {
  if (v.FEDERATION_PORT && (!v.TLS_CERT || !v.TLS_KEY)) {
    throw new StartupError(`FEDERATION_PORT=${v.FEDERATION_PORT} needs TLS_CERT and TLS_KEY: the server terminates TLS itself on that port (behind Caddy, leave FEDERATION_PORT unset)`);
  }
  return {
    signingKeyPath: v.SIGNING_KEY_PATH ? path.resolve(v.SIGNING_KEY_PATH) : undefined,
    keyValidityMs: v.FEDERATION_KEY_VALIDITY_MS,
    trustedKeyServers: v.TRUSTED_KEY_SERVERS,
    port: v.FEDERATION_PORT,
    tlsCert: v.TLS_CERT,
    tlsKey: v.TLS_KEY,
    wellKnown: v.FEDERATION_WELL_KNOWN,
    caFile: v.FEDERATION_CA_FILE,
    verifyTls: v.FEDERATION_VERIFY_TLS !== 'false',
    domainWhitelist: v.FEDERATION_DOMAIN_WHITELIST.map((s) => s.toLowerCase()),
    domainBlocklist: v.FEDERATION_DOMAIN_BLOCKLIST.map((s) => s.toLowerCase()),
    ipRangeAllow: v.FEDERATION_IP_RANGE_ALLOW,
    requestTimeoutMs: v.FEDERATION_REQUEST_TIMEOUT_MS,
    retryMinMs: v.FEDERATION_RETRY_MIN_MS,
    retryMaxMs: Math.max(v.FEDERATION_RETRY_MAX_MS, v.FEDERATION_RETRY_MIN_MS),
  };
}

function rateLimitRules(v: Record<string, number>): Rules {
  const out = {} as Rules;
  for (const name of LIMITER_NAMES) {
    const env = LIMITERS[name].env;
    out[name] = env === 'ROOMS_PER_HOUR' ? { perSecond: v[env]! / 3600, burst: v[env]! } : { perSecond: v[`${env}_PER_SECOND`]!, burst: v[`${env}_BURST`]! };
  }
  return out;
}
