// POST   /register/email/requestToken              mail a validation link for registering with an address
// POST   /account/3pid/email/requestToken          mail a validation link for adding an address to an account
// POST   /account/password/email/requestToken      mail a validation link for resetting a password
// GET    /_synapse/client/email/submit_token ?token ?client_secret ?sid    the link in the mail
// GET    /account/3pid                             the account's addresses
// POST   /account/3pid/add                         bind a validated address (user-interactive auth)
// POST   /account/3pid/delete                      unbind an address
import { z } from 'zod';
import type { Handler, Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { MatrixError, forbidden } from '../http/errors.ts';
import type { Config } from '../config.ts';
import type { AccountService } from './service.ts';
import { SUBMIT_TOKEN_PATH } from './threepids.ts';
import type { ValidationPurpose } from './threepid-store.ts';

const requestTokenSchema = z.object({
  client_secret: z.string(),
  email: z.string().max(254),
  send_attempt: z.number().int().min(0).max(2 ** 31 - 1),
  next_link: z.string().optional(),
  id_server: z.string().optional(),
  id_access_token: z.string().optional(),
});

const PASSWORD_FLOWS = [['m.login.password']];

export function threepidRoutes(r: Routes, accounts: AccountService, config: Config): void {
  const requestToken = (purpose: ValidationPurpose): Handler => async (ctx) => {
    const b = body(ctx, requestTokenSchema);
    // As Synapse's rc_3pid_validation: per client address and per e-mail address (mail is not free).
    await r.limits.check('threepid_validation', ctx.ip, ctx);
    await r.limits.check('threepid_validation', `email:${b.email.toLowerCase()}`, ctx);
    return accounts.email.requestToken(purpose, { clientSecret: b.client_secret, email: b.email, sendAttempt: b.send_attempt });
  };

  r.client('post', '/register/email/requestToken', async (ctx) => {
    // Only where an address can register: REGISTRATION=email (one account per address).
    if (config.registration !== 'email') throw new MatrixError(403, 'M_THREEPID_DENIED', 'Registration by e-mail is not enabled');
    return requestToken('register')(ctx);
  });
  r.client('post', '/account/3pid/email/requestToken', requestToken('add'));
  r.client('post', '/account/password/email/requestToken', requestToken('password'));

  r.raw('get', SUBMIT_TOKEN_PATH, async (ctx) => {
    const { token, client_secret: clientSecret, sid } = ctx.query;
    const ok = typeof token === 'string' && typeof clientSecret === 'string' && typeof sid === 'string' && (await accounts.email.submitToken(sid, clientSecret, token));
    ctx.type = 'text/html; charset=utf-8';
    ctx.set('Cache-Control', 'no-store');
    ctx.status = ok ? 200 : 400;
    ctx.body = page(ok
      ? 'Your e-mail address has been validated. Return to your Matrix client to continue.'
      : 'This link is invalid or has expired. Ask your Matrix client to send a new one.');
  });

  r.client('get', '/account/3pid', async (ctx) => ({
    threepids: (await (accounts.threepids?.list(requester(ctx).userId) ?? Promise.resolve([]))).map((t) => ({
      medium: t.medium, address: t.address, validated_at: Number(t.validated_at), added_at: Number(t.added_at),
    })),
  }), { auth: true });

  r.client('post', '/account/3pid/add', async (ctx) => {
    const me = requester(ctx);
    const b = body(ctx, z.object({ client_secret: z.string(), sid: z.string(), auth: z.record(z.string(), z.unknown()).optional() }));
    await accounts.interactiveAuth(b as Record<string, unknown>, PASSWORD_FLOWS, { userId: me.userId });
    const email = await accounts.email.validated({ sid: b.sid, clientSecret: b.client_secret }, 'add');
    await accounts.addEmail(me.userId, email);
    return {};
  }, { auth: true });

  r.client('post', '/account/3pid/delete', async (ctx) => {
    const me = requester(ctx);
    const b = body(ctx, z.object({ medium: z.enum(['email', 'msisdn']), address: z.string(), id_server: z.string().optional() }));
    if (me.isGuest) throw forbidden('Guests have no third-party identifiers');
    await accounts.threepids?.unbind(me.userId, b.medium, b.address);
    return { id_server_unbind_result: 'no-support' };
  }, { auth: true });
}

function page(message: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>E-mail validation</title></head><body><p>${message}</p></body></html>`;
}
