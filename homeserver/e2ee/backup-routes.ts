// POST   /room_keys/version                         a new backup version
// GET    /room_keys/version[/{version}]             the current (or a named) version, with count and etag
// PUT    /room_keys/version/{version}               new auth_data for a version
// DELETE /room_keys/version[/{version}]             a version and its keys
// PUT    /room_keys/keys[/{roomId}[/{sessionId}]]   ?version  keys of the current version (the better key stays)
// GET    /room_keys/keys[/{roomId}[/{sessionId}]]   ?version
// DELETE /room_keys/keys[/{roomId}[/{sessionId}]]   ?version
import type { RouterContext } from '@koa/router';
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import { single } from '../http/params.ts';
import type { BackupService, RoomKeys } from './backup.ts';

const versionSchema = z.object({
  algorithm: z.string().min(1),
  auth_data: z.record(z.string(), z.unknown()),
  version: z.string().optional(),
}).passthrough();

const keyBackupData = z.object({
  first_message_index: z.number().int().nonnegative(),
  forwarded_count: z.number().int().nonnegative(),
  is_verified: z.boolean(),
  session_data: z.record(z.string(), z.unknown()),
}).passthrough();

const roomKeyBackup = z.object({ sessions: z.record(z.string(), keyBackupData) }).passthrough();
const allKeys = z.object({ rooms: z.record(z.string(), roomKeyBackup) }).passthrough();

function versionParam(ctx: RouterContext): string {
  const v = single(ctx, 'version');
  if (v === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: version');
  return v;
}

export function backupRoutes(r: Routes, backup: BackupService): void {
  r.client('post', '/room_keys/version', async (ctx) => {
    const b = body(ctx, versionSchema);
    return backup.createVersion(requester(ctx), b.algorithm, b.auth_data);
  }, { auth: true });

  r.client('get', '/room_keys/version', (ctx) => backup.getVersion(requester(ctx)), { auth: true });
  r.client('get', '/room_keys/version/:version', (ctx) => backup.getVersion(requester(ctx), ctx.params.version!), { auth: true });

  r.client('put', '/room_keys/version/:version', async (ctx) => {
    const b = body(ctx, versionSchema);
    await backup.updateVersion(requester(ctx), ctx.params.version!, b);
    return {};
  }, { auth: true });

  r.client('delete', '/room_keys/version', async (ctx) => {
    await backup.deleteVersion(requester(ctx));
    return {};
  }, { auth: true });
  r.client('delete', '/room_keys/version/:version', async (ctx) => {
    await backup.deleteVersion(requester(ctx), ctx.params.version!);
    return {};
  }, { auth: true });

  // Every level of keys is brought to the rooms → sessions shape.
  r.client('put', '/room_keys/keys', (ctx) => {
    const b = body(ctx, allKeys);
    return backup.putKeys(requester(ctx), versionParam(ctx), b.rooms as RoomKeys);
  }, { auth: true });
  r.client('put', '/room_keys/keys/:roomId', (ctx) => {
    const b = body(ctx, roomKeyBackup);
    return backup.putKeys(requester(ctx), versionParam(ctx), { [ctx.params.roomId!]: b } as RoomKeys);
  }, { auth: true });
  r.client('put', '/room_keys/keys/:roomId/:sessionId', (ctx) => {
    const b = body(ctx, keyBackupData);
    return backup.putKeys(requester(ctx), versionParam(ctx), { [ctx.params.roomId!]: { sessions: { [ctx.params.sessionId!]: b } } } as RoomKeys);
  }, { auth: true });

  r.client('get', '/room_keys/keys', (ctx) => backup.getKeys(requester(ctx), versionParam(ctx)), { auth: true });
  r.client('get', '/room_keys/keys/:roomId', (ctx) => backup.getKeys(requester(ctx), versionParam(ctx), ctx.params.roomId!), { auth: true });
  r.client('get', '/room_keys/keys/:roomId/:sessionId', (ctx) => backup.getKeys(requester(ctx), versionParam(ctx), ctx.params.roomId!, ctx.params.sessionId!), { auth: true });

  r.client('delete', '/room_keys/keys', (ctx) => backup.deleteKeys(requester(ctx), versionParam(ctx)), { auth: true });
  r.client('delete', '/room_keys/keys/:roomId', (ctx) => backup.deleteKeys(requester(ctx), versionParam(ctx), ctx.params.roomId!), { auth: true });
  r.client('delete', '/room_keys/keys/:roomId/:sessionId', (ctx) => backup.deleteKeys(requester(ctx), versionParam(ctx), ctx.params.roomId!, ctx.params.sessionId!), { auth: true });
}
