// POST   /createRoom                                     a new room (preset, invites, initial state, alias)
// POST   /join/{roomIdOrAlias}, /rooms/{roomId}/join     join
// POST   /knock/{roomIdOrAlias}                          knock
// POST   /rooms/{roomId}/invite|leave|forget|kick|ban|unban   membership changes
// PUT    /rooms/{roomId}/send/{eventType}/{txnId}        send a message event
// PUT    /rooms/{roomId}/state/{eventType}[/{stateKey}]  send a state event
// GET    /rooms/{roomId}/state[/{eventType}[/{stateKey}]] current state (or as of leaving)
// PUT    /rooms/{roomId}/redact/{eventId}/{txnId}        redact
// GET    /rooms/{roomId}/event/{eventId}                 one event
// GET    /rooms/{roomId}/members, /joined_members        members
// GET    /joined_rooms                                   the user's rooms
// GET    /rooms/{roomId}/messages                        paginate the timeline
// GET    /rooms/{roomId}/context/{eventId}               events around one event
// GET|PUT|DELETE /directory/room/{alias}                 resolve, create, delete an alias
// GET    /rooms/{roomId}/aliases                         a room's local aliases
// GET|PUT /directory/list/room/{roomId}                  published in the room directory or not
import type { RouterContext } from '@koa/router';
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body, jsonBody } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import { isValidRoomAlias, isValidRoomId } from '../protocol/identifiers.ts';
import type { RoomService } from './service.ts';
import { parseLimit, type RoomReader } from './reader.ts';
import { parseFilterParam } from './filter.ts';
import { parsePaginationToken, parseToken } from '../storage/stream-token.ts';
import type { StreamTracker } from '../storage/stream.ts';
import { requiredLevelForEvent, userLevel, type PowerLevelsContent } from '../protocol/power-levels.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { EventRow } from './store.ts';
import { RoomLimits } from '../limits/room-limits.ts'; // issue 7 (limits7)
import { refuseIfSuspended, shadowEventId } from '../accounts/enforcement.ts'; // issue 9 (roles9)

/**
 * Bounds of createRoom's lists. The spec sets none; every entry is an event persisted inside the
 * request (2,000 invitees took 5.5 s in one request), so larger lists are refused (M_BAD_JSON)
 * and more users are invited afterwards through /invite.
 */
export const MAX_CREATE_INVITES = 100;
export const MAX_INITIAL_STATE = 100;

const createRoomSchema = z.object({
  visibility: z.enum(['public', 'private']).optional(),
  room_alias_name: z.string().optional(),
  name: z.string().optional(),
  topic: z.string().optional(),
  invite: z.array(z.string()).max(MAX_CREATE_INVITES).optional(),
  invite_3pid: z.array(z.unknown()).max(MAX_CREATE_INVITES).optional(),
  room_version: z.string().optional(),
  creation_content: z.record(z.string(), z.unknown()).optional(),
  initial_state: z.array(z.object({ type: z.string(), state_key: z.string().optional(), content: z.record(z.string(), z.unknown()) })).max(MAX_INITIAL_STATE).optional(),
  preset: z.enum(['private_chat', 'public_chat', 'trusted_private_chat']).optional(),
  is_direct: z.boolean().optional(),
  power_level_content_override: z.record(z.string(), z.unknown()).optional(),
}).passthrough();

const MEMBERSHIPS = new Set(['join', 'invite', 'knock', 'leave', 'ban']);

const reasonSchema = z.object({ reason: z.string().optional() }).passthrough();
const targetSchema = z.object({ user_id: z.string(), reason: z.string().optional() }).passthrough();

