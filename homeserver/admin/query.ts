// Query parameters of the admin API, parsed as Synapse does (400 M_INVALID_PARAM naming the parameter).
import type { Context } from 'koa';
import { MatrixError } from '../http/errors.ts';

function one(ctx: Context, name: string): string | undefined {
  const v = ctx.query[name];
  if (Array.isArray(v)) throw new MatrixError(400, 'M_INVALID_PARAM', `Query parameter ${name} must be given once`);
  return v;
}

export function queryInt(ctx: Context, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = one(ctx, name);
  if (v === undefined || v === '') return fallback;
  if (!/^\d{1,15}$/.test(v) || Number(v) > max) throw new MatrixError(400, 'M_INVALID_PARAM', `Query parameter ${name} must be a string representing a positive integer${max < Number.MAX_SAFE_INTEGER ? ` (at most ${max})` : ''}.`);
  return Number(v);
}

export function queryBool(ctx: Context, name: string, fallback: boolean): boolean;
export function queryBool(ctx: Context, name: string, fallback: undefined): boolean | undefined;
export function queryBool(ctx: Context, name: string, fallback: boolean | undefined): boolean | undefined {
  const v = one(ctx, name);
  if (v === undefined || v === '') return fallback;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new MatrixError(400, 'M_INVALID_PARAM', `Boolean query parameter ${name} must be one of ['true', 'false']`);
}

export function queryString(ctx: Context, name: string): string | undefined {
  const v = one(ctx, name);
  return v === undefined || v === '' ? undefined : v;
}

export function queryEnum<T extends string>(ctx: Context, name: string, allowed: readonly T[], fallback: T): T {
  const v = one(ctx, name);
  if (v === undefined || v === '') return fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new MatrixError(400, 'M_INVALID_PARAM', `Query parameter ${name} must be one of ${allowed.join(', ')}`);
  return v as T;
}
