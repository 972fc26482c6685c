import { createServer, type Server } from 'node:http';
import { pino, type Logger } from 'pino';
import { loadConfig, type Config } from './config.ts';
import { connect, isDatabaseUnavailable, migrate, type Db } from './storage/db.ts';
import { lockDataDir, prepareDataDir } from './storage/data-dir.ts';
import { StartupError } from './startup-error.ts';
import { healthRoutes } from './server/health.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './storage/embedded.ts';
import { StreamTracker } from './storage/stream.ts';
import { LocalNotifier } from './realtime/notifier.ts';
import { connectRedis } from './coordination/redis.ts';
import { STREAMS, type SyncToken } from './storage/stream-token.ts';
import { InFlight, Routes, createApp } from './http/app.ts';
import { AccountStore } from './accounts/store.ts';
import { AccountService } from './accounts/service.ts';
import { accountRoutes } from './accounts/routes.ts';
import { RoomStore } from './rooms/store.ts';
import { RoomEngine } from './rooms/engine.ts';
import { RoomService } from './rooms/service.ts';
import { AliasStore } from './rooms/alias-store.ts';
import { RoomReader } from './rooms/reader.ts';
import { Visibility } from './rooms/visibility.ts';
import { roomRoutes } from './rooms/routes.ts';
import { autoJoin, ensureAutoJoinRooms } from './rooms/bootstrap.ts';
import { AccountDataStore } from './accountdata/store.ts';
import { AccountDataService } from './accountdata/service.ts';
import { accountDataRoutes } from './accountdata/routes.ts';
import { SyncService } from './sync/service.ts';
import { SyncStore } from './sync/store.ts';
import { FilterService } from './sync/filter.ts';
import { syncRoutes } from './sync/routes.ts';
import { SyncSockets } from './sync/socket.ts';
import { revocationWatcher, socketRoutes } from './sync/socket-routes.ts';
import { ProfileStore } from './profiles/store.ts';
import { profileRoutes } from './profiles/routes.ts';
import { ProfileService } from './profiles/service.ts';
import { ProfilePropagator } from './profiles/propagation.ts';
import { serverRoutes } from './server/routes.ts';
import { loadOrCreateSigningKey } from './server/keys.ts';
import { ServerStore } from './server/store.ts';
import { PushRulesService } from './push/service.ts';
import { notificationRoutes, pushRoutes } from './push/routes.ts';
// issue 6 (receipts-push helper)
import { ReceiptStore } from './receipts/store.ts';
import { ReceiptService } from './receipts/service.ts';
import { receiptRoutes } from './receipts/routes.ts';
import { PushStore } from './push/store.ts';
import { BulkEvaluator } from './push/bulk.ts';
import { NotificationService } from './push/notifications.ts';
import { SearchService } from './search/service.ts';
import { searchRoutes } from './search/routes.ts';
import { RelationsService } from './relations/service.ts';
import { relationRoutes } from './relations/routes.ts';
import { DirectoryService } from './directory/service.ts';
import { directoryRoutes } from './directory/routes.ts';
import { UpgradeService } from './upgrades/service.ts';
import { upgradeRoutes } from './upgrades/routes.ts';
import { TimestampService } from './timestamps/service.ts';
import { timestampRoutes } from './timestamps/routes.ts';
import { thirdPartyRoutes } from './thirdparty/routes.ts';
import { PusherStore } from './pushers/store.ts'; // issue 6: pushers
import { PusherService } from './pushers/service.ts';
import { pusherRoutes } from './pushers/routes.ts';
import { PusherSender } from './pushers/sender.ts';
import { roomEventDetails } from './pushers/details.ts';
import { pusherSenderJob } from './pushers/job.ts';
import { LocalTypingState, RedisTypingState, TypingService } from './ephemeral/typing.ts';
import { typingRoutes } from './ephemeral/typing-routes.ts';
import { LocalPresenceState, RedisPresenceState } from './ephemeral/presence.ts';
import { PresenceService } from './ephemeral/presence-service.ts';
import { presenceRoutes } from './ephemeral/presence-routes.ts';

