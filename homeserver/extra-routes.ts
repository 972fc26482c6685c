import type { Routes } from './http/app.ts';
import type { Config } from './config.ts';
import type { Db } from './storage/db.ts';
import type { RoomService } from './rooms/service.ts';
import type { RoomReader } from './rooms/reader.ts';
import type { AccountDataStore } from './accountdata/store.ts';
import type { StreamTracker } from './storage/stream.ts';
import type { ProfileStore } from './profiles/store.ts';
import type { AccountService } from './accounts/service.ts';

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
}

/** Capabilities beyond the core: each registers its own routes. */
export function registerExtraRoutes(_r: Routes, _deps: Deps): void {}
