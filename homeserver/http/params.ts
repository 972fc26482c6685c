import type { RouterContext } from '@koa/router';
import { MatrixError } from '../http/errors.ts';

/** A query parameter given at most once (M_INVALID_PARAM when repeated). */
export function single(ctx: RouterContext, name: string): string | undefined {
  const v = ctx.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', `${name} must be given once`);
  return v;
}

/** A boolean query parameter: exactly 'true' or 'false', as Synapse's parse_boolean. */
export function booleanParam(ctx: RouterContext, name: string): boolean | undefined {
  const v = single(ctx, name);
  if (v === undefined) return undefined;
  if (v !== 'true' && v !== 'false') throw new MatrixError(400, 'M_INVALID_PARAM', `${name} must be 'true' or 'false'`);
  return v === 'true';
}

/**
 * M_MISSING_PARAM for the first of `keys` (dot-separated paths) absent from `body`; run before
 * the schema, which then reports wrong types as M_BAD_JSON.
 */
export function requireKeys(body: Record<string, unknown>, keys: string[]): void {
  for (const key of keys) {
    let v: unknown = body;
    for (const part of key.split('.')) v = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[part] : undefined;
    if (v === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', `Missing parameter: ${key}`);
  }
}
