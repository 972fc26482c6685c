// GET    /_super/client/v1/friends                              the list: friends (with presence), requests, blocks, settings
// POST   /_super/client/v1/friends/requests                     send a request { user_id, message? }
// POST   /_super/client/v1/friends/requests/{userId}/accept     accept an incoming request
// POST   /_super/client/v1/friends/requests/{userId}/decline    decline an incoming request
// DELETE /_super/client/v1/friends/requests/{userId}            cancel one's outgoing request
// DELETE /_super/client/v1/friends/{userId}                     remove a friend
// PUT    /_super/client/v1/friends/blocks/{userId}              block a user
// DELETE /_super/client/v1/friends/blocks/{userId}              unblock
// PUT    /_super/client/v1/friends/settings                     { only_friends_dm: boolean }
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { requester } from '../http/context.ts';
import type { FriendService } from './service.ts';

const PREFIX = '/_super/client/v1/friends';

const requestSchema = z.object({ user_id: z.string().max(255), message: z.string().max(500).optional() }).passthrough();
const settingsSchema = z.object({ only_friends_dm: z.boolean() }).passthrough();

export function friendRoutes(r: Routes, friends: FriendService): void {
  const me = (ctx: Parameters<Parameters<Routes['raw']>[2]>[0]) => requester(ctx).userId;

  r.raw('get', PREFIX, async (ctx) => friends.list(me(ctx)), { auth: true });

  r.raw('post', `${PREFIX}/requests`, async (ctx) => {
    const b = body(ctx, requestSchema);
    // Paid like an invite: the sender's bucket, and the recipient's (a wave of requests at one user).
    await r.limits.check('friend_requests', me(ctx), ctx);
    await r.limits.check('invites_per_user', b.user_id, ctx);
    return friends.request(me(ctx), b.user_id, b.message);
  }, { auth: true });

  r.raw('post', `${PREFIX}/requests/:userId/accept`, async (ctx) => {
    await friends.accept(me(ctx), ctx.params.userId!);
    return {};
  }, { auth: true });

  r.raw('post', `${PREFIX}/requests/:userId/decline`, async (ctx) => {
    await friends.decline(me(ctx), ctx.params.userId!);
    return {};
  }, { auth: true });

  r.raw('delete', `${PREFIX}/requests/:userId`, async (ctx) => {
    await friends.cancel(me(ctx), ctx.params.userId!);
    return {};
  }, { auth: true });

  r.raw('put', `${PREFIX}/settings`, async (ctx) => {
    const b = body(ctx, settingsSchema);
    await friends.setOnlyFriendsDm(me(ctx), b.only_friends_dm);
    return {};
  }, { auth: true });

  r.raw('put', `${PREFIX}/blocks/:userId`, async (ctx) => {
    await friends.block(me(ctx), ctx.params.userId!);
    return {};
  }, { auth: true });

  r.raw('delete', `${PREFIX}/blocks/:userId`, async (ctx) => {
    await friends.unblock(me(ctx), ctx.params.userId!);
    return {};
  }, { auth: true });

  r.raw('delete', `${PREFIX}/:userId`, async (ctx) => {
    await friends.remove(me(ctx), ctx.params.userId!);
    return {};
  }, { auth: true });
}