export function roomRoutes(r: Routes, rooms: RoomService, reader: RoomReader, tracker: StreamTracker, serverName: string): void {
  const roomLimits = new RoomLimits(r, reader, serverName); // issue 7 (limits7)
  const roomId = (raw: string | undefined): string => {
    if (!raw || !isValidRoomId(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room ID ${raw}`);
    return raw;
  };
  /** A suspended user may redact only their own events (spec v1.19, account suspension). */
  const refuseSuspendedRedaction = async (ctx: RouterContext, eventId: string | undefined): Promise<void> => {
    const me = requester(ctx);
    const target = eventId ? await reader.event(me, roomId(ctx.params.roomId), eventId).catch(() => undefined) : undefined;
    if (target?.sender !== me.userId) refuseIfSuspended(me);
  };

  r.client('post', '/createRoom', async (ctx) => {
    refuseIfSuspended(requester(ctx)); // issue 9 (roles9)
    const b = body(ctx, createRoomSchema);
    if (requester(ctx).shadowBanned) b.invite = []; // issue 9: a shadow-banned user's invites are dropped, silently
    await roomLimits.created(ctx, b.invite ?? []); // issue 7 (limits7)
    return rooms.createRoom(requester(ctx).userId, b);
  }, { auth: true });

  const joinHandler = async (ctx: Parameters<Parameters<Routes['client']>[2]>[0]) => {
    refuseIfSuspended(requester(ctx)); // issue 9 (roles9)
    const b = body(ctx, reasonSchema, false);
    const target = ctx.params.roomIdOrAlias ?? ctx.params.roomId!;
    await roomLimits.joined(ctx, target); // issue 7 (limits7)
    // issue 11: the servers to join a remote room through (`via`, formerly `server_name`).
    const via = [ctx.query.via, ctx.query.server_name].flat().filter((v): v is string => typeof v === 'string' && v.length > 0 && v.length <= 255);
    return { room_id: await rooms.join(requester(ctx).userId, target, b.reason, {}, via) };
  };
  r.client('post', '/join/:roomIdOrAlias', joinHandler, { auth: true });
  r.client('post', '/rooms/:roomId/join', joinHandler, { auth: true });

  r.client('post', '/knock/:roomIdOrAlias', async (ctx) => {
    refuseIfSuspended(requester(ctx)); // issue 9 (roles9)
    const b = body(ctx, reasonSchema, false);
    const via = [ctx.query.via, ctx.query.server_name].flat().filter((v): v is string => typeof v === 'string' && v.length > 0 && v.length <= 255);
    return { room_id: await rooms.knock(requester(ctx).userId, ctx.params.roomIdOrAlias!, b.reason, via) };
  }, { auth: true });

  r.client('post', '/rooms/:roomId/invite', async (ctx) => {
    refuseIfSuspended(requester(ctx)); // issue 9 (roles9)
    const b = body(ctx, targetSchema);
    if (requester(ctx).shadowBanned) return {}; // issue 9: a shadow-banned user's invite is dropped, silently
    await roomLimits.invited(ctx, roomId(ctx.params.roomId), [b.user_id]); // issue 7 (limits7)
    await rooms.invite(requester(ctx).userId, roomId(ctx.params.roomId), b.user_id, b.reason);
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/leave', async (ctx) => {
    const b = body(ctx, reasonSchema, false);
    await rooms.leave(requester(ctx).userId, roomId(ctx.params.roomId), b.reason);
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/forget', async (ctx) => {
    await rooms.forget(requester(ctx).userId, roomId(ctx.params.roomId));
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/kick', async (ctx) => {
    const b = body(ctx, targetSchema);
    await rooms.kick(requester(ctx).userId, roomId(ctx.params.roomId), b.user_id, b.reason);
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/ban', async (ctx) => {
    const b = body(ctx, targetSchema);
    await rooms.ban(requester(ctx).userId, roomId(ctx.params.roomId), b.user_id, b.reason);
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/unban', async (ctx) => {
    const b = body(ctx, targetSchema);
    await rooms.unban(requester(ctx).userId, roomId(ctx.params.roomId), b.user_id, b.reason);
    return {};
  }, { auth: true });

  r.client('put', '/rooms/:roomId/send/:eventType/:txnId', async (ctx) => {
    const content = jsonBody(ctx);
    // issue 9 (roles9): suspended users may still redact their own events; shadow-banned sends are not persisted.
    if (ctx.params.eventType !== 'm.room.redaction') refuseIfSuspended(requester(ctx));
    else if (requester(ctx).suspended) await refuseSuspendedRedaction(ctx, typeof content.redacts === 'string' ? content.redacts : undefined);
    await r.limits.check('message', requester(ctx).userId, ctx); // issue 7 (limits7)
    if (requester(ctx).shadowBanned) return { event_id: shadowEventId(requester(ctx), roomId(ctx.params.roomId), `send\x00${ctx.params.txnId}`) };
    const id = await rooms.send(requester(ctx), roomId(ctx.params.roomId), ctx.params.eventType!, content, ctx.params.txnId!);
    return { event_id: id };
  }, { auth: true });

  r.client('put', '/rooms/:roomId/state/:eventType{/:stateKey}', async (ctx) => {
    const content = jsonBody(ctx);
    refuseIfSuspended(requester(ctx)); // issue 9 (roles9)
    await r.limits.check('message', requester(ctx).userId, ctx); // issue 7 (limits7)
    if (requester(ctx).shadowBanned && ctx.params.eventType !== 'm.room.member') {
      return { event_id: shadowEventId(requester(ctx), roomId(ctx.params.roomId), `state\x00${ctx.params.eventType}\x00${ctx.params.stateKey ?? ''}\x00${JSON.stringify(content)}`) };
    }
    const id = await rooms.setState(requester(ctx), roomId(ctx.params.roomId), ctx.params.eventType!, ctx.params.stateKey ?? '', content);
    return { event_id: id };
  }, { auth: true });

  r.client('get', '/rooms/:roomId/state/:eventType{/:stateKey}', async (ctx) => {
    const ev = await reader.stateEvent(requester(ctx), roomId(ctx.params.roomId), ctx.params.eventType!, ctx.params.stateKey ?? '');
    return ctx.query.format === 'event' ? ev : ev.content;
  }, { auth: true });

  r.client('get', '/rooms/:roomId/state', async (ctx) => reader.state(requester(ctx), roomId(ctx.params.roomId)), { auth: true });

  r.client('put', '/rooms/:roomId/redact/:eventId/:txnId', async (ctx) => {
    const b = body(ctx, reasonSchema, false);
    if (requester(ctx).suspended) await refuseSuspendedRedaction(ctx, ctx.params.eventId); // issue 9: only their own events
    await roomLimits.redacting(ctx, roomId(ctx.params.roomId), ctx.params.eventId!); // issue 7 (limits7)
    if (requester(ctx).shadowBanned) return { event_id: shadowEventId(requester(ctx), roomId(ctx.params.roomId), `redact\x00${ctx.params.txnId}`) }; // issue 9
    const id = await rooms.redact(requester(ctx), roomId(ctx.params.roomId), ctx.params.eventId!, b.reason, ctx.params.txnId!);
    return { event_id: id };
  }, { auth: true });

  r.client('get', '/rooms/:roomId/event/:eventId', async (ctx) => reader.event(requester(ctx), roomId(ctx.params.roomId), ctx.params.eventId!), { auth: true });

  r.client('get', '/rooms/:roomId/members', async (ctx) => {
    const at = ctx.query.at === undefined ? undefined : parseToken(ctx.query.at, 'at').pos;
    const membership = typeof ctx.query.membership === 'string' ? ctx.query.membership : undefined;
    const notMembership = typeof ctx.query.not_membership === 'string' ? ctx.query.not_membership : undefined;
    for (const [name, value] of [['membership', membership], ['not_membership', notMembership]] as const) {
      if (value !== undefined && !MEMBERSHIPS.has(value)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: ${value}`);
    }
    return { chunk: await reader.members(requester(ctx), roomId(ctx.params.roomId), { at, membership, notMembership }) };
  }, { auth: true });

  r.client('get', '/rooms/:roomId/joined_members', async (ctx) => ({ joined: await reader.joinedMembers(requester(ctx), roomId(ctx.params.roomId)) }), { auth: true });

  r.client('get', '/joined_rooms', async (ctx) => ({ joined_rooms: await reader.joinedRoomIds(requester(ctx).userId) }), { auth: true });

  r.client('get', '/rooms/:roomId/messages', async (ctx) => {
    // v1.19 makes dir required (earlier versions defaulted to b).
    if (ctx.query.dir === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', "Missing dir: 'b' or 'f'");
    const dir = ctx.query.dir;
    if (dir !== 'b' && dir !== 'f') throw new MatrixError(400, 'M_INVALID_PARAM', "dir must be 'b' or 'f'");
    const from = ctx.query.from === undefined ? undefined : parsePaginationToken(ctx.query.from, 'from');
    const to = ctx.query.to === undefined ? undefined : parsePaginationToken(ctx.query.to, 'to');
    const filter = parseFilterParam(ctx.query.filter);
    const limit = parseLimit(ctx.query.limit, filter.limit ?? 10);
    const page = await reader.messages(requester(ctx), roomId(ctx.params.roomId), { from, to, dir, limit, filter, current: tracker.current() });
    // issue 11: paging back past what this server has: history from the room's other servers, then the page again.
    if (dir === 'b' && page.end === undefined && limit > 0 && rooms.remote && (await rooms.remote.backfill(roomId(ctx.params.roomId)))) {
      return reader.messages(requester(ctx), roomId(ctx.params.roomId), { from, to, dir, limit, filter, current: tracker.current() });
    }
    return page;
  }, { auth: true });

  r.client('get', '/rooms/:roomId/context/:eventId', async (ctx) => {
    const filter = parseFilterParam(ctx.query.filter);
    const limit = parseLimit(ctx.query.limit, 10, 100);
    return reader.context(requester(ctx), roomId(ctx.params.roomId), ctx.params.eventId!, limit, filter);
  }, { auth: true });

  // Aliases and the room directory.
  const aliasParam = (raw: string | undefined): string => {
    if (!raw || !isValidRoomAlias(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid room alias ${raw}`);
    return raw;
  };

  r.client('get', '/directory/room/:alias', async (ctx) => {
    const alias = aliasParam(ctx.params.alias);
    const rid = await rooms.aliases.resolve(alias);
    if (!rid) throw notFound(`Room alias ${alias} not found`);
    return { room_id: rid, servers: [alias.slice(alias.indexOf(':') + 1)] };
  });

  r.client('put', '/directory/room/:alias', async (ctx) => {
    const me = requester(ctx);
    const alias = aliasParam(ctx.params.alias);
    const b = body(ctx, z.object({ room_id: z.string() }));
    if (alias.slice(alias.indexOf(':') + 1) !== serverName) {
      throw new MatrixError(400, 'M_INVALID_PARAM', 'Room alias must be on this server');
    }
    await rooms.room(roomId(b.room_id));
    // As Synapse's require_membership_for_aliases (on by default): only members may name a room.
    await rooms.requireJoined(me.userId, b.room_id);
    if (!(await rooms.aliases.create(alias, b.room_id, me.userId))) throw new MatrixError(409, 'M_UNKNOWN', `Room alias ${alias} already exists`);
    return {};
  }, { auth: true });

  r.client('delete', '/directory/room/:alias', async (ctx) => {
    const me = requester(ctx);
    const alias = aliasParam(ctx.params.alias);
    const row = await rooms.aliases.get(alias);
    if (!row) throw notFound(`Room alias ${alias} not found`);
    if (row.creator !== me.userId && !me.isAdmin) {
      const m = await rooms.membershipOf(me.userId, row.room_id).catch(() => undefined);
      if (m?.membership !== 'join') throw forbidden('You may not delete this alias');
      // Synapse lets room moderators (who may change the canonical alias) delete aliases.
      if (!maySendState(await reader.visibleState(me.userId, row.room_id), me.userId, 'm.room.canonical_alias')) throw forbidden('You may not delete this alias');
    }
    await rooms.aliases.delete(alias);
    return {};
  }, { auth: true });

  r.client('get', '/rooms/:roomId/aliases', async (ctx) => {
    const me = requester(ctx);
    const id = roomId(ctx.params.roomId);
    await reader.visibleState(me.userId, id);
    return { aliases: await rooms.aliases.forRoom(id) };
  }, { auth: true });

  r.client('get', '/directory/list/room/:roomId', async (ctx) => {
    const { room } = await rooms.room(roomId(ctx.params.roomId)).catch(() => {
      throw notFound('Room not found');
    });
    return { visibility: room.published ? 'public' : 'private' };
  });

  r.client('put', '/directory/list/room/:roomId', async (ctx) => {
    const me = requester(ctx);
    const id = roomId(ctx.params.roomId);
    const b = body(ctx, z.object({ visibility: z.enum(['public', 'private']).optional() }), false);
    await rooms.room(id);
    const m = await rooms.membershipOf(me.userId, id);
    if (m?.membership !== 'join' && !me.isAdmin) throw forbidden('You are not in the room');
    if (!me.isAdmin) {
      // As Synapse: whoever may send state events in general (state_default) may publish the room.
      if (!maySendState(await reader.visibleState(me.userId, id), me.userId)) throw forbidden('You need to be a room moderator to publish the room');
    }
    await rooms.setPublished(id, (b.visibility ?? 'public') === 'public');
    return {};
  }, { auth: true });
}

/**
 * Whether the user's power level in this state allows sending a state event of `type` (without a
 * type: state_default), by the same rules as the auth rules (protocol/power-levels.ts).
 */
function maySendState(state: EventRow[], userId: string, type?: string): boolean {
  const content = (t: string) => {
    const row = state.find((s) => s.type === t && s.state_key === '');
    return row ? (JSON.parse(row.json) as { sender: string; content: Record<string, unknown> }) : undefined;
  };
  const pl = content('m.room.power_levels')?.content as PowerLevelsContent | undefined;
  const create = content('m.room.create');
  const version = state[0] ? getRoomVersion(state[0].room_version) : undefined;
  // '' names no event type, so it gets state_default.
  const needed = requiredLevelForEvent(pl, type ?? '', true);
  return userLevel(pl, userId, create, version) >= needed;
}
