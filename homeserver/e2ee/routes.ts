// POST /keys/upload                          device keys, one-time keys, fallback keys
// POST /keys/query                           device and cross-signing keys of users
// POST /keys/claim                           one one-time key (else the fallback key) per device
// GET  /keys/changes ?from ?to               whose device lists changed between two sync tokens
// POST /keys/device_signing/upload           cross-signing keys (user-interactive auth to replace them)
// POST /keys/signatures/upload               signatures over own devices, own master key, others' master keys
// PUT  /sendToDevice/{eventType}/{txnId}     to-device messages (`*`: every device of a user)
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body, optionalBody, validate } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { single } from '../http/params.ts';
import type { RoomReader } from '../rooms/reader.ts';
import type { StreamTracker } from '../storage/stream.ts';
import { parseSyncToken } from '../storage/stream-token.ts';
import type { KeyService } from './keys.ts';
import type { CrossSigningService } from './cross-signing.ts';
import type { ToDeviceService } from './to-device.ts';

const object = z.record(z.string(), z.unknown());

const uploadSchema = z.object({
  device_keys: object.optional(),
  one_time_keys: object.optional(),
  fallback_keys: object.optional(),
}).passthrough();

const querySchema = z.object({
  device_keys: z.record(z.string(), z.array(z.string())),
  timeout: z.number().int().nonnegative().optional(),
}).passthrough();

const claimSchema = z.object({
  one_time_keys: z.record(z.string(), z.record(z.string(), z.string())),
  timeout: z.number().int().nonnegative().optional(),
}).passthrough();

const signingSchema = z.object({
  master_key: object.optional(),
  self_signing_key: object.optional(),
  user_signing_key: object.optional(),
  auth: object.optional(),
}).passthrough();

const signaturesSchema = z.record(z.string(), z.record(z.string(), z.unknown()));

const sendToDeviceSchema = z.object({
  messages: z.record(z.string(), z.record(z.string(), object)),
}).passthrough();

/** Proves the requester (user-interactive auth, m.login.password); throws the 401 challenge until done. */
export type InteractiveAuth = (body: Record<string, unknown>, userId: string) => Promise<void>;

export function e2eeRoutes(r: Routes, keys: KeyService, crossSigning: CrossSigningService, toDevice: ToDeviceService, reader: RoomReader, tracker: StreamTracker, auth: InteractiveAuth): void {
  r.client('post', '/keys/upload', async (ctx) => {
    const b = body(ctx, uploadSchema, false);
    return keys.upload(requester(ctx), b);
  }, { auth: true });

  r.client('post', '/keys/query', async (ctx) => {
    const b = body(ctx, querySchema);
    return keys.query(requester(ctx), b.device_keys, b.timeout);
  }, { auth: true });

  r.client('post', '/keys/claim', async (ctx) => {
    const b = body(ctx, claimSchema);
    return keys.claim(b.one_time_keys, b.timeout);
  }, { auth: true });

  r.client('get', '/keys/changes', async (ctx) => {
    const me = requester(ctx);
    const fromRaw = single(ctx, 'from');
    const toRaw = single(ctx, 'to');
    if (fromRaw === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: from');
    if (toRaw === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: to');
    const from = parseSyncToken(fromRaw, 'from');
    const to = parseSyncToken(toRaw, 'to');
    const since = from.deviceLists || from.events;
    const upTo = Math.min(to.deviceLists || to.events, tracker.current());
    if (since >= upTo) return { changed: [], left: [] };
    return keys.listChanges(me, await reader.joinedRoomIds(me.userId), since, upTo);
  }, { auth: true });

  r.client('post', '/keys/device_signing/upload', async (ctx) => {
    const me = requester(ctx);
    const b = body(ctx, signingSchema);
    if (await crossSigning.signingUploadNeedsAuth(me, b)) {
      try {
        await auth(b, me.userId);
      } catch (err) {
        // The spec declares no UIA 401 for this endpoint: its challenge carries an errcode as every other error.
        if (err instanceof MatrixError && (err as { bare?: boolean }).bare) throw new MatrixError(401, 'M_UNAUTHORIZED', err.message, err.extra);
        throw err;
      }
    }
    await crossSigning.uploadSigningKeys(me, b);
    return {};
  }, { auth: true });

  r.client('post', '/keys/signatures/upload', async (ctx) => {
    const b = validate(signaturesSchema, optionalBody(ctx));
    return crossSigning.uploadSignatures(requester(ctx), b);
  }, { auth: true });

  r.client('put', '/sendToDevice/:eventType/:txnId', async (ctx) => {
    const b = body(ctx, sendToDeviceSchema);
    await toDevice.send(requester(ctx), ctx.params.eventType!, ctx.params.txnId!, b.messages);
    return {};
  }, { auth: true });
}
