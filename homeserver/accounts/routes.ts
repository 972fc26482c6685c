// POST   /register                                            create an account (user-interactive auth; ?kind=guest refused)
// GET    /register/available ?username                        is a username free
// GET    /register/m.login.registration_token/validity (v1)   is a registration token usable
// GET    /login                                               login flows (m.login.password)
// POST   /login                                               log in with a password
// POST   /refresh (v3, v1)                                    rotate a refresh token
// POST   /logout                                              end this device's session
// POST   /logout/all                                          end every session of the user
// GET    /account/whoami                                      who this token is
// POST   /account/password                                    change the password (user-interactive auth; without a token: reset by e-mail)
// POST   /account/deactivate                                  deactivate the account (user-interactive auth)
// GET    /devices                                             the user's devices
// GET    /devices/{deviceId}                                  one device
// PUT    /devices/{deviceId}                                  rename a device
// DELETE /devices/{deviceId}                                  delete a device (user-interactive auth)
// POST   /delete_devices                                      delete several devices (user-interactive auth)
// GET    /_synapse/admin/v1/register                          a nonce for shared-secret registration
// POST   /_synapse/admin/v1/register                          shared-secret registration (the first admin)
import { LocalState, type SharedState } from '../coordination/shared-state.ts';
import { createHmac } from 'node:crypto';
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body, optionalBody, validate } from '../http/body.ts';
import { requester, type Requester } from '../http/context.ts';
import { MatrixError, forbidden, notFound } from '../http/errors.ts';
import type { Config } from '../config.ts';
import type { AccountService } from './service.ts';
import type { Flow } from './uia.ts';
import { safeEqual } from './tokens.ts';
import type { ValidatedEmail } from './threepids.ts';

const PASSWORD_FLOWS: Flow[] = [['m.login.password']];
const EMAIL_FLOWS: Flow[] = [['m.login.email.identity']];

const registerSchema = z.object({
  username: z.string().optional(),
  password: z.string().optional(),
  device_id: z.string().optional(),
  initial_device_display_name: z.string().optional(),
  inhibit_login: z.boolean().optional(),
  refresh_token: z.boolean().optional(),
  auth: z.record(z.string(), z.unknown()).optional(),
});

const loginSchema = z.object({
  type: z.string(),
  identifier: z.object({ type: z.string(), user: z.string().optional(), medium: z.string().optional(), address: z.string().optional() }).passthrough().optional(),
  user: z.string().optional(),
  medium: z.string().optional(),
  address: z.string().optional(),
  password: z.string().optional(),
  device_id: z.string().optional(),
  initial_device_display_name: z.string().optional(),
  refresh_token: z.boolean().optional(),
});

