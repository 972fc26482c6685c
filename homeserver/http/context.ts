import type { Context } from 'koa';
import type { Logger } from 'pino';

/** Who made an authenticated request. */
export interface Requester {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  isAdmin: boolean;
  tokenId: number;
  /** issue 9: suspended accounts read but do not send (accounts/enforcement.ts). */
  suspended?: boolean;
  /** issue 9: a shadow-banned account's sends are answered but not persisted (accounts/enforcement.ts). */
  shadowBanned?: boolean;
}

export function requester(ctx: Context): Requester {
  return ctx.state.requester as Requester;
}

export function logger(ctx: Context): Logger {
  return ctx.state.log as Logger;
}
