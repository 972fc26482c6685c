// The composition of federation (DESIGN.md §2): it uses the services of homeserver/ through small
// hooks they offer ("remote" lookups, applyRemote…); nothing in homeserver/ imports federation.
import type { Logger } from 'pino';
import type { Config } from '../homeserver/config.ts';
import type { Routes } from '../homeserver/http/app.ts';
import type { Db } from '../homeserver/storage/db.ts';
import type { BackgroundJobs } from '../homeserver/coordination/jobs.ts';
import type { InvalidationBus } from '../homeserver/coordination/invalidation.ts';
import type { ServerKeys } from '../homeserver/server/keys.ts';
import type { KeyService } from '../homeserver/e2ee/keys.ts';
import type { ToDeviceService } from '../homeserver/e2ee/to-device.ts';
import type { CrossSigningService } from '../homeserver/e2ee/cross-signing.ts';
import type { TypingService } from '../homeserver/ephemeral/typing.ts';
import type { PresenceService } from '../homeserver/ephemeral/presence-service.ts';
import type { ReceiptService } from '../homeserver/receipts/service.ts';
import type { ProfileService } from '../homeserver/profiles/service.ts';
import type { RoomService } from '../homeserver/rooms/service.ts';
import type { RoomReader } from '../homeserver/rooms/reader.ts';
import type { DirectoryService } from '../homeserver/directory/service.ts';
import type { MediaService } from '../homeserver/media/service.ts';
import { FRIEND_REQUEST_EDU, type FriendService } from '../homeserver/friends/service.ts';
import { federationMediaRoutes } from './media-routes.ts';
import { RemoteMediaFetcher } from './remote-media.ts';
import { FederationClient } from './client.ts';
import type { DiscoveryIo } from './discovery.ts';
import { ServerKeyStore } from './key-store.ts';
import { KeyRing } from './key-ring.ts';
import { OutboundQueueStore } from './queue-store.ts';
import { FederationSender } from './sender.ts';
import { RemoteQueries } from './remote.ts';
import { EduHandler } from './edus.ts';
import { InboundTransactions } from './transactions.ts';
import type { RemotePduIntake } from './remote-pdus.ts';
import { RoomFederation } from './room-federation.ts';
import { roomFederationRoutes } from './room-routes.ts';
import { RequestAuthenticator } from './request-auth.ts';
import { federationRoutes } from './routes.ts';
import { OutboundEdus } from './outbound-edus.ts';
import { roomEventsToFederation } from './room-events.ts';
import type { Outbox } from '../homeserver/rooms/outbox.ts';

export interface FederationDeps {
  config: Config;
  db: Db;
  log: Logger;
  serverKeys: ServerKeys;
  keys: KeyService;
  toDevice: ToDeviceService;
  crossSigning: CrossSigningService;
  typing: TypingService;
  receipts: ReceiptService;
  presence: PresenceService;
  profiles: ProfileService;
  rooms: RoomService;
  reader: RoomReader;
  directory: DirectoryService;
  media: MediaService;
  /** issue 13: friend requests to and from users of other servers (the io.superserver.friend_request EDU). */
  friends?: FriendService;
  jobs: BackgroundJobs;
  /** The room engine's outbox: our users' events go from it to the other servers of their rooms. */
  outbox: Outbox;
  /** Calls back when a member event of a room is persisted (the room engine's onPersisted). */
  onRoomMembership(fn: (roomId: string) => void): void;
  bus: InvalidationBus;
  version: string;
  /** Tests of discovery inject their resolver. */
  discoveryIo?: Partial<DiscoveryIo>;
}

export interface Federation {
  client: FederationClient;
  sender: FederationSender;
  /** Where PDUs of /send go: the DAG integration replaces it (the one place it plugs in). */
  setPduIntake(intake: RemotePduIntake): void;
  close(): void;
}

/** How often a request from a server may end its back-off (one write per origin at most this often). */
const HEARD_FROM_EVERY_MS = 5_000;

/** Inbound transaction ids are kept a day (senders retry within that). */
const INBOUND_TXN_KEEP_MS = 24 * 3600_000;

