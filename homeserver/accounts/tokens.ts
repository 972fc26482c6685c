import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * How long a worker trusts a cached access-token lookup. Every change to a token (logout, device
 * deletion, password change, deactivation, refresh) drops the cached entries at once on every
 * worker (the invalidation bus's `tokens` topic; all of them when Redis comes back), so the
 * lifetime is only a backstop: short enough to bound a missed invalidation, long enough that the
 * long-polls of a busy server do not read their token again every few seconds.
 */
export const TOKEN_CACHE_MS = 10 * 60_000;

/** A 256-bit random token; the prefix says what kind it is, to help people who paste one by mistake. */
export function newToken(prefix: 'syt' | 'syr'): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

/** Tokens are stored as their sha256: a read of the table reveals no usable token. */
export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export function safeEqual(a: string | Buffer, b: string | Buffer): boolean {
  const x = Buffer.isBuffer(a) ? a : Buffer.from(a);
  const y = Buffer.isBuffer(b) ? b : Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function randomId(length = 10): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const bytes = randomBytes(length);
  let s = '';
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}

export function randomString(length = 24): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const bytes = randomBytes(length);
  let s = '';
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}