export function accountRoutes(r: Routes, accounts: AccountService, config: Config, shared: SharedState = new LocalState()): void {
  const registrationFlows = (): Flow[] =>
    config.registration === 'token' ? [['m.login.registration_token']] : config.registration === 'email' ? EMAIL_FLOWS : [['m.login.dummy']];

  r.client('post', '/register', async (ctx) => {
    const kind = ctx.query.kind ?? 'user';
    if (kind === 'guest') throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'Guest access is disabled');
    if (kind !== 'user') throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid kind ${String(kind)}`);
    if (config.registration === 'closed') throw forbidden('Registration has been disabled');
    await r.limits.check('registration', ctx.ip, ctx, 0); // issue 7: a limited address opens no UIA session
    const b = body(ctx, registerSchema);
    // Username problems are reported before any auth stage, as Synapse does.
    const localpart = b.username !== undefined ? b.username.toLowerCase() : undefined;
    if (localpart !== undefined) await accounts.checkUsername(localpart);
    if (b.password !== undefined) {
      accounts.checkPasswordShape(b.password);
      accounts.checkPasswordPolicy(b.password, localpart);
    }
    const { params } = await accounts.interactiveAuth(b as Record<string, unknown>, registrationFlows(), { emailPurpose: 'register' });
    if (b.password === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: password');
    await r.limits.check('registration', ctx.ip, ctx); // issue 7: paid by the step that creates the account
    return accounts.register({
      localpart: localpart ?? (await accounts.generateLocalpart()),
      password: b.password,
      deviceId: b.device_id,
      deviceName: b.initial_device_display_name,
      inhibitLogin: b.inhibit_login,
      refreshToken: b.refresh_token,
      registrationToken: typeof params.registration_token === 'string' ? params.registration_token : undefined,
      email: config.registration === 'email' ? (params.email as ValidatedEmail) : undefined,
      ip: ctx.ip || null,
      awaitingApproval: config.registrationApproval, // issue 9: a moderator approves it first
    }).then((session) => {
      // issue 9 (as Synapse, MSC3866): the account exists, but waits; no token is handed out.
      if (config.registrationApproval) throw new MatrixError(403, 'M_USER_AWAITING_APPROVAL', 'This account is pending approval by a server administrator.', { user_id: session.user_id });
      return session;
    });
  });

  r.client('get', '/register/available', async (ctx) => {
    const username = ctx.query.username;
    if (typeof username !== 'string') throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: username');
    if (config.registration === 'closed') throw forbidden('Registration has been disabled');
    await accounts.checkUsername(username);
    return { available: true };
  });

  r.client('get', '/register/m.login.registration_token/validity', async (ctx) => {
    const token = ctx.query.token;
    if (typeof token !== 'string') throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: token');
    if (config.registration !== 'token') throw forbidden('Registration tokens are not enabled');
    return { valid: await accounts.registrationTokenValid(token) };
  }, {}, ['v1']);

  r.client('get', '/login', () => ({ flows: [{ type: 'm.login.password' }] }));

  r.client('post', '/login', async (ctx) => {
    const b = body(ctx, loginSchema);
    if (b.type !== 'm.login.password') throw new MatrixError(400, 'M_UNKNOWN', `Unknown login type ${b.type}`);
    let who: string | undefined;
    // An e-mail address bound to an account (m.id.thirdparty, or the deprecated medium/address form).
    const byThreepid = async (medium: unknown, address: unknown) => {
      const userId = typeof medium === 'string' && typeof address === 'string' ? await accounts.userIdForThreepid(medium, address) : undefined;
      if (!userId) throw forbidden('Invalid username or password');
      return userId;
    };
    if (b.identifier) {
      if (b.identifier.type === 'm.id.phone') throw forbidden('Invalid username or password'); // no phone numbers here
      if (b.identifier.type === 'm.id.thirdparty') who = await byThreepid(b.identifier.medium, b.identifier.address);
      else if (b.identifier.type !== 'm.id.user') throw new MatrixError(400, 'M_UNKNOWN', `Unknown login identifier type ${b.identifier.type}`);
      else who = b.identifier.user;
    } else if (b.user === undefined && b.medium !== undefined) {
      who = await byThreepid(b.medium, b.address);
    } else who = b.user;
    if (who === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: identifier.user');
    if (b.password === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: password');
    const password = b.password;
    return r.limits.login(ctx, who, () => accounts.login(who, password, b.device_id, b.initial_device_display_name, b.refresh_token ?? false, ctx.ip || null)); // issue 7
  });

  r.client('post', '/refresh', async (ctx) => {
    const b = body(ctx, z.object({ refresh_token: z.string() }));
    return accounts.refresh(b.refresh_token);
  }, {}, ['v3', 'v1']);

  r.client('post', '/logout', async (ctx) => {
    const me = requester(ctx);
    await accounts.deleteDevices(me.userId, [me.deviceId]);
    return {};
  }, { auth: true, allowLocked: true });

  r.client('post', '/logout/all', async (ctx) => {
    await accounts.deleteDevices(requester(ctx).userId, 'all');
    return {};
  }, { auth: true, allowLocked: true });

  r.client('get', '/account/whoami', (ctx) => {
    const me = requester(ctx);
    return { user_id: me.userId, device_id: me.deviceId, is_guest: me.isGuest };
  }, { auth: true });

  r.client('post', '/account/password', async (ctx) => {
    const b = body(ctx, z.object({ new_password: z.string(), logout_devices: z.boolean().optional(), auth: z.record(z.string(), z.unknown()).optional() }));
    accounts.checkPasswordShape(b.new_password);
    const me = ctx.state.requester as Requester | undefined;
    if (!me) {
      // No access token: a forgotten password, reset by proving an e-mail address of the account.
      if (!accounts.threepids?.canMail) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
      const { params } = await accounts.interactiveAuth(b as Record<string, unknown>, EMAIL_FLOWS, {
        emailPurpose: 'password',
        beforeDone: async (p) => { await accounts.checkResetPassword(p.email as ValidatedEmail, b.new_password); },
      });
      await accounts.resetPassword(params.email as ValidatedEmail, b.new_password, b.logout_devices ?? true);
      return {};
    }
    accounts.checkPasswordPolicy(b.new_password, accounts.localpartOf(me.userId) ?? undefined);
    await accounts.interactiveAuth(b as Record<string, unknown>, PASSWORD_FLOWS, { userId: me.userId });
    await accounts.changePassword(me.userId, b.new_password, b.logout_devices ?? true, me.deviceId);
    return {};
  }, { auth: 'optional' });

  r.client('post', '/account/deactivate', async (ctx) => {
    const me = requester(ctx);
    const b = optionalBody(ctx);
    await accounts.interactiveAuth(b, PASSWORD_FLOWS, { userId: me.userId });
    await accounts.deactivate(me.userId);
    return { id_server_unbind_result: 'no-support' };
  }, { auth: true });

  // Devices.
  const deviceJson = (d: { device_id: string; display_name: string | null; last_seen_ts: number | null; last_seen_ip: string | null }) => ({
    device_id: d.device_id,
    display_name: d.display_name ?? undefined,
    last_seen_ts: d.last_seen_ts ?? undefined,
    last_seen_ip: d.last_seen_ip ?? undefined,
  });

  r.client('get', '/devices', async (ctx) => ({ devices: (await accounts.devices(requester(ctx).userId)).map(deviceJson) }), { auth: true });

  r.client('get', '/devices/:deviceId', async (ctx) => {
    const d = await accounts.device(requester(ctx).userId, ctx.params.deviceId!);
    if (!d) throw notFound('Device not found');
    return deviceJson(d);
  }, { auth: true });

  r.client('put', '/devices/:deviceId', async (ctx) => {
    const b = body(ctx, z.object({ display_name: z.string().max(100).optional() }), false);
    const me = requester(ctx);
    if (!(await accounts.device(me.userId, ctx.params.deviceId!))) throw notFound('Device not found');
    if (b.display_name !== undefined) await accounts.renameDevice(me.userId, ctx.params.deviceId!, b.display_name);
    return {};
  }, { auth: true });

  r.client('delete', '/devices/:deviceId', async (ctx) => {
    const me = requester(ctx);
    const b = optionalBody(ctx);
    if (!(await accounts.device(me.userId, ctx.params.deviceId!))) throw notFound('Device not found');
    await accounts.interactiveAuth(b, PASSWORD_FLOWS, { userId: me.userId });
    await accounts.deleteDevices(me.userId, [ctx.params.deviceId!]);
    return {};
  }, { auth: true });

  r.client('post', '/delete_devices', async (ctx) => {
    const me = requester(ctx);
    const b = body(ctx, z.object({ devices: z.array(z.string()), auth: z.record(z.string(), z.unknown()).optional() }));
    await accounts.interactiveAuth(b as Record<string, unknown>, PASSWORD_FLOWS, { userId: me.userId });
    await accounts.deleteDevices(me.userId, b.devices);
    return {};
  }, { auth: true });

  // Synapse-compatible shared-secret registration, for creating the first admin from a script.
  // Nonces are shared by every worker (in Redis with several): any worker may check one.
  r.raw('get', '/_synapse/admin/v1/register', async () => {
    if (!config.registrationSharedSecret) throw new MatrixError(400, 'M_UNKNOWN', 'Shared secret registration is not enabled');
    return { nonce: await shared.issueNonce('register', 60_000) };
  });

  r.raw('post', '/_synapse/admin/v1/register', async (ctx) => {
    const secret = config.registrationSharedSecret;
    if (!secret) throw new MatrixError(400, 'M_UNKNOWN', 'Shared secret registration is not enabled');
    const b = validate(
      z.object({ nonce: z.string(), username: z.string(), password: z.string(), mac: z.string(), admin: z.boolean().optional(), displayname: z.string().optional() }),
      optionalBody(ctx),
    );
    if (!(await shared.consumeNonce('register', b.nonce))) throw new MatrixError(400, 'M_UNKNOWN', 'unrecognised nonce');
    const mac = createHmac('sha1', secret)
      .update(`${b.nonce}\x00${b.username}\x00${b.password}\x00${b.admin ? 'admin' : 'notadmin'}`)
      .digest('hex');
    if (!safeEqual(mac, b.mac)) throw forbidden('HMAC incorrect');
    const localpart = b.username.toLowerCase();
    await accounts.checkUsername(localpart);
    accounts.checkPasswordShape(b.password);
    accounts.checkPasswordPolicy(b.password, localpart);
    return accounts.register({ localpart, password: b.password, isAdmin: b.admin ?? false, displayname: b.displayname, ip: ctx.ip || null });
  });
}
