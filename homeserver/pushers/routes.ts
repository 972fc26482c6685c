// GET    /pushers        the requester's pushers
// POST   /pushers/set    create or update a pusher (kind "http"), or delete it (kind null)
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, validate } from '../http/body.ts';
import { requester } from '../http/context.ts';
import type { ClientPusher, PusherService } from './service.ts';

/** Enough to find the pusher: all a deletion (kind null) needs. */
const keySchema = z.object({ kind: z.string().nullable(), app_id: z.string(), pushkey: z.string() }).passthrough();

const setSchema = z.object({
  kind: z.string(),
  app_id: z.string(),
  pushkey: z.string(),
  app_display_name: z.string(),
  device_display_name: z.string(),
  lang: z.string(),
  data: z.record(z.string(), z.unknown()),
  profile_tag: z.string().optional(),
  append: z.boolean().optional(),
});

export function pusherRoutes(r: Routes, pushers: PusherService): void {
  r.client('get', '/pushers', async (ctx): Promise<{ pushers: ClientPusher[] }> => ({ pushers: await pushers.list(requester(ctx).userId) }), { auth: true });

  r.client('post', '/pushers/set', async (ctx) => {
    const me = requester(ctx);
    const raw = jsonBody(ctx);
    const key = validate(keySchema, raw);
    if (key.kind === null) {
      await pushers.remove(me.userId, key.app_id, key.pushkey);
      return {};
    }
    const b = validate(setSchema, raw);
    await pushers.set(me.userId, me.deviceId, {
      kind: b.kind,
      app_id: b.app_id,
      pushkey: b.pushkey,
      app_display_name: b.app_display_name,
      device_display_name: b.device_display_name,
      lang: b.lang,
      data: b.data,
      profile_tag: b.profile_tag ?? null,
      append: b.append ?? false,
    });
    return {};
  }, { auth: true });
}
