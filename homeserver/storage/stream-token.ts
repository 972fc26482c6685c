import { MatrixError } from '../http/errors.ts';

/**
 * Stream tokens. `s<pos>` is a position in the persistent stream (events, memberships, account
 * data); parts after `_` belong to the ephemeral streams added later (typing, receipts, …).
 */
export interface StreamToken {
  pos: number;
  parts: number[];
}

export function parseToken(raw: unknown, name = 'token'): StreamToken {
  if (typeof raw !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}`);
  const m = /^s(\d+)((?:_\d+)*)$/.exec(raw);
  if (!m) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: ${raw}`);
  const parts = m[2] ? m[2].slice(1).split('_').map(Number) : [];
  const pos = Number(m[1]);
  // Positions are BIGINT columns read as numbers: past 2^53−1 no position exists or compares right.
  if (!Number.isSafeInteger(pos) || !parts.every(Number.isSafeInteger)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: out of range`);
  return { pos, parts };
}

export function formatToken(t: StreamToken): string {
  return `s${t.pos}${t.parts.map((p) => `_${p}`).join('')}`;
}

export function posToken(pos: number): string {
  return `s${Math.max(0, pos)}`;
}
