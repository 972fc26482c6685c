import type { Logger } from 'pino';
import type { Routes } from './http/app.ts';
import type { Config } from './config.ts';
import type { Db } from './storage/db.ts';
import type { RoomService } from './rooms/service.ts';
import type { RoomReader } from './rooms/reader.ts';
import type { AccountDataStore } from './accountdata/store.ts';
import type { StreamTracker } from './storage/stream.ts';
import type { ProfileStore } from './profiles/store.ts';
import type { AccountService } from './accounts/service.ts';
import { PushRulesService } from './push/service.ts';
import { pushRoutes } from './push/routes.ts';
import { SearchStore } from './search/store.ts';
import { SearchService } from './search/service.ts';
import { searchRoutes } from './search/routes.ts';
import { RelationsStore } from './relations/store.ts';
import { RelationsService } from './relations/service.ts';
import { relationRoutes } from './relations/routes.ts';
import { DirectoryStore } from './directory/store.ts';
import { DirectoryService } from './directory/service.ts';
import { directoryRoutes } from './directory/routes.ts';
import { UpgradeStore } from './upgrades/store.ts';
import { UpgradeService } from './upgrades/service.ts';
import { upgradeRoutes } from './upgrades/routes.ts';
import { TimestampStore } from './misc/store.ts';
import { TimestampService } from './misc/service.ts';
import { miscRoutes } from './misc/routes.ts';

/** What the capabilities registered here may use. */
export interface Deps {
  config: Config;
  db: Db;
  rooms: RoomService;
  reader: RoomReader;
  accountData: AccountDataStore;
  tracker: StreamTracker;
  profiles: ProfileStore;
  accounts: AccountService;
  log: Logger;
}

/** Capabilities beyond the core: each registers its own routes. */
export function registerExtraRoutes(r: Routes, deps: Deps): void {
  const { config, db, rooms, reader, accountData, tracker, profiles, accounts } = deps;
  const log = deps.log.child({ component: 'extra' });
  const current = () => tracker.current();

  const push = new PushRulesService(accountData);
  // New accounts get their push rules at once, so that their first /sync carries m.push_rules.
  accounts.onRegistered('default push rules', async (userId) => {
    await push.writeDefaults(userId);
  });
  pushRoutes(r, push);

  searchRoutes(r, new SearchService(new SearchStore(db), rooms.store, reader, current));
  relationRoutes(r, new RelationsService(new RelationsStore(db), rooms.store, reader, current));
  directoryRoutes(r, new DirectoryService(new DirectoryStore(db), rooms, config.serverName));
  upgradeRoutes(r, new UpgradeService(rooms, new UpgradeStore(db), push, accountData, (u) => profiles.get(u), config.serverName, log));
  miscRoutes(r, new TimestampService(new TimestampStore(db), rooms.store, reader));
}