export interface Homeserver {
  config: Config;
  db: Db;
  server: Server;
  /** Drains: stop accepting, answer in-flight requests, finish queued writes, close pools, stop PostgreSQL. */
  stop(): Promise<void>;
}

/** In-flight requests get this long to be answered on shutdown (systemd's TimeoutStopSec is 20 s). */
const DRAIN_TIMEOUT_MS = 10_000;

/** A URL with its password masked, for messages. */
function redact(url: string): string {
  try { const u = new URL(url); if (u.password) u.password = '***'; return u.toString(); } catch { return '(unparseable URL)'; }
}

/**
 * Waits (bounded) until the database answers: one that is still starting gets a moment; one that
 * refuses us for good (bad password, no such database) fails at once.
 */
async function waitForDatabase(db: Db, config: Config, describe: string): Promise<void> {
  const began = Date.now();
  const end = began + Math.max(config.databaseTimeoutMs * 2, 2_000);
  for (;;) {
    try { await db.raw('SELECT 1'); return; } catch (err) {
      const e = err as { code?: string; message?: string };
      const reason = `${e.code ? `${e.code} ` : ''}${(e.message ?? String(err)).split('\n')[0]}`;
      if (!isDatabaseUnavailable(err)) throw new StartupError(`${describe} refused the connection: ${reason}`);
      if (Date.now() > end) throw new StartupError(`${describe} is unreachable (waited ${Math.round((Date.now() - began) / 1000)} s): ${reason}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Composition root: config → storage → services → http → listen. */
export async function startHomeserver(config: Config, log: Logger): Promise<Homeserver> {
  const started = Date.now();
  // What has been started so far, stopped in reverse if a later step fails: nothing is left running.
  const undo: Array<() => Promise<void> | void> = [];
  const unwind = async () => { for (const u of undo.splice(0).reverse()) await Promise.resolve().then(u).catch(() => {}); };
  try {
    return await assemble(config, log, started, undo);
  } catch (err) {
    await unwind();
    throw err;
  }
}

async function assemble(config: Config, log: Logger, started: number, undo: Array<() => Promise<void> | void>): Promise<Homeserver> {
  let embedded: EmbeddedPostgres | undefined;
  let connection: string | object;
  let describeDb: string;
  if (config.databaseUrl) {
    connection = config.databaseUrl;
    describeDb = `DATABASE_URL ${redact(config.databaseUrl)}`;
  } else {
    prepareDataDir(config.dataDir);
    undo.push(lockDataDir(config.dataDir));
    try {
      embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, log: (msg) => log.info({ component: 'postgres' }, msg) });
    } catch (err) {
      if (err instanceof StartupError) throw err;
      throw new StartupError(`the embedded PostgreSQL in ${config.dataDir}/pg did not start: ${(err as Error).message}`);
    }
    undo.push(() => embedded!.stop());
    connection = embedded.connection;
    describeDb = `the embedded PostgreSQL in ${config.dataDir}/pg`;
  }
  // Redis (REDIS_URL) carries what workers share: wake-ups, typing, presence, locks.
  const redis = config.redisUrl ? await connectRedis(config.redisUrl, log.child({ component: 'redis' })) : undefined;
  if (redis) undo.push(() => { redis.destroy(); });
  // Migrations may run long on a big database: their own pool, without the per-query bound.
  const migrator = connect(connection as string, { poolMax: 2, timeoutMs: config.databaseTimeoutMs, log });
  undo.push(() => migrator.destroy());
  await waitForDatabase(migrator, config, describeDb);
  await migrate(migrator, log);
  await migrator.destroy();
  const db = connect(connection as string, { timeoutMs: config.databaseTimeoutMs, queryTimeoutMs: QUERY_TIMEOUT_MS, log });
  undo.push(() => db.destroy());

  const tracker = await StreamTracker.open(db);
  const notifier = new LocalNotifier(startPositions(tracker.current()));
  const serverStore = new ServerStore(db);
  const signingKey = await loadOrCreateSigningKey(serverStore);

  const accounts = new AccountService(new AccountStore(db), config, log);
  const profiles = new ProfileStore(db);
  const roomStore = new RoomStore(db);
  const engine = new RoomEngine(roomStore, tracker, notifier, config.serverName, signingKey, log);
  const aliases = new AliasStore(db);
  const rooms = new RoomService(engine, roomStore, aliases, config.serverName, config.defaultRoomVersion, (u) => profiles.get(u), log);
  const visibility = new Visibility(roomStore);
  const reader = new RoomReader(roomStore, visibility);
  const accountData = new AccountDataService(new AccountDataStore(db, tracker, notifier));
  const syncStore = new SyncStore(db);
  const sync = new SyncService(reader, accountData, tracker, notifier);
  const push = new PushRulesService(accountData);

  // issue 6 (receipts-push helper): receipts and read markers; push rules evaluated for every member
  // of a room on every event (before /sync wake-ups go out: the engine's notify gate); unread counts.
  const receipts = new ReceiptService(new ReceiptStore(db, tracker), reader, accountData, tracker, notifier);
  sync.addPart(receipts.syncPart());
  const notifications = new NotificationService(new PushStore(db), new BulkEvaluator(reader, push), reader, receipts, tracker, notifier, log.child({ component: 'push' }));
  engine.setStager((events, roomId) => notifications.stage(events, roomId));
  sync.addPart(notifications.syncPart());
  await notifications.start();
  undo.push(() => notifications.stop());

  // /sync caches each user's memberships until a member event about them is persisted.
  engine.onPersisted((events) => {
    for (const e of events) if (e.pdu.type === 'm.room.member' && e.pdu.state_key) sync.membershipChanged(e.pdu.state_key);
  });
  rooms.forgotten.subscribe((userId) => sync.membershipChanged(userId));

  // Typing and presence (ephemeral/): in Redis with REDIS_URL, in process otherwise. In Redis,
  // each change is published by its Lua script and every worker (the writer too) wakes its own
  // long-polls from that message, after advancing its readable position: `localWake` must wake
  // this process only.
  const localWake = (stream: 'typing' | 'presence') => (keys: string[], pos: number) => notifier.notify(stream, keys, pos);
  const typingLog = log.child({ component: 'typing' });
  const typingState = redis ? new RedisTypingState(redis, config.redisPrefix, localWake('typing'), typingLog) : new LocalTypingState(localWake('typing'));
  await typingState.start();
  undo.push(() => typingState.stop());
  const typing = new TypingService(typingState, reader, notifier);
  sync.addPart(typing.part());
  const presenceLog = log.child({ component: 'presence' });
  const presenceState = redis ? new RedisPresenceState(redis, config.redisPrefix, localWake('presence'), presenceLog) : new LocalPresenceState(localWake('presence'));
  const presence = new PresenceService(presenceState, reader, notifier, async (u) => !!(await profiles.get(u)),
    { enabled: config.presence, timeoutMs: config.presenceTimeoutMs }, presenceLog);
  await presence.start();
  undo.push(() => presence.stop());
  if (config.presence) sync.addPart(presence.part());
  engine.onPersisted((events, roomId) => {
    for (const e of events) {
      if (e.pdu.type === 'm.room.member' && e.pdu.state_key) {
        const membership = (e.pdu.content as { membership?: string })?.membership;
        presence.membershipChanged(roomId, e.pdu.state_key, membership);
        if (membership !== 'join') typing.left(roomId, e.pdu.state_key).catch(() => {});
      } else if (e.pdu.sender.endsWith(`:${config.serverName}`)) presence.activity(e.pdu.sender);
    }
  });
  // BackgroundJobs: the typing and presence sweeps run on one worker once coordination/jobs.ts
  // exists (BackgroundJobs.register('typing', …), register('presence', …)); until then, here.
  for (const job of [typing.job(), presence.job()]) {
    job.start();
    undo.push(() => job.stop());
  }

  await ensureAutoJoinRooms(rooms, accounts, config.serverName, config.autoJoinRooms, log);
  accounts.onRegistered('auto-join rooms', (userId) => autoJoin(rooms, userId, config.autoJoinRooms, log));
  accounts.deactivating.subscribe((userId) => rooms.leaveAll(userId));

  const routes = new Routes(accounts, config.maxRequestBytes);
  serverRoutes(routes, config);
  accountRoutes(routes, accounts, config);
  const propagator = new ProfilePropagator(profiles, rooms, reader, log.child({ component: 'profiles' }));
  await propagator.start();
  undo.push(() => propagator.stop());
  profileRoutes(routes, new ProfileService(profiles, propagator, reader));
  roomRoutes(routes, rooms, reader, tracker, config.serverName);
  accountDataRoutes(routes, accountData);
  const filters = new FilterService(syncStore);
  syncRoutes(routes, sync, filters, presence);
  typingRoutes(routes, typing);
  presenceRoutes(routes, presence);
  // WebSocket sync (README "WebSocket sync"): the same batches as /sync, pushed; attached to the server below.
  const sockets = new SyncSockets({
    authenticate: (token, ip) => accounts.authenticate(token, ip),
    sync, filters, log: log.child({ component: 'ws' }),
    pingIntervalMs: config.wsPingIntervalMs, maxSocketsPerUser: config.wsMaxSocketsPerUser,
    // An open socket that answers pings counts as a user seen, like a /sync in flight.
    onActive: (me, setPresence) => {
      const value = setPresence === 'offline' || setPresence === 'unavailable' ? setPresence : 'online';
      presence.syncing(me.userId, value).then((end) => end(), () => {});
    },
  });
  undo.push(() => sockets.close());
  socketRoutes(routes);
  // New accounts get their push rules at once, so that their first /sync carries m.push_rules.
  accounts.onRegistered('default push rules', async (userId) => {
    await push.writeDefaults(userId);
  });
  pushRoutes(routes, push);
  receiptRoutes(routes, receipts); // issue 6 (receipts-push helper)
  notificationRoutes(routes, notifications); // issue 6 (receipts-push helper)
  // ---- issue 6: pushers (GET /pushers, POST /pushers/set); gone with the device that set them or the account.
  const pusherStore = new PusherStore(db);
  const pushers = new PusherService(pusherStore, () => tracker.current());
  pusherRoutes(routes, pushers);
  accounts.deactivating.subscribe((userId) => pushers.removeUser(userId));
  accounts.devicesRemoved.subscribe(({ userId, deviceIds }) => pushers.removeForDevices(userId, deviceIds));
  // The HTTP pusher sender: one loop over the notification feed (a background job).
  const pusherJob = pusherSenderJob(new PusherSender(pusherStore, notifications, roomEventDetails(reader),
    log.child({ component: 'pushers' }), { currentPosition: () => tracker.current() }), pushers, notifications.notified);
  await pusherJob.start();
  undo.push(() => pusherJob.stop());
  // ---- end issue 6: pushers
  const current = () => tracker.current();
  searchRoutes(routes, new SearchService(reader, current));
  relationRoutes(routes, new RelationsService(reader, current));
  directoryRoutes(routes, new DirectoryService(reader, rooms, config.serverName));
  upgradeRoutes(routes, new UpgradeService(rooms, reader, push, accountData, (u) => profiles.get(u), config.serverName, log.child({ component: 'upgrades' })));
  timestampRoutes(routes, new TimestampService(reader));
  thirdPartyRoutes(routes);

  healthRoutes(routes, serverStore, config.databaseTimeoutMs);

  const inFlight = new InFlight();
  const app = createApp(routes, log, [revocationWatcher(sockets)], inFlight);
  const handle = app.callback();
  const server = createServer(handle);
  server.on('upgrade', (req, socket, head) => sockets.handleUpgrade(req, socket, head, handle));
  // Long-polls last up to a minute; keep idle sockets a little longer than clients expect.
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${config.bindAddress}:${config.port}`;
      if (err.code === 'EADDRINUSE') reject(new StartupError(`PORT ${config.port} is already in use on ${config.bindAddress} by another process: stop it, or set PORT to a free port`));
      else if (err.code === 'EACCES') reject(new StartupError(`PORT ${config.port} on ${config.bindAddress} needs privileges this user lacks: use a port above 1023 (behind Caddy)`));
      else if (err.code === 'EADDRNOTAVAIL') reject(new StartupError(`BIND_ADDRESS ${config.bindAddress} is not an address of this machine (listening on ${where})`));
      else reject(new StartupError(`cannot listen on ${where}: ${err.message}`));
    });
    server.listen(config.port, config.bindAddress, () => resolve());
  });
  log.info({ port: config.port, serverName: config.serverName, startupMs: Date.now() - started, embedded: !!embedded }, 'listening');

  let stopping: Promise<void> | undefined;
  const drain = async () => {
    // 1. Stop accepting; idle keep-alive sockets go now, busy ones after their answer.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    // Sync sockets close with 1001 (going away); clients reconnect elsewhere from their last next_batch.
    await sockets.close();
    // 2. Long-polls answer now with what they have; everything else is answered normally.
    inFlight.shutdown.abort();
    const timer = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), DRAIN_TIMEOUT_MS).unref());
    if (!(await Promise.race([inFlight.idle().then(() => true), timer]))) {
      log.warn({ inFlight: inFlight.size }, 'requests still running after the drain timeout; closing their connections');
    }
    // 3. Writes queued by background work (auto-joins, listeners) are persisted before the pool closes.
    await Promise.race([engine.drain(), timer]);
    server.closeAllConnections();
    await closed;
    // 4. Pools, then PostgreSQL, then DATA_DIR.
    for (const u of undo.splice(0).reverse()) await Promise.resolve().then(u).catch((err) => log.error({ err }, 'error during shutdown'));
  };
  return { config, db, server, stop: () => (stopping ??= drain()) };
}

