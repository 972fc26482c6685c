// GET    /pushrules/                                  all rule sets ({global})
// GET    /pushrules/global/                           the global rule set
// GET    /pushrules/global/{kind}/                    the rules of one kind (as Synapse)
// GET    /pushrules/global/{kind}/{ruleId}            one rule
// PUT    /pushrules/global/{kind}/{ruleId}            add or change a user-defined rule (?before, ?after)
// DELETE /pushrules/global/{kind}/{ruleId}            remove a user-defined rule
// GET    /pushrules/global/{kind}/{ruleId}/enabled    {enabled}
// PUT    /pushrules/global/{kind}/{ruleId}/enabled    {enabled}
// GET    /pushrules/global/{kind}/{ruleId}/actions    {actions}
// PUT    /pushrules/global/{kind}/{ruleId}/actions    {actions}
import type { RouterContext } from '@koa/router';
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { jsonBody, validate } from '../http/body.ts';
import { requireKeys } from '../http/params.ts';
import { requester } from '../http/context.ts';
import { MatrixError } from '../http/errors.ts';
import type { PushRulesService } from './service.ts';
import type { NotificationService } from './notifications.ts';
import { checkActions, checkConditions, deleteRule, findRule, isKind, putRule, setActions, setEnabled, type NewRule, type PushKind } from './rules.ts';

const enabledSchema = z.object({ enabled: z.boolean() }).passthrough();

function kindParam(ctx: RouterContext): PushKind {
  const kind = ctx.params.kind!;
  if (!isKind(kind)) throw new MatrixError(400, 'M_INVALID_PARAM', `Unknown push rule kind ${kind}`);
  return kind;
}

function ruleIdParam(ctx: RouterContext): string {
  const id = ctx.params.ruleId!;
  if (id.includes('/') || id.includes('\\')) throw new MatrixError(400, 'M_INVALID_PARAM', 'rule_id may not contain slashes');
  return id;
}

function queryString(ctx: RouterContext, name: string): string | undefined {
  const v = ctx.query[name];
  if (v === undefined || v === '') return undefined;
  if (typeof v !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', `${name} must be given once`);
  return v;
}

/** The PUT body of a rule of this kind, checked as the spec describes it. */
function newRule(kind: PushKind, raw: Record<string, unknown>): NewRule {
  if (raw.actions === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: actions');
  const rule: NewRule = { actions: checkActions(raw.actions) };
  if (kind === 'override' || kind === 'underride') {
    if (raw.conditions !== undefined) rule.conditions = checkConditions(raw.conditions);
  } else if (kind === 'content') {
    if (raw.pattern === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Content rules need a pattern');
    if (typeof raw.pattern !== 'string') throw new MatrixError(400, 'M_BAD_JSON', 'pattern must be a string');
    rule.pattern = raw.pattern;
  }
  return rule;
}

export function pushRoutes(r: Routes, push: PushRulesService): void {
  r.client('get', '/pushrules/', async (ctx) => ({ global: await push.rules(requester(ctx).userId) }), { auth: true });
  r.client('get', '/pushrules/global/', async (ctx) => push.rules(requester(ctx).userId), { auth: true });

  r.client('get', '/pushrules/global/:kind/', async (ctx) => {
    const kind = kindParam(ctx);
    ctx.body = (await push.rules(requester(ctx).userId))[kind];
  }, { auth: true });

  r.client('get', '/pushrules/global/:kind/:ruleId', async (ctx) => {
    const kind = kindParam(ctx);
    return findRule(await push.rules(requester(ctx).userId), kind, ruleIdParam(ctx));
  }, { auth: true });

  r.client('put', '/pushrules/global/:kind/:ruleId', async (ctx) => {
    const kind = kindParam(ctx);
    const ruleId = ruleIdParam(ctx);
    if (ruleId.startsWith('.')) throw new MatrixError(400, 'M_INVALID_PARAM', "Rule IDs starting with '.' are reserved for server-default rules");
    const rule = newRule(kind, jsonBody(ctx));
    const before = queryString(ctx, 'before');
    const after = queryString(ctx, 'after');
    await push.update(requester(ctx).userId, (rules) => putRule(rules, kind, ruleId, rule, before, after));
    return {};
  }, { auth: true });

  r.client('delete', '/pushrules/global/:kind/:ruleId', async (ctx) => {
    const kind = kindParam(ctx);
    const ruleId = ruleIdParam(ctx);
    await push.update(requester(ctx).userId, (rules) => deleteRule(rules, kind, ruleId));
    return {};
  }, { auth: true });

  r.client('get', '/pushrules/global/:kind/:ruleId/enabled', async (ctx) => {
    const kind = kindParam(ctx);
    return { enabled: findRule(await push.rules(requester(ctx).userId), kind, ruleIdParam(ctx)).enabled };
  }, { auth: true });

  r.client('put', '/pushrules/global/:kind/:ruleId/enabled', async (ctx) => {
    const kind = kindParam(ctx);
    const ruleId = ruleIdParam(ctx);
    const raw = jsonBody(ctx);
    requireKeys(raw, ['enabled']);
    const { enabled } = validate(enabledSchema, raw);
    await push.update(requester(ctx).userId, (rules) => setEnabled(rules, kind, ruleId, enabled));
    return {};
  }, { auth: true });

  r.client('get', '/pushrules/global/:kind/:ruleId/actions', async (ctx) => {
    const kind = kindParam(ctx);
    return { actions: findRule(await push.rules(requester(ctx).userId), kind, ruleIdParam(ctx)).actions };
  }, { auth: true });

  r.client('put', '/pushrules/global/:kind/:ruleId/actions', async (ctx) => {
    const kind = kindParam(ctx);
    const ruleId = ruleIdParam(ctx);
    const raw = jsonBody(ctx);
    if (raw.actions === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing parameter: actions');
    const actions = checkActions(raw.actions);
    await push.update(requester(ctx).userId, (rules) => setActions(rules, kind, ruleId, actions));
    return {};
  }, { auth: true });
}

// GET /notifications   the user's notifications, newest first (?from, ?limit, ?only=highlight)
export function notificationRoutes(r: Routes, notifications: NotificationService): void {
  r.client('get', '/notifications', async (ctx) => {
    const from = queryString(ctx, 'from');
    const only = queryString(ctx, 'only');
    const rawLimit = queryString(ctx, 'limit');
    if (rawLimit !== undefined && !/^[0-9]{1,9}$/.test(rawLimit)) throw new MatrixError(400, 'M_INVALID_PARAM', 'limit must be a non-negative integer');
    const limit = Math.min(rawLimit === undefined ? 20 : Number(rawLimit), 100);
    return notifications.list(requester(ctx), from, limit, only);
  }, { auth: true });
}
