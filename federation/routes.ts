// GET  /_matrix/key/v2/server                          our signing keys, self-signed
// GET  /_matrix/key/v2/query/{serverName}              notary: one server's keys, co-signed
// POST /_matrix/key/v2/query                           notary: several servers' keys, co-signed
// GET  /_matrix/federation/v1/version                  server implementation and version
// GET  /_matrix/federation/v1/query/profile            a local user's profile (?user_id &field)
// GET  /_matrix/federation/v1/query/directory          a local alias's room (?room_alias)
// GET  /_matrix/federation/v1/user/devices/{userId}    a local user's devices and keys
// POST /_matrix/federation/v1/user/keys/query          local users' device and cross-signing keys
// POST /_matrix/federation/v1/user/keys/claim          local users' one-time keys
// GET  /_matrix/federation/v1/publicRooms              our published rooms (?limit ?since)
// POST /_matrix/federation/v1/publicRooms              the same, filtered
// PUT  /_matrix/federation/v1/send/{txnId}             a transaction of PDUs and EDUs
// Every /_matrix/federation request is authenticated (X-Matrix) before anything else is done.
import type { RouterContext } from '@koa/router';
import { z } from 'zod';
import type { Method, RouteOptions, Routes } from '../homeserver/http/app.ts';
import { body } from '../homeserver/http/body.ts';
import { MatrixError, notFound } from '../homeserver/http/errors.ts';
import { single } from '../homeserver/http/params.ts';
import { isValidRoomAlias, isValidServerName, isValidUserId, serverNameOf } from '../homeserver/protocol/identifiers.ts';
import type { KeyService } from '../homeserver/e2ee/keys.ts';
import type { ProfileService } from '../homeserver/profiles/service.ts';
import type { DirectoryService } from '../homeserver/directory/service.ts';
import type { RoomService } from '../homeserver/rooms/service.ts';
import type { KeyRing } from './key-ring.ts';
import type { RequestAuthenticator } from './request-auth.ts';
import type { InboundTransactions } from './transactions.ts';

const keyQuerySchema = z.object({
  server_keys: z.record(z.string(), z.record(z.string(), z.object({ minimum_valid_until_ts: z.number().int().optional() }).passthrough())),
}).passthrough();
const userKeysQuerySchema = z.object({ device_keys: z.record(z.string(), z.array(z.string())) }).passthrough();
const userKeysClaimSchema = z.object({ one_time_keys: z.record(z.string(), z.record(z.string(), z.string())) }).passthrough();
const publicRoomsSchema = z.object({
  limit: z.number().int().optional(),
  since: z.string().optional(),
  filter: z.object({ generic_search_term: z.string().optional(), room_types: z.array(z.string().nullable()).optional() }).passthrough().optional(),
  include_all_networks: z.boolean().optional(),
  third_party_instance_id: z.string().optional(),
}).passthrough();
const sendSchema = z.object({
  origin: z.string().optional(),
  origin_server_ts: z.number().int().optional(),
  pdus: z.array(z.unknown()),
  edus: z.array(z.unknown()).optional(),
}).passthrough();

/** A transaction of 50 PDUs (64 KiB each at most) and 100 EDUs fits (Synapse sends up to that). */
const MAX_TRANSACTION_BYTES = 8 * 1024 * 1024;

/** Servers one notary query may ask about. */
const MAX_NOTARY_SERVERS = 100;

export interface FederationRouteDeps {
  serverName: string;
  version: string;
  keyRing: KeyRing;
  auth: RequestAuthenticator;
  transactions: InboundTransactions;
  keys: KeyService;
  profiles: ProfileService;
  rooms: RoomService;
  directory: DirectoryService;
}

