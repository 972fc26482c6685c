import type { Context } from 'koa';
import type { Logger } from 'pino';

/** Who made an authenticated request. */
export interface Requester {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  isAdmin: boolean;
  tokenId: number;
}

export function requester(ctx: Context): Requester {
  return ctx.state.requester as Requester;
}

export function logger(ctx: Context): Logger {
  return ctx.state.log as Logger;
}
