import { createServer, type Server } from 'node:http';
import type { Middleware } from 'koa';
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
// Workers (issue 6): shared positions, notifications, invalidations, locks, one job runner.
import { RedisHub } from './coordination/hub.ts';
import { SharedPositions } from './coordination/positions.ts';
import { InvalidationBus } from './coordination/invalidation.ts';
import { LocalState, RedisState, type SharedState } from './coordination/shared-state.ts';
import { BackgroundJobs } from './coordination/jobs.ts';
import { RedisNotifier } from './realtime/redis-notifier.ts';
import type { Notifier } from './realtime/notifier.ts';
import { isClusterWorker, onPrimaryGone, reportReady, runPrimary } from './cluster.ts';
import { STREAMS, parseSyncToken, type SyncToken } from './storage/stream-token.ts';
import { InFlight, Routes, createApp } from './http/app.ts';
import { AccountStore } from './accounts/store.ts';
import { AccountService } from './accounts/service.ts';
import { accountRoutes } from './accounts/routes.ts';
// issue 7 (abuse limits): e-mail addresses of accounts, connection caps and timeouts
import { ThreepidStore } from './accounts/threepid-store.ts';
import { ThreepidService } from './accounts/threepids.ts';
import { smtpMailer } from './accounts/mailer.ts';
import { threepidRoutes } from './accounts/threepid-routes.ts';
import { ConnectionLimits } from './http/connection-limits.ts';
import { RoomStore } from './rooms/store.ts';
import { RoomEngine } from './rooms/engine.ts';
import { Outbox } from './rooms/outbox.ts';
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
import { loadSigningKeys, readSigningKeyFile } from './server/keys.ts';
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
import { createMediaRepository } from './media/setup.ts'; // issue 8: media repository
// issue 7 (limits7): rate limits, the client's address, overload.
import { LocalRateLimiter, RedisRateLimiter } from './limits/limiter.ts';
import { RateLimits } from './limits/service.ts';
import { OverrideStore } from './limits/store.ts';
import { rateLimitRoutes } from './limits/routes.ts';
import { OverloadGuard } from './limits/overload.ts';
import { clientAddress } from './http/client-address.ts';
// issue 8 (e2ee helper): end-to-end encryption, server side
import { KeyStore } from './e2ee/keys-store.ts';
import { KeyService } from './e2ee/keys.ts';
import { CrossSigningService } from './e2ee/cross-signing.ts';
import { ToDeviceStore } from './e2ee/to-device-store.ts';
import { ToDeviceService } from './e2ee/to-device.ts';
import { BackupStore } from './e2ee/backup-store.ts';
import { BackupService } from './e2ee/backup.ts';
import { e2eeRoutes } from './e2ee/routes.ts';
import { backupRoutes } from './e2ee/backup-routes.ts';
// issue 13: friends
import { FriendStore } from './friends/store.ts';
import { FriendService } from './friends/service.ts';
import { friendRoutes } from './friends/routes.ts';
// issue 12 (deploy12): the web UIs; the admin API and UI only from ADMIN_ALLOW.
import { AddressRanges, adminAllow } from './http/admin-allow.ts';
import { webUiMounts } from './webui/mounts.ts';
import { staticUi } from './webui/static-ui.ts';
// issue 11 (fed11): federation (the top-level federation/ folder; homeserver/ never imports it but here)
import { createFederation } from '../federation/setup.ts';
import { listenForFederation } from '../federation/listener.ts';
// issue 9 (roles9): server roles and permissions, the audit log, the admin API.
import { adminContext } from './admin/guard.ts';
import { AuditLog } from './admin/audit.ts';
import { AuditStore } from './admin/audit-store.ts';
import { RoleService } from './admin/roles.ts';
import { RoleStore } from './admin/roles-store.ts';
import { AdminUserStore } from './admin/users-store.ts';
import { UserAdmin } from './admin/users.ts';
import { synapseAdminRoutes } from './admin/synapse-routes.ts';
import { SERVER_VERSION } from './server/version.ts';
import { superAdminRoutes } from './admin/routes.ts';
import { RestrictionAdmin } from './admin/restrictions.ts'; // issue 12 (userbans12)
import { restrictionRoutes } from './admin/restriction-routes.ts'; // issue 12 (userbans12)
import { ServerRoomModerators } from './admin/server-rooms.ts';
import { SYSTEM_LOCALPART } from './rooms/bootstrap.ts';
import { setupModeration } from './moderation/setup.ts'; // issue 9 (mod9): moderation
// issue 12 (adminui12): the admin dashboard's figures
import { AdminStats } from './admin-stats/service.ts';
import { AdminStatsStore } from './admin-stats/store.ts';
import { adminStatsRoutes } from './admin-stats/routes.ts';
import { configSummary } from './admin-stats/summary.ts';