export function federationRoutes(r: Routes, d: FederationRouteDeps): void {
  /** An authenticated federation endpoint: the handler runs only for a verified origin. */
  const fed = (method: Method, path: string, handler: (ctx: RouterContext, origin: string) => Promise<unknown> | unknown, opts: RouteOptions = {}) =>
    r.raw(method, `/_matrix/federation${path}`, async (ctx) => handler(ctx, await d.auth.authenticate(ctx)), opts);
  const localUser = (raw: string | undefined): string => {
    if (!raw || !isValidUserId(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid user ID ${raw}`);
    if (serverNameOf(raw) !== d.serverName) throw new MatrixError(400, 'M_INVALID_PARAM', `${raw} is not a user of this server`);
    return raw;
  };

  r.raw('get', '/_matrix/key/v2/server', () => d.keyRing.ownKeys());
  // The deprecated /_matrix/key/v2/server/{keyId} form: the same answer.
  r.raw('get', '/_matrix/key/v2/server/:keyId', () => d.keyRing.ownKeys());
  r.raw('get', '/_matrix/key/v2/query/:serverName', async (ctx) => {
    const server = ctx.params.serverName!;
    if (!isValidServerName(server)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid server name ${server}`);
    const min = single(ctx, 'minimum_valid_until_ts');
    if (min !== undefined && !/^\d+$/.test(min)) throw new MatrixError(400, 'M_INVALID_PARAM', 'minimum_valid_until_ts must be a timestamp');
    return d.keyRing.query({ [server]: {} }, min === undefined ? undefined : Number(min));
  });
  r.raw('post', '/_matrix/key/v2/query', async (ctx) => {
    const b = body(ctx, keyQuerySchema);
    // Unauthenticated, and it may make us fetch: a bounded number of servers per request.
    if (Object.keys(b.server_keys).length > MAX_NOTARY_SERVERS) throw new MatrixError(400, 'M_LIMIT_EXCEEDED', `At most ${MAX_NOTARY_SERVERS} servers per key query`);
    for (const s of Object.keys(b.server_keys)) if (!isValidServerName(s)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid server name ${s}`);
    return d.keyRing.query(b.server_keys);
  });

  r.raw('get', '/_matrix/federation/v1/version', () => ({ server: { name: 'super-server', version: d.version } }));

  fed('get', '/v1/query/profile', async (ctx) => {
    const userId = localUser(single(ctx, 'user_id'));
    const field = single(ctx, 'field');
    if (field !== undefined && field !== 'displayname' && field !== 'avatar_url') throw new MatrixError(400, 'M_INVALID_PARAM', 'field must be displayname or avatar_url');
    const p = await d.profiles.get(userId);
    if (!p) throw notFound('Profile was not found');
    const out: Record<string, string> = {};
    if ((field === undefined || field === 'displayname') && p.displayname != null) out.displayname = p.displayname;
    if ((field === undefined || field === 'avatar_url') && p.avatar_url != null) out.avatar_url = p.avatar_url;
    return out;
  });

  fed('get', '/v1/query/directory', async (ctx) => {
    const alias = single(ctx, 'room_alias');
    if (!alias || !isValidRoomAlias(alias)) throw new MatrixError(400, 'M_INVALID_PARAM', 'room_alias must be a room alias');
    if (serverNameOf(alias) !== d.serverName) throw notFound('Room alias not found');
    const roomId = await d.rooms.resolveRoom(alias);
    return { room_id: roomId, servers: [d.serverName] };
  });

  fed('get', '/v1/user/devices/:userId', async (ctx) => d.keys.devicesForServer(localUser(ctx.params.userId)));

  fed('post', '/v1/user/keys/query', async (ctx) => {
    const b = body(ctx, userKeysQuerySchema);
    return d.keys.queryForServer(b.device_keys);
  });

  fed('post', '/v1/user/keys/claim', async (ctx) => {
    const b = body(ctx, userKeysClaimSchema);
    const res = await d.keys.claimLocal(b.one_time_keys);
    return { one_time_keys: res.one_time_keys };
  });

  fed('get', '/v1/publicRooms', async (ctx) => {
    const raw = single(ctx, 'limit');
    if (raw !== undefined && !/^\d+$/.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be a whole number');
    return d.directory.publicRooms({ limit: raw === undefined ? undefined : Number(raw), since: single(ctx, 'since') || undefined });
  });
  fed('post', '/v1/publicRooms', async (ctx) => {
    const b = body(ctx, publicRoomsSchema);
    return d.directory.publicRooms({ ...b, since: b.since || undefined });
  });

  fed('put', '/v1/send/:txnId', async (ctx, origin) => {
    const b = body(ctx, sendSchema);
    return d.transactions.receive(origin, ctx.params.txnId!, b);
  }, { maxBodyBytes: MAX_TRANSACTION_BYTES });
}
