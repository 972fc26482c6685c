import type { Context } from 'koa';
import { z } from 'zod';
import { MatrixError } from './errors.ts';
import { parseGuardedJson, refuseFractions, refuseNulParams } from './json-guard.ts';

export { refuseNulParams };

/**
 * Refusals that end the connection: the rest of an oversized body is not read (a 100 MB body costs
 * the server nothing past the limit), and a client too slow to send its body loses its socket.
 */
const tooLarge = (limit: number) => new MatrixError(413, 'M_TOO_LARGE', `Request body is over the limit of ${limit} bytes`, {}, { Connection: 'close' });
const tooSlow = (ms: number) => new MatrixError(408, 'M_UNKNOWN', `The request body did not arrive within ${ms} ms`, {}, { Connection: 'close' });

/**
 * Reads the raw body with a size limit; 413 M_TOO_LARGE past it, before buffering it all, and 408
 * when the whole body has not arrived within `timeoutMs` (0: no limit), against clients that
 * trickle a body to hold a connection and its buffer. Settles whatever the client does: a client
 * that aborts mid-upload rejects it (nothing stays pending).
 */
export async function readRawBody(ctx: Context, limit: number, timeoutMs = 0): Promise<Buffer> {
  const declared = Number(ctx.get('content-length') || 0);
  if (declared > limit) throw tooLarge(limit);
  const req = ctx.req;
  const aborted = () => new MatrixError(400, 'M_UNKNOWN', 'The client aborted the request body');
  if (req.readableEnded) return Buffer.alloc(0); // already consumed
  if (req.destroyed) throw aborted(); // went away while we authenticated it
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = timeoutMs > 0 ? setTimeout(() => { cleanup(); reject(tooSlow(timeoutMs)); }, timeoutMs) : undefined;
    const cleanup = () => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      // Stop keeping it; what arrives until the 413 is sent is dropped, then the connection closes.
      cleanup();
      req.resume();
      reject(tooLarge(limit));
    };
    const onEnd = () => { cleanup(); resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)); };
    // An error on the request stream is the client's connection failing (ECONNRESET 'aborted').
    const onError = () => { cleanup(); reject(aborted()); };
    // 'close' before 'end': the connection went away mid-body.
    const onClose = () => { cleanup(); reject(aborted()); };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
    req.once('close', onClose);
  });
}

/**
 * Parses a JSON object body under the edge rules (json-guard.ts): invalid UTF-8 or not JSON →
 * M_NOT_JSON; not an object, NUL, lone surrogates, integers out of canonical JSON's range, nesting
 * past MAX_JSON_DEPTH → M_BAD_JSON. Fractional numbers are refused when the body is read.
 */
export function parseJsonObject(raw: Buffer): Record<string, unknown> | undefined {
  if (raw.length === 0) return undefined;
  const value = parseGuardedJson(raw);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new MatrixError(400, 'M_BAD_JSON', 'Content must be a JSON object.');
  }
  return value as Record<string, unknown>;
}

/** What a handler accepts beyond the edge rules. */
export interface BodyOptions {
  /** Numbers with a fraction (room tags' `order`); everywhere else canonical JSON forbids them. */
  fractions?: boolean;
}

function guarded(b: Record<string, unknown>, opts: BodyOptions): Record<string, unknown> {
  if (!opts.fractions) refuseFractions(b);
  return b;
}

/** The body as a JSON object; an absent body is an error. */
export function jsonBody(ctx: Context, opts: BodyOptions = {}): Record<string, unknown> {
  const b = ctx.state.body as Record<string, unknown> | undefined;
  if (b === undefined) throw new MatrixError(400, 'M_NOT_JSON', 'Content not JSON.');
  return guarded(b, opts);
}

/** The body as a JSON object; an absent body counts as {}. */
export function optionalBody(ctx: Context, opts: BodyOptions = {}): Record<string, unknown> {
  return guarded((ctx.state.body as Record<string, unknown> | undefined) ?? {}, opts);
}

/** Validates a value against a schema: missing required keys → M_MISSING_PARAM, else M_BAD_JSON. */
export function validate<T extends z.ZodTypeAny>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const where = issue.path.join('.') || 'body';
  if (issue.code === 'invalid_type' && (issue as { input?: unknown }).input === undefined) {
    throw new MatrixError(400, 'M_MISSING_PARAM', `Missing parameter: ${where}`);
  }
  throw new MatrixError(400, 'M_BAD_JSON', `Invalid parameter ${where}: ${issue.message}`);
}

/** Validates a request body (or {} when absent) against a schema. */
export function body<T extends z.ZodTypeAny>(ctx: Context, schema: T, required = true, opts: BodyOptions = {}): z.infer<T> {
  return validate(schema, required ? jsonBody(ctx, opts) : optionalBody(ctx, opts));
}