export interface Homeserver {
  config: Config;
  db: Db;
  server: Server;
  /** Background jobs run on one worker (coordination/jobs.ts). */
  jobs: BackgroundJobs;
  /** issue 10: the room engine (persistAuthorised for federation) and the outbox its sender reads. */
  engine: RoomEngine;
  outbox: Outbox;
  /** Drains: stop accepting, answer in-flight requests, finish queued writes, close pools, stop PostgreSQL. */
  stop(): Promise<void>;
}

/** The version /_matrix/federation/v1/version reports (package.json's). */

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
  // issue 11: an unreadable signing key file stops the start before anything else is started.
  const keyFile = readSigningKeyFile({ dataDir: config.dataDir, configuredPath: config.federation.signingKeyPath });
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

  // With Redis: positions, notifications and cache invalidations shared by every worker. The
  // channels are subscribed before the tracker finds its start, so no later change goes unheard.
  let hub: RedisHub | undefined;
  let positions: SharedPositions | undefined;
  let redisNotifier: RedisNotifier | undefined;
  if (redis) {
    hub = await RedisHub.connect(redis, config.redisPrefix, log.child({ component: 'coordination' }));
    undo.push(() => hub!.close());
    // Receipts, to-device messages and device-list changes take their positions from the shared event stream too.
    redisNotifier = new RedisNotifier(hub, log.child({ component: 'notifier' }), new Set(['events', 'accountData', 'receipts', 'toDevice', 'deviceLists']));
    await redisNotifier.start();
    positions = new SharedPositions(hub, db, connection, log.child({ component: 'positions' }));
    undo.push(() => positions!.close());
  }
  const bus = new InvalidationBus(hub, log.child({ component: 'invalidation' }));
  await bus.start();
  const shared: SharedState = hub ? new RedisState(hub) : new LocalState();
  const tracker = await StreamTracker.open(db, positions);
  const localNotifier = new LocalNotifier(startPositions(tracker.current()));
  if (redisNotifier) redisNotifier.attach(localNotifier, tracker, positions!);
  const notifier: Notifier = redisNotifier ?? localNotifier;
  const jobs = new BackgroundJobs(hub ? connection : undefined, log.child({ component: 'jobs' }));
  const serverStore = new ServerStore(db);
  // issue 11: the key file (SIGNING_KEY_PATH or DATA_DIR/signing.key) is the source of truth.
  const serverKeys = await loadSigningKeys(serverStore, keyFile, log.child({ component: 'keys' }));
  const signingKey = serverKeys.current;

  const accounts = new AccountService(new AccountStore(db), config, log,
    new ThreepidService(new ThreepidStore(db), config, smtpMailer(config.smtp), log.child({ component: 'threepids' }))); // issue 7
  undo.push(() => accounts.flushSeen()); // last_seen noted but not yet written
  // A logout, deactivation or token refresh drops the cached tokens on every worker.
  bus.on('tokens', (key) => {
    const { u, d } = JSON.parse(key) as { u: string; d?: string[] };
    accounts.dropCachedTokens(u, d);
  }, () => accounts.dropAllCachedTokens());
  if (hub) accounts.shareTokenChanges = (u, d) => bus.emit('tokens', JSON.stringify({ u, d }));
  const profiles = new ProfileStore(db);
  const roomStore = new RoomStore(db);
  bus.on('room', (roomId) => roomStore.forgetRoom(roomId), () => roomStore.forgetRoom());
  if (hub) roomStore.roomChanged = (roomId) => bus.emit('room', roomId);
  const engine = new RoomEngine(roomStore, tracker, notifier, config.serverName, signingKey, log);
  const outbox = new Outbox(db, tracker, log.child({ component: 'outbox' })); // issue 10
  const aliases = new AliasStore(db);
  const rooms = new RoomService(engine, roomStore, aliases, config.serverName, config.defaultRoomVersion, (u) => profiles.get(u), log);
  const visibility = new Visibility(roomStore);
  const reader = new RoomReader(roomStore, visibility);
  // perf6: the syncs a send wakes read its events from memory (one writer only; see RoomEngine.feed).
  engine.feed(reader.recent);
  const accountData = new AccountDataService(new AccountDataStore(db, tracker, notifier));
  const syncStore = new SyncStore(db);
  const sync = new SyncService(reader, accountData, tracker, notifier);
  const push = new PushRulesService(accountData);
  // Push rules changed on another worker: its cached rule templates here are stale.
  // (What the bus delivers here is not sent on again: workers would bounce it between them forever.)
  let fromBus = false;
  bus.on('push-rules', (userId) => {
    fromBus = true;
    try { push.changed.publishSync(userId); } finally { fromBus = false; }
  }, () => {});
  if (hub) push.changed.subscribe((userId) => { if (!fromBus) bus.emitElsewhere('push-rules', userId); });

  // issue 6 (receipts-push helper): receipts and read markers; push rules evaluated for every member
  // of a room on every event (before /sync wake-ups go out: the engine's notify gate); unread counts.
  const receiptStore = new ReceiptStore(db, tracker); // issue 9 (mod9): a purge deletes a room's receipts
  const receipts = new ReceiptService(receiptStore, reader, accountData, tracker, notifier);
  sync.addPart(receipts.syncPart());
  const pushStore = new PushStore(db); // issue 9 (mod9): … and its push actions
  const notifications = new NotificationService(pushStore, new BulkEvaluator(reader, push, (userId) => userId.endsWith(`:${config.serverName}`)), reader, receipts, tracker, notifier, log.child({ component: 'push' }));
  engine.setTransactionWrites((rooms) => notifications.transactionWrites(rooms));
  sync.addPart(notifications.syncPart());
  await notifications.start();
  undo.push(() => notifications.stop());

  // /sync caches each user's memberships until a member event about them is persisted (on any
  // worker: the bus runs it here and on the others, heard there before the position is readable).
  bus.on('membership', (userId) => sync.membershipChanged(userId), () => sync.allMembershipsChanged());
  engine.onPersisted((events) => {
    for (const e of events) if (e.pdu.type === 'm.room.member' && e.pdu.state_key) bus.emit('membership', e.pdu.state_key);
  });
  rooms.forgotten.subscribe((userId) => bus.emit('membership', userId));

  // Typing and presence (ephemeral/): in Redis with REDIS_URL, in process otherwise. In Redis,
  // each change is published by its Lua script and every worker (the writer too) wakes its own
  // long-polls from that message, after advancing its readable position: `localWake` must wake
  // this process only.
  const localWake = (stream: 'typing' | 'presence') => (keys: string[], pos: number) =>
    redisNotifier ? redisNotifier.heard(stream, keys, pos) : localNotifier.notify(stream, keys, pos);
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
  // The typing and presence sweeps run on the worker that holds the background jobs.
  jobs.register('typing expiry', typing.job());
  jobs.register('presence timeouts', presence.job());

  await ensureAutoJoinRooms(rooms, accounts, config.serverName, config.autoJoinRooms, log);
  accounts.onRegistered('auto-join rooms', (userId) => autoJoin(rooms, userId, config.autoJoinRooms, log));
  accounts.deactivating.subscribe((userId) => rooms.leaveAll(userId));

    const routes = new Routes(accounts, config.maxRequestBytes, config.bodyTimeoutMs);
  // ---- issue 7 (limits7): rate limits (in Redis with REDIS_URL, shared by every worker), per-user
  // overrides (admin API), refusals before work when overloaded.
  const limitsLog = log.child({ component: 'limits' });
  const limiter = !config.rateLimits ? undefined : redis ? new RedisRateLimiter(redis, config.redisPrefix, limitsLog) : new LocalRateLimiter();
  const limits = new RateLimits(limiter, config.rateLimitRules, new OverrideStore(db), limitsLog, config.serverName);
  undo.push(() => limits.close());
  if (!config.rateLimits) limitsLog.warn('RATE_LIMITS=off: no rate limit applies (benchmarks and test set-ups only)');
  bus.on('ratelimit-override', (userId) => limits.dropOverride(userId), () => limits.dropOverride());
  if (hub) limits.overrideChanged = (userId) => bus.emit('ratelimit-override', userId);
  routes.limits = limits;
  rateLimitRoutes(routes, limits, config.serverName, async (u) => !!(await profiles.get(u)));
  const overload = new OverloadGuard({ maxRequests: config.maxConcurrentRequests, maxWrites: config.maxConcurrentWrites, maxSyncsPerToken: config.maxSyncsPerToken }, log.child({ component: 'overload' }), limits);
  // ---- end issue 7 (limits7)
  serverRoutes(routes, config);
  accountRoutes(routes, accounts, config, shared);
  // issue 7 (abuse limits): e-mail addresses; expired UIA and e-mail validation sessions swept by a job.
  threepidRoutes(routes, accounts, config);
  jobs.register('expired auth sessions', accounts.expiryJob());
  const propagator = new ProfilePropagator(profiles, rooms, reader, log.child({ component: 'profiles' }));
  // Background jobs run on the one worker holding the jobs' lock (alone: here, at once).
  jobs.register('profile propagation', propagator);
  // A profile change on any worker kicks the propagation where it runs (the job runner).
  bus.on('profiles-kick', () => propagator.kick(), () => {});
  const kicker = hub ? ({ kick: () => bus.emit('profiles-kick', '') } as unknown as ProfilePropagator) : propagator;
  const profileService = new ProfileService(profiles, kicker, reader); // issue 9: the admin API sets profiles too
  profileRoutes(routes, profileService);
  roomRoutes(routes, rooms, reader, tracker, config.serverName);
  accountDataRoutes(routes, accountData);
  const filters = new FilterService(syncStore);
  syncRoutes(routes, sync, filters, presence);
  typingRoutes(routes, typing);
  presenceRoutes(routes, presence);
  // issue 13: friends (their changes ride on the account data stream of /sync and the WebSocket).
  const friends = new FriendService(new FriendStore(db, tracker, notifier), {
    serverName: config.serverName,
    profileOf: (u) => profiles.get(u),
    presenceOf: (users) => presence.many(users),
  }, notifier);
  sync.addPart(friends.syncPart());
  rooms.directInviteCheck = (sender, target) => friends.checkDirectInvite(sender, target);
  friendRoutes(routes, friends);
  // WebSocket sync (README "WebSocket sync"): the same batches as /sync, pushed; attached to the server below.
  const sockets = new SyncSockets({
    authenticate: (token, ip) => accounts.authenticate(token, ip),
    sync, filters, log: log.child({ component: 'ws' }),
    pingIntervalMs: config.wsPingIntervalMs, maxSocketsPerUser: config.wsMaxSocketsPerUser,
    clientAddress: (req) => clientAddress(req, config.trustedProxies), // issue 7 (limits7)
    // An open socket that answers pings counts as a user seen, like a /sync in flight.
    onActive: (me, setPresence) => {
      const value = setPresence === 'offline' || setPresence === 'unavailable' ? setPresence : 'online';
      presence.syncing(me.userId, value).then((end) => end(), () => {});
    },
  });
  undo.push(() => sockets.close());
  // A logout or deactivation on another worker closes this worker's sockets of that user at once.
  bus.on('tokens', (key) => sockets.recheckUser((JSON.parse(key) as { u: string }).u), () => {});
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
  jobs.register('pushers', pusherJob);
  // ---- issue 8 (e2ee helper): keys, to-device, device lists in /sync, cross-signing, key backup.
  const e2eeLogger = log.child({ component: 'e2ee' });
  const keyStore = new KeyStore(db, tracker);
  const keys = new KeyService(keyStore, reader, accounts, tracker, notifier, config.serverName, e2eeLogger);
  const crossSigning = new CrossSigningService(keyStore, keys, config.serverName);
  const toDevice = new ToDeviceService(new ToDeviceStore(db, tracker), accounts, tracker, notifier, config.serverName);
  const backup = new BackupService(new BackupStore(db));
  sync.addPart(keys.syncPart());
  sync.addPart(toDevice.syncPart());
  e2eeRoutes(routes, keys, crossSigning, toDevice, reader, tracker, (body, userId) => accounts.interactiveAuth(body, [['m.login.password']], { userId }).then(() => {}));
  backupRoutes(routes, backup);
  // The devices are gone already: a failure here is logged, not answered to the logout (keys/query
  // shows only devices that exist, so keys left behind are never served).
  accounts.devicesRemoved.subscribe(async ({ userId, deviceIds }) => {
    await keys.devicesRemoved(userId, deviceIds).catch((err) => e2eeLogger.error({ err, userId }, 'keys of removed devices not removed'));
    await toDevice.devicesRemoved(userId, deviceIds).catch((err) => e2eeLogger.error({ err, userId }, 'to-device messages of removed devices not removed'));
  });
  accounts.deactivating.subscribe(async (userId) => {
    await keys.userDeactivated(userId);
    await toDevice.devicesRemoved(userId, 'all');
    await backup.userDeactivated(userId);
  });
  jobs.register('to-device transaction ids', toDevice.pruneJob());
  engine.onPersisted((events, roomId) => {
    for (const e of events) if (e.pdu.type === 'm.room.member' && e.pdu.state_key) keys.membershipChanged(roomId, e.pdu.state_key, e.streamPos);
  });
  // ---- end issue 8 (e2ee helper)
  // Every job is registered: the worker that takes the lock starts them.
  await jobs.start();
  undo.push(() => jobs.stop());
  // ---- end issue 6: pushers
  const current = () => tracker.current();
  searchRoutes(routes, new SearchService(reader, current));
  relationRoutes(routes, new RelationsService(reader, current));
  const directory = new DirectoryService(reader, rooms, config.serverName);
  directoryRoutes(routes, directory);
  upgradeRoutes(routes, new UpgradeService(rooms, reader, push, accountData, (u) => profiles.get(u), config.serverName, log.child({ component: 'upgrades' }), shared));
  timestampRoutes(routes, new TimestampService(reader));
  thirdPartyRoutes(routes);
  // ---- issue 8 (media8): the media repository; bytes under DATA_DIR/media, metadata in PostgreSQL.
  const media = await createMediaRepository(routes, db, config, bus, jobs, log.child({ component: 'media' }));

  healthRoutes(routes, serverStore, config.databaseTimeoutMs);
  // ---- issue 11 (fed11): federation: keys, signed requests, inbound API, outbound queues.
  const federation = createFederation(routes, {
    config, db, log: log.child({ component: 'federation' }), serverKeys, keys, crossSigning, toDevice, typing, receipts, presence,
    profiles: profileService, rooms, reader, directory, media, jobs, outbox, bus, version: SERVER_VERSION,
    friends, // issue 13: friend requests over federation
    onRoomMembership: (fn) => engine.onPersisted((events, roomId) => { if (events.some((e) => e.pdu.type === 'm.room.member')) fn(roomId); }),
  });
  undo.push(() => federation.close());
  // ---- issue 9 (roles9): roles, audit log (admin/guard.ts: requirePermission for every admin route).
  const roles = new RoleService(new RoleStore(db));
  const adminAccess = { roles, audit: new AuditLog(new AuditStore(db)) };
  const systemUserId = accounts.userId(SYSTEM_LOCALPART);
  // The rooms the server owns (its auto-join rooms): server moderators get their moderator level there.
  const serverRooms = new ServerRoomModerators(roles, {
    systemUserId,
    roomIds: async () => (await Promise.all(config.autoJoinRooms.map((a) => rooms.aliases.resolve(a)))).filter((x): x is string => !!x),
    powerLevels: async (me, roomId) => (await reader.stateEvent(me, roomId, 'm.room.power_levels', '')).content as Record<string, unknown>,
    setPowerLevels: async (me, roomId, content) => { await rooms.setState(me, roomId, 'm.room.power_levels', '', content); },
  }, log.child({ component: 'admin' }));
  await serverRooms.sync();
  const userAdmin = new UserAdmin(accounts, roles, new AdminUserStore(db), {
    setProfile: (u, field, value) => profileService.change(u, field, value),
    joinedRoomIds: (u) => reader.joinedRoomIds(u),
    rolesChanged: (userIds) => serverRooms.sync(userIds),
  }, config.serverName);
  synapseAdminRoutes(routes, userAdmin);
  superAdminRoutes(routes, {
    users: userAdmin,
    rolesChanged: (userIds) => serverRooms.sync(userIds),
    // main()'s shutdown path (SIGTERM): stop accepting, drain, flush, exit; with workers, the primary drains them all.
    requestShutdown: () => process.kill(isClusterWorker() ? process.ppid : process.pid, 'SIGTERM'),
    onlineWithinMs: 5 * 60_000,
  });
  // issue 12 (userbans12): user restrictions with reason and expiry; the expiry sweep runs with the background jobs.
  const restrictionAdmin = new RestrictionAdmin(accounts, adminAccess.audit, log.child({ component: 'restrictions' }));
  restrictionRoutes(routes, userAdmin, restrictionAdmin);
  jobs.register('user restriction expiry', restrictionAdmin.expiryJob());
  // ---- end issue 9 (roles9)
  // ---- issue 9 (mod9): rooms admin, reports, server notices, media admin, IP bans, anti-spam, policy lists.
  const moderation = await setupModeration({
    routes, db, config, bus, rooms, reader, media, roles: adminAccess.roles, accounts,
    setTag: (u, roomId, tag, content) => accountData.setTag(u, roomId, tag, content),
    userExists: async (u) => !!(await profiles.get(u)), currentPosition: () => tracker.current(), log: log.child({ component: 'moderation' }),
  });
  undo.push(() => moderation.drain());
  rooms.purged.subscribe(async ({ roomId }) => { await receiptStore.deleteRoom(roomId); await pushStore.deleteRoom(roomId); });
  // ---- end issue 9 (mod9)
  // ---- issue 12 (adminui12): the admin dashboard's live figures and server summary.
  const adminStats = new AdminStats({
    store: new AdminStatsStore(db, systemUserId), redis, redisPrefix: config.redisPrefix, workerId: hub?.workerId ?? String(process.pid),
    rooms: async () => Number((await moderation.roomAdmin.list({ orderBy: 'name', dir: 'f', from: 0, limit: 1 })).total_rooms ?? 0),
    onlineWithinMs: 5 * 60_000,
  });
  engine.onPersisted((events) => {
    adminStats.count('messages', events.filter((e) => e.pdu.type === 'm.room.message' || e.pdu.type === 'm.room.encrypted').length);
  });
  adminStats.start();
  undo.push(() => adminStats.stop());
  adminStatsRoutes(routes, adminStats, () => configSummary(config), SERVER_VERSION); // as /_synapse/admin/v1/server_version says

  const inFlight = new InFlight();
  // With several workers, a write is answered once it is readable (and its cache invalidations
  // heard) on every worker; a /sync token made by a worker further ahead waits (bounded) until
  // this one has caught up, so that a client moving between workers never goes back.
  const settle: Middleware = async (ctx, next) => {
    const since = ctx.method === 'GET' && typeof ctx.query.since === 'string' ? sinceEvents(ctx.query.since) : undefined;
    if (since !== undefined) await tracker.untilReadable(since, 2_000);
    await next();
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD' && ctx.method !== 'OPTIONS') await Promise.all([tracker.settled(), bus.flushed()]);
  };
  // issue 7 (abuse limits): timeouts against slow clients; caps on connections, long-polls and sockets.
  const connectionLimits = new ConnectionLimits({
    ...config, authenticate: (token, ip) => accounts.authenticate(token, ip), log: log.child({ component: 'connection-limits' }),
    // A trusted proxy (Caddy) carries every client's connections: only its clients are counted (long-polls, sockets).
    exempt: (address) => config.trustedProxies.has(address),
    clientAddress: (req) => clientAddress(req, config.trustedProxies),
  });
  // issue 12 (deploy12): admin paths refused outside ADMIN_ALLOW; the UIs where no API path is.
  const webUi = staticUi(webUiMounts(config), (p) => routes.match(p, 'GET').path);
  const app = createApp(routes, log, [adminAllow(new AddressRanges(config.adminAllow)), webUi, adminContext(adminAccess),
    connectionLimits.longPolls(), revocationWatcher(sockets), ...(tracker.isShared ? [settle] : [])], inFlight,
    { trustedProxies: config.trustedProxies, overload, early: [moderation.ipBans.middleware(), adminStats.refusals()] }); // issue 7 (limits7); issue 9 (mod9): IP bans; issue 12 (adminui12): 429s counted (overload included)
  const handle = app.callback();
  const server = createServer(ConnectionLimits.serverOptions(), handle);
  server.on('upgrade', (req, socket, head) => {
    // issue 9 (mod9): a banned address gets no WebSocket either (upgrades do not pass through koa).
    if (moderation.ipBans.banned(clientAddress(req, config.trustedProxies))) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"errcode":"M_FORBIDDEN","error":"Your address is banned from this server"}');
      return;
    }
    if (connectionLimits.admitUpgrade(req, socket)) sockets.handleUpgrade(req, socket, head, handle);
  });
  connectionLimits.attach(server);
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
  // issue 11: FEDERATION_PORT with TLS_CERT / TLS_KEY: this process terminates TLS for federation itself.
  const fedServer = config.federation.port
    ? await listenForFederation({
      port: config.federation.port, bindAddress: config.bindAddress, cert: config.federation.tlsCert!, key: config.federation.tlsKey!,
      serverOptions: ConnectionLimits.serverOptions(), configure: (srv) => connectionLimits.attach(srv as unknown as Server),
    }, handle)
    : undefined;
  if (fedServer) undo.push(() => new Promise<void>((resolve) => { fedServer.close(() => resolve()); fedServer.closeAllConnections(); }));
  log.info({ port: config.port, federationPort: config.federation.port || undefined, serverName: config.serverName, startupMs: Date.now() - started, embedded: !!embedded }, 'listening');

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
  return { config, db, server, jobs, engine, outbox, stop: () => (stopping ??= drain()) };
}