export function createFederation(routes: Routes, d: FederationDeps): Federation {
  const { config, log } = d;
  const settings = config.federation;
  const client = new FederationClient(config.serverName, () => d.serverKeys.current, settings, log.child({ component: 'federation-client' }), d.discoveryIo);
  client.warnIfInsecure();
  const keyRing = new KeyRing(new ServerKeyStore(d.db), client, config.serverName, d.serverKeys, settings.keyValidityMs, settings.trustedKeyServers, log.child({ component: 'keys' }));
  const queue = new OutboundQueueStore(d.db);
  const sender = new FederationSender(queue, client, config.serverName, settings, log.child({ component: 'federation-sender' }));
  // Queued on any worker, sent by the one holding the jobs' lock.
  sender.kickElsewhere = (destination) => d.bus.emitElsewhere('federation-kick', destination);
  d.bus.on('federation-kick', (destination) => sender.kickHere(destination), () => {});
  d.jobs.register('federation sender', sender);
  d.jobs.register('federation room events', roomEventsToFederation(d.outbox, sender, d.reader, config.serverName, log.child({ component: 'federation-outbox' })));
  let pruneTimer: NodeJS.Timeout | undefined;
  d.jobs.register('federation inbound transactions', {
    start: () => {
      pruneTimer = setInterval(() => { queue.pruneInbound(Date.now() - INBOUND_TXN_KEEP_MS).catch(() => {}); }, 3600_000);
      pruneTimer.unref();
    },
    stop: () => clearInterval(pruneTimer),
  });

  const remote = new RemoteQueries(client, sender);
  d.keys.remote = remote;
  d.toDevice.remote = (sender_, type, messageId, byServer) => remote.toDevice(sender_, type, messageId, byServer);
  d.profiles.remote = { isRemote: (u) => !u.endsWith(`:${config.serverName}`), get: (u) => remote.profile(u) };
  d.directory.remote = (server, q) => remote.publicRooms(server, q);
  d.media.remote = new RemoteMediaFetcher(client, config.maxUploadBytes);
  const outboundEdus = new OutboundEdus(d.reader, sender, config.serverName, log.child({ component: 'federation-edus' }));
  d.typing.onTyping = (roomId, userId, typing, timeoutMs) => outboundEdus.typing(roomId, userId, typing, timeoutMs);
  d.receipts.onReadReceipt = (userId, roomId, eventId, threadId) => outboundEdus.readReceipt(userId, roomId, eventId, threadId);
  d.keys.onLocalDeviceChange = (change) => outboundEdus.deviceChange(change);
  d.onRoomMembership((roomId) => outboundEdus.roomMembershipChanged(roomId));
  d.presence.onChange = (userId, presence, roomIds, statusMsg) => outboundEdus.presence(userId, presence, roomIds, statusMsg);
  d.crossSigning.onPublicKeysChanged = (userId, update) => outboundEdus.signingKeyUpdate(userId, update);

  // Rooms over federation: received PDUs checked and persisted through the room engine; our users
  // joining, inviting and leaving in rooms of other servers.
  const roomFederation = new RoomFederation(client, keyRing, d.rooms.engine, d.reader, config.serverName, d.serverKeys, log.child({ component: 'federation-rooms' }));
  d.rooms.remote = roomFederation;
  let intake: RemotePduIntake = roomFederation;
  const pduIntake: RemotePduIntake = { receiveRemotePdus: (origin, pdus) => intake.receiveRemotePdus(origin, pdus) };
  // Friend requests: ours go to the target's server as the friend EDU (queued, durable, retried);
  // theirs are applied by the friends service and pay the limits a local request pays.
  if (d.friends) {
    d.friends.remote = {
      allows: (server) => client.allows(server),
      queue: async (trx, destination, content) => { await sender.queueEdusIn(trx, [{ destination, edu: { edu_type: FRIEND_REQUEST_EDU, content: { ...content } } }]); },
      kick: (destination) => sender.kick(destination),
    };
  }
  const edus = new EduHandler({
    toDevice: d.toDevice, keys: d.keys, typing: d.typing, receipts: d.receipts, presence: d.presence,
    ...(d.friends ? { friends: d.friends } : {}),
    payFriendRequest: async (from, to) => {
      await routes.limits.check('friend_requests', from);
      await routes.limits.check('invites_per_user', to);
    },
  }, log.child({ component: 'federation-edus' }));
  const transactions = new InboundTransactions(queue, edus, pduIntake, log.child({ component: 'federation-inbound' }));
  // A request from a server says it is up: its back-off ends (looked at once per origin every few seconds).
  const lastHeard = new Map<string, number>();
  const auth = new RequestAuthenticator(keyRing, config.serverName, (origin) => client.allows(origin), (origin) => {
    const now = Date.now();
    if (now - (lastHeard.get(origin) ?? 0) < HEARD_FROM_EVERY_MS) return;
    if (lastHeard.size >= 10_000) lastHeard.clear();
    lastHeard.set(origin, now);
    sender.destinationUp(origin).catch((err) => log.warn({ err, origin }, 'destination state not updated'));
  });
  federationMediaRoutes(routes, auth, d.media, config.serverName);
  roomFederationRoutes(routes, { serverName: config.serverName, auth, rooms: roomFederation, engine: d.rooms.engine, reader: d.reader, serverKeys: d.serverKeys,
    forward: (pdu, destinations) => sender.queueRoomEventsForDestinations([pdu], destinations) });
  federationRoutes(routes, { serverName: config.serverName, version: d.version, keyRing, auth, transactions, keys: d.keys, profiles: d.profiles, rooms: d.rooms, directory: d.directory });
  return {
    client, sender,
    setPduIntake: (i) => { intake = i; },
    close: () => client.close(),
  };
}
