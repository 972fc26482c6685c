// Builds the moderation capability (issue 9, mod9) and registers its routes; main.ts calls it once.
// Rooms admin, event reports, server notices, media admin, IP / CIDR bans, invite-spam controls,
// user redactions, policy lists. Every admin route is checked by admin/guard.ts and audited once.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { InvalidationBus } from '../coordination/invalidation.ts';
import type { Routes } from '../http/app.ts';
import type { Db } from '../storage/db.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { RoomService } from '../rooms/service.ts';
import type { MediaService } from '../media/service.ts';
import type { RoleLookup } from '../admin/guard.ts';
import { ModerationStore } from './store.ts';
import { RoomAdmin } from './rooms-admin.ts';
import { roomAdminRoutes } from './rooms-admin-routes.ts';
import { Reports } from './reports.ts';
import { reportRoutes } from './report-routes.ts';
import { describeModerationOperations } from './openapi.ts';
import { ServerNotices } from './notices.ts';
import { noticeRoutes } from './notice-routes.ts';
import { mediaAdminRoutes } from './media-admin-routes.ts';
import { IpBans } from './ip-bans.ts';
import { ipBanRoutes } from './ip-ban-routes.ts';
import { InviteGuard } from './invite-guard.ts';
import { PolicyLists, isPolicyRuleType } from './policy-lists.ts';
import { UserRedactions } from './redact-user.ts';
import { redactUserRoutes } from './redact-user-routes.ts';

export interface ModerationDeps {
  routes: Routes;
  db: Db;
  config: Config;
  bus: InvalidationBus;
  rooms: RoomService;
  reader: RoomReader;
  media: MediaService;
  roles: RoleLookup;
  accounts: {
    ensureSystemAccount(localpart: string, displayname: string): Promise<string>;
    createdTs(userId: string): Promise<number | undefined>;
    registrationChecks: Array<(userId: string) => Promise<void>>;
  };
  setTag: (userId: string, roomId: string, tag: string, content: Record<string, unknown>) => Promise<void>;
  userExists: (userId: string) => Promise<boolean>;
  currentPosition: () => number;
  log: Logger;
}

export interface Moderation {
  ipBans: IpBans;
  roomAdmin: RoomAdmin;
  /** Waits for the background deletions and redactions of this worker. */
  drain(): Promise<void>;
}

export async function setupModeration(d: ModerationDeps): Promise<Moderation> {
  const { routes, config, bus, rooms, reader, log } = d;
  const serverName = config.serverName;
  const m = config.moderation;
  const store = new ModerationStore(d.db);

  // IP / CIDR bans: in memory on every worker, reloaded everywhere on a change.
  const ipBans = new IpBans(store, log.child({ component: 'ip-bans' }));
  await ipBans.reload();
  bus.on('ip-bans', () => void ipBans.reload(), () => void ipBans.reload());
  ipBans.changed = () => bus.emitElsewhere('ip-bans', '');
  ipBanRoutes(routes, ipBans);
  describeModerationOperations();

  // Rooms admin; a purged room leaves every member's cached memberships (/sync) on every worker.
  const roomAdmin = new RoomAdmin(rooms, reader, store, serverName, d.currentPosition, log.child({ component: 'rooms-admin' }));
  rooms.purged.subscribe(async ({ roomId, members }) => {
    for (const u of members) bus.emit('membership', u);
    await store.forgetNoticeRoom(roomId);
  });
  roomAdminRoutes(routes, roomAdmin, serverName);

  reportRoutes(routes, new Reports(store, reader, d.userExists));

  const notices = new ServerNotices({
    store, rooms, reader, serverName, roomName: m.noticesRoomName, log: log.child({ component: 'server-notices' }), userExists: d.userExists,
    systemAccount: () => d.accounts.ensureSystemAccount(m.noticesLocalpart, m.noticesRoomName),
    tag: (userId, roomId) => d.setTag(userId, roomId, 'm.server_notice', {}),
  });
  noticeRoutes(routes, notices);

  mediaAdminRoutes(routes, d.media, reader, serverName, d.userExists);

  const redactions = new UserRedactions(store, rooms, reader, serverName, log.child({ component: 'user-redactions' }));
  redactUserRoutes(routes, redactions, d.userExists);

  // Policy lists: reloaded on every worker when a rule of a followed room is persisted.
  const policies = new PolicyLists(m.policyRooms, reader, (alias) => rooms.aliases.resolve(alias), log.child({ component: 'policy-lists' }));
  if (policies.enabled) {
    await policies.reload();
    bus.on('policy-rules', () => void policies.reload(), () => void policies.reload());
    rooms.engine.onPersisted((events, roomId) => {
      if (events.some((e) => isPolicyRuleType(e.pdu.type) && e.pdu.state_key !== undefined)) {
        // A room of an alias created after start is found on this reload.
        if (policies.follows(roomId) || m.policyRooms.some((r) => r.startsWith('#'))) bus.emit('policy-rules', roomId);
      }
    });
    d.accounts.registrationChecks.push(async (userId) => policies.checkUser(userId));
  }

  // Joins, knocks and invites: blocked rooms, policy lists, invite-spam controls.
  const invites = new InviteGuard({
    minAccountAgeHours: m.inviteMinAccountAgeHours, requireSharedRoom: m.inviteRequireSharedRoom, action: m.inviteSpamAction, maxPerDay: m.inviteMaxPerDay,
  }, store, reader, (u) => d.accounts.createdTs(u), async (u) => !!(await d.roles.roleOf(u))?.permissions.includes('rooms.moderate'));
  rooms.membershipGates.push(async ({ kind, sender, roomId, target }) => {
    if (kind === 'join') {
      await roomAdmin.refuseBlocked(roomId);
      if (policies.enabled) { policies.checkRoom(roomId); policies.checkUser(target); }
      return 'allow';
    }
    // As Synapse: a blocked room takes no new members, invited or knocking either.
    await roomAdmin.refuseBlocked(roomId);
    if (policies.enabled) { policies.checkRoom(roomId); policies.checkUser(sender); policies.checkUser(target); }
    return invites.check(sender, target);
  });

  return {
    ipBans, roomAdmin,
    drain: async () => { await Promise.all([roomAdmin.idle(), redactions.idle()]); },
  };
}