/** The events position of a sync token (undefined: not one). */
function sinceEvents(token: string): number | undefined {
  try { return parseSyncToken(token)?.events; } catch { return undefined; }
}

/** Where the notifier starts knowing each stream: the event stream's position; 0 for the others. */
function startPositions(events: number): SyncToken {
  const out = {} as SyncToken;
  for (const s of STREAMS) out[s] = 0;
  // receipts take positions of the event stream too (issue 6, receipts-push helper).
  // to-device and device lists too (issue 8, e2ee helper).
  return { ...out, events, accountData: events, receipts: events, toDevice: events, deviceLists: events };
}

/** A query that runs this long fails (503 if the database stopped answering), so no request hangs for minutes. */
const QUERY_TIMEOUT_MS = 30_000;

/** The short human greeting on a terminal; logs stay JSON lines on stdout. */
function banner(config: Config): string {
  const registering = config.registration === 'open'
    ? 'open: point a Matrix client (e.g. Element) at the URL and create an account'
    : config.registration === 'token' ? 'by token (m.login.registration_token); REGISTRATION=open lets anyone register'
    : config.registration === 'email' ? 'by verified e-mail, one account per address (SMTP_HOST)'
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
    // `--workers N` (npm start -- --workers N) is WORKERS=N.
    const flag = process.argv.indexOf('--workers');
    if (flag >= 0) process.env.WORKERS = process.argv[flag + 1] ?? '';
    const config = loadConfig();
    log = pino({ level: config.logLevel });
    if (config.workers > 1 && !isClusterWorker()) {
      // The primary: forks the workers, restarts the ones that die, drains them all on SIGTERM.
      process.removeAllListeners('SIGINT');
      process.removeAllListeners('SIGTERM');
      const primaryLog = log;
      await runPrimary(config.workers, (obj, msg) => primaryLog.info(obj, msg));
      if (process.stdout.isTTY) process.stderr.write(`${banner(config)}  workers       ${config.workers} (one port)\n\n`);
      return;
    }
    onPrimaryGone(() => void shutdown('primary gone'));
    hs = await startHomeserver(config, log);
    if (stopping) { await hs.stop(); process.exit(0); }
    reportReady();
    if (process.stdout.isTTY && !isClusterWorker()) process.stderr.write(`${banner(config)}\n`);
  } catch (err) {
    process.stderr.write(`super-server: ${startupFailure(err)}\n`);
    process.exit(1);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) void main();
