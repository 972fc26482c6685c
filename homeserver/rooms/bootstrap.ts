import type { Logger } from 'pino';
import { MatrixError } from '../http/errors.ts';
import type { AccountService } from '../accounts/service.ts';
import type { RoomService } from './service.ts';

/** The server's own account: creator of the rooms the server makes (the global room). */
export const SYSTEM_LOCALPART = '_server';

/**
 * Makes sure every auto-join room exists: a local alias that resolves to nothing gets a new public
 * room (the global room by default), created by the system account, as Synapse's
 * autocreate_auto_join_rooms does.
 */
export async function ensureAutoJoinRooms(rooms: RoomService, accounts: AccountService, serverName: string, aliases: string[], log: Logger): Promise<void> {
  const systemUser = await accounts.ensureSystemAccount(SYSTEM_LOCALPART, serverName);
  for (const alias of aliases) {
    if (!alias.endsWith(`:${serverName}`) || (await rooms.aliases.resolve(alias))) continue;
    const localpart = alias.slice(1, alias.indexOf(':'));
    const isGlobal = localpart === 'global';
    try {
      const { room_id } = await rooms.createRoom(systemUser, {
        preset: 'public_chat',
        visibility: 'public',
        room_alias_name: localpart,
        name: isGlobal ? 'Global' : localpart,
        topic: isGlobal ? `Everyone on ${serverName}` : undefined,
      });
      log.info({ alias, room_id }, 'created auto-join room');
    } catch (err) {
      // Another worker may have created it at the same moment.
      if (!(await rooms.aliases.resolve(alias))) throw err;
    }
  }
}

/**
 * Joins a new account to the auto-join rooms. A room that refuses the user (a 4xx: gone, not
 * public any more) is logged and skipped, as Synapse does; any other failure is thrown, so that
 * registration retries it or fails instead of leaving the account outside #global.
 */
export async function autoJoin(rooms: RoomService, userId: string, aliases: string[], log: Logger): Promise<void> {
  for (const alias of aliases) {
    try {
      await rooms.join(userId, alias);
    } catch (err) {
      if (!(err instanceof MatrixError) || err.status >= 500) throw err;
      log.warn({ err, alias, userId }, 'auto-join refused');
    }
  }
}
