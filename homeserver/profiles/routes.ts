// GET    /profile/{userId}                   displayname and avatar_url
// GET    /profile/{userId}/{keyName}         one field
// PUT    /profile/{userId}/{displayname|avatar_url}   change it; member events follow in the background
// PUT    /profile/{userId}/{keyName}         other keys: refused
// DELETE /profile/{userId}/{keyName}         clear a field
// POST   /user_directory/search              users who share a room or are in a public one
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body, jsonBody } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { ProfileService } from './service.ts';
import { refuseIfSuspended } from '../accounts/enforcement.ts'; // issue 9 (roles9)

const MAX_DISPLAYNAME = 256;
const MAX_AVATAR_URL = 1000;
/** The keyName grammar of the profile endpoints. */
const PROFILE_KEY = /^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$/;

export function profileRoutes(r: Routes, profiles: ProfileService): void {
  const userParam = (raw: string | undefined): string => {
    if (!raw || !isValidUserId(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid user ID ${raw}`);
    return raw;
  };
  const load = async (userId: string) => {
    const p = await profiles.get(userId);
    if (!p) throw notFound('Profile was not found');
    return p;
  };

  // issue 11: reading a profile may ask the user's server (remote users).
  const lookup = async (userId: string) => {
    const p = await profiles.lookup(userId);
    if (!p) throw notFound('Profile was not found');
    return p;
  };

  r.client('get', '/profile/:userId', async (ctx) => {
    const p = await lookup(userParam(ctx.params.userId));
    return { ...(p.displayname != null ? { displayname: p.displayname } : {}), ...(p.avatar_url != null ? { avatar_url: p.avatar_url } : {}) };
  }, { auth: 'optional' });

  for (const field of ['displayname', 'avatar_url'] as const) {
    r.client('get', `/profile/:userId/${field}`, async (ctx) => {
      const p = await lookup(userParam(ctx.params.userId));
      if (p[field] == null) throw notFound(`The user has no ${field}`);
      return { [field]: p[field] };
    }, { auth: 'optional' });

    r.client('put', `/profile/:userId/${field}`, async (ctx) => {
      const me = requester(ctx);
      refuseIfSuspended(me); // issue 9: a suspended user keeps their profile
      const userId = userParam(ctx.params.userId);
      if (userId !== me.userId && !me.isAdmin) throw forbidden(`Cannot set another user's ${field}`);
      const b = jsonBody(ctx);
      if (!(field in b)) throw new MatrixError(400, 'M_MISSING_PARAM', `Missing key '${field}'`);
      const raw = b[field];
      if (raw !== undefined && raw !== null && typeof raw !== 'string') throw new MatrixError(400, 'M_BAD_JSON', `${field} must be a string`);
      const max = field === 'displayname' ? MAX_DISPLAYNAME : MAX_AVATAR_URL;
      if (typeof raw === 'string' && raw.length > max) throw new MatrixError(400, 'M_TOO_LARGE', `${field} is too long (max ${max})`);
      if (field === 'avatar_url' && typeof raw === 'string' && raw !== '' && !raw.startsWith('mxc://')) {
        throw new MatrixError(400, 'M_INVALID_PARAM', 'avatar_url must be an mxc:// URI');
      }
      await load(userId);
      // The member events of the user's rooms follow off the request path.
      await profiles.change(userId, field, typeof raw === 'string' && raw !== '' ? raw : null);
      return {};
    }, { auth: true });
  }

  // Other profile keys (spec v1.16 extended profiles): only displayname and avatar_url are stored,
  // as the m.profile_fields capability says; other valid keys are absent and may not be set.
  const keyParam = (raw: string | undefined): string => {
    if (!raw || !PROFILE_KEY.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid profile key.');
    if (Buffer.byteLength(raw) > 255) throw new MatrixError(400, 'M_KEY_TOO_LARGE', 'Profile key is over 255 bytes');
    return raw;
  };

  r.client('get', '/profile/:userId/:keyName', async (ctx) => {
    const key = keyParam(ctx.params.keyName);
    await load(userParam(ctx.params.userId));
    throw notFound(`The user has no ${key}`);
  }, { auth: 'optional' });

  r.client('put', '/profile/:userId/:keyName', async (ctx) => {
    const me = requester(ctx);
    const userId = userParam(ctx.params.userId);
    const key = keyParam(ctx.params.keyName);
    if (userId !== me.userId && !me.isAdmin) throw forbidden(`Cannot set another user's ${key}`);
    throw forbidden(`Profile field ${key} cannot be set on this server`);
  }, { auth: true });

  r.client('delete', '/profile/:userId/:keyName', async (ctx) => {
    const me = requester(ctx);
    const userId = userParam(ctx.params.userId);
    const key = keyParam(ctx.params.keyName);
    if (userId !== me.userId && !me.isAdmin) throw forbidden(`Cannot delete another user's ${key}`);
    if (key === 'displayname' || key === 'avatar_url') {
      const p = await load(userId);
      if (p[key] != null) {
        await profiles.change(userId, key, null);
      }
    }
    return {};
  }, { auth: true });

  r.client('post', '/user_directory/search', async (ctx) => {
    const b = body(ctx, z.object({ search_term: z.string(), limit: z.number().int().min(0).optional() }));
    return profiles.search(requester(ctx).userId, b.search_term, Math.min(b.limit ?? 10, 50));
  }, { auth: true });
}
