import { createServer, type Server } from 'node:http';
import { mkdirSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { loadConfig, type Config } from './config.ts';
import { connect, migrate, type Db } from './storage/db.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './storage/embedded.ts';
import { StreamTracker } from './storage/stream.ts';
import { LocalNotifier } from './realtime/notifier.ts';
import { Routes, createApp } from './http/app.ts';
import { AccountStore } from './accounts/store.ts';
import { AccountService } from './accounts/service.ts';
import { accountRoutes } from './accounts/routes.ts';
import { RoomStore } from './rooms/store.ts';
import { RoomEngine } from './rooms/engine.ts';
import { RoomService } from './rooms/service.ts';
import { AliasStore } from './rooms/aliases.ts';
import { RoomReader } from './rooms/reader.ts';
import { Visibility } from './rooms/visibility.ts';
import { roomRoutes } from './rooms/routes.ts';
import { autoJoin, ensureAutoJoinRooms } from './rooms/bootstrap.ts';
import { AccountDataStore } from './accountdata/store.ts';
import { accountDataRoutes } from './accountdata/routes.ts';
import { SyncService } from './sync/service.ts';
import { SyncStore } from './sync/store.ts';
import { syncRoutes } from './sync/routes.ts';
import { ProfileStore } from './profiles/store.ts';
import { profileRoutes } from './profiles/routes.ts';
import { ProfileService } from './profiles/service.ts';
import { ProfilePropagator } from './profiles/propagation.ts';
import { serverRoutes } from './server/routes.ts';
import { loadOrCreateSigningKey } from './server/keys.ts';
import { registerExtraRoutes } from './extra-routes.ts';

export interface Homeserver {
  config: Config;
  db: Db;
  server: Server;
  stop(): Promise<void>;
}

/** Composition root: config → storage → services → http → listen. */
export async function startHomeserver(config: Config, log: Logger): Promise<Homeserver> {
  const started = Date.now();
  let embedded: EmbeddedPostgres | undefined;
  let connection: string | object;
  if (config.databaseUrl) connection = config.databaseUrl;
  else {
    mkdirSync(config.dataDir, { recursive: true });
    embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, log: (msg) => log.info({ component: 'postgres' }, msg) });
    connection = embedded.connection;
  }
  if (config.redisUrl) {
    log.warn('REDIS_URL is set, but several workers are not supported yet: presence and wake-ups stay in this process');
  }
  const db = connect(connection as string);
  await migrate(db, log);

  const tracker = await StreamTracker.open(db);
  const notifier = new LocalNotifier(tracker.current());
  const signingKey = await loadOrCreateSigningKey(db);

  const accountStore = new AccountStore(db);
  const accounts = new AccountService(accountStore, config, log);
  const profiles = new ProfileStore(db);
  const roomStore = new RoomStore(db);
  const engine = new RoomEngine(roomStore, tracker, notifier, config.serverName, signingKey, log);
  const aliases = new AliasStore(db);
  const rooms = new RoomService(engine, roomStore, aliases, config.serverName, config.defaultRoomVersion, (u) => profiles.get(u), log);
  const visibility = new Visibility(roomStore);
  const reader = new RoomReader(roomStore, visibility);
  const accountData = new AccountDataStore(db, tracker, notifier);
  const sync = new SyncService(roomStore, new SyncStore(db), visibility, accountData, tracker, notifier);

  // /sync caches each user's memberships until a member event about them is persisted.
  engine.onPersisted((events) => {
    for (const e of events) if (e.pdu.type === 'm.room.member' && e.pdu.state_key) sync.membershipChanged(e.pdu.state_key);
  });
  rooms.onForgotten = (userId) => sync.membershipChanged(userId);

  await ensureAutoJoinRooms(rooms, accountStore, config.serverName, config.autoJoinRooms, log);
  accounts.onRegistered('auto-join rooms', (userId) => autoJoin(rooms, userId, config.autoJoinRooms, log));
  accounts.onDeactivating = (userId) => rooms.leaveAll(userId);

  const routes = new Routes(accounts, config.maxRequestBytes);
  serverRoutes(routes, config);
  accountRoutes(routes, accounts, config);
  const propagator = new ProfilePropagator(profiles, rooms, log.child({ component: 'profiles' }));
  await propagator.start();
  profileRoutes(routes, new ProfileService(profiles, propagator));
  roomRoutes(routes, rooms, reader, tracker, config.serverName);
  accountDataRoutes(routes, accountData, db);
  syncRoutes(routes, sync, db);
  registerExtraRoutes(routes, { config, db, rooms, reader, accountData, tracker, profiles, accounts, log });

  const app = createApp(routes, log);
  const server = createServer(app.callback());
  // Long-polls last up to a minute; keep idle sockets a little longer than clients expect.
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.bindAddress, () => resolve());
  });
  log.info({ port: config.port, serverName: config.serverName, startupMs: Date.now() - started, embedded: !!embedded }, 'listening');

  return {
    config,
    db,
    server,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await propagator.stop();
      await db.destroy();
      if (embedded) await embedded.stop();
    },
  };
}

export async function main(): Promise<void> {
  const config = loadConfig();
  const log = pino({ level: config.logLevel });
  const hs = await startHomeserver(config, log);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await hs.stop().catch((err) => log.error({ err }, 'error during shutdown'));
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