/** Where the notifier starts knowing each stream: the event stream's position; 0 for the others. */
function startPositions(events: number): SyncToken {
  const out = {} as SyncToken;
  for (const s of STREAMS) out[s] = 0;
  // receipts take positions of the event stream too (issue 6, receipts-push helper).
  return { ...out, events, accountData: events, receipts: events };
}

/** A query that runs this long fails (503 if the database stopped answering), so no request hangs for minutes. */
const QUERY_TIMEOUT_MS = 30_000;

/** The short human greeting on a terminal; logs stay JSON lines on stdout. */
function banner(config: Config): string {
  const registering = config.registration === 'open'
    ? 'open: point a Matrix client (e.g. Element) at the URL and create an account'
    : config.registration === 'token' ? 'by token (m.login.registration_token); REGISTRATION=open lets anyone register'
    : 'closed (REGISTRATION=open or token to allow it)';
  const admin = config.registrationSharedSecret
    ? 'POST /_synapse/admin/v1/register with REGISTRATION_SHARED_SECRET (README: "Create an admin")'
    : 'set REGISTRATION_SHARED_SECRET, then use /_synapse/admin/v1/register (README: "Create an admin")';
  return [
    '',
    `  super-server is running: ${config.publicBaseUrl}`,
    `  server name   ${config.serverName}   (user ids look like @alice:${config.serverName})`,
    `  register      ${registering}`,
    `  admin         ${admin}`,
    `  stop          Ctrl-C (drains requests and stops the database)`,
    '',
  ].join('\n');
}

/** A start-up failure as one line on stderr: the operator's message, or the first line of the error. */
function startupFailure(err: unknown): string {
  if (err instanceof StartupError) return err.message;
  const e = err as { message?: string; code?: string };
  return `start-up failed: ${(e?.message ?? String(err)).split('\n')[0]}${e?.code ? ` (${e.code})` : ''}`;
}

export async function main(): Promise<void> {
  let hs: Homeserver | undefined;
  let stopping = false;
  let log: Logger | undefined;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log?.info({ signal }, 'shutting down');
    // A signal during start-up: startHomeserver unwinds itself when it fails; stop what it made.
    if (hs) await hs.stop().catch((err) => log?.error({ err }, 'error during shutdown'));
    else if (!log) process.exit(1);
    if (hs) process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  try {
    const config = loadConfig();
    log = pino({ level: config.logLevel });
    hs = await startHomeserver(config, log);
    if (stopping) { await hs.stop(); process.exit(0); }
    if (process.stdout.isTTY) process.stderr.write(`${banner(config)}\n`);
  } catch (err) {
    process.stderr.write(`super-server: ${startupFailure(err)}\n`);
    process.exit(1);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) void main();
