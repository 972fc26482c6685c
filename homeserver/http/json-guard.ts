// The edge check of every JSON request body: what canonical JSON cannot encode (the encoding every
// event is signed and hashed in) or PostgreSQL cannot store (NUL in text) is refused here, before
// any handler sees it, so that no such value can reach the room engine, a store, or a read path.
import { MatrixError } from './errors.ts';

/**
 * Deepest nesting of objects and arrays a body may have. Real bodies (events, filters, push
 * rules, account data) stay far below this; the limit keeps recursive walkers (canonical JSON,
 * redaction, validation) far from the stack's end.
 */
export const MAX_JSON_DEPTH = 100;

/** The largest integer canonical JSON allows (spec appendices, canonical JSON). */
const MAX_SAFE = 2 ** 53 - 1;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const notJson = (why: string) => new MatrixError(400, 'M_NOT_JSON', `Content not JSON: ${why}`);
const badJson = (why: string) => new MatrixError(400, 'M_BAD_JSON', why);

/** The body as text; invalid UTF-8 is refused rather than replaced (M_NOT_JSON, as Synapse). */
export function decodeUtf8(raw: Uint8Array): string {
  const text = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8');
  // Node's decoder replaces invalid sequences with U+FFFD: only then is the strict (slower)
  // decoder needed, to tell a real U+FFFD from a replaced byte.
  if (!text.includes('\uFFFD')) return text;
  try {
    return strictUtf8.decode(raw);
  } catch {
    throw notJson('invalid UTF-8');
  }
}

/**
 * One pass over the JSON text, outside strings: the nesting depth (refused past MAX_JSON_DEPTH
 * before JSON.parse builds it) and whether a number is written with a fraction or an exponent
 * (`1.0` and `1e3` are floats to canonical JSON, as to Synapse, though JSON.parse makes integers
 * of them). Malformed text is left to JSON.parse.
 */
export function scanJsonText(text: string): { fractions: boolean } {
  let depth = 0;
  let fractions = false;
  let inString = false;
  let inNumber = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (inNumber) {
      if (c === 0x2e || c === 0x65 || c === 0x45) fractions = true; // . e E
      else if (!((c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d)) inNumber = false;
      if (inNumber) continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_JSON_DEPTH) throw badJson(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) inNumber = true;
  }
  return { fractions };
}

/** In unicode mode a surrogate pair is one code point, so only unpaired halves match. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** Why a string cannot be stored or signed, or undefined when it can. */
export function badStringReason(s: string): string | undefined {
  if (s.includes('\u0000')) return 'contains U+0000 (NUL)';
  if (LONE_SURROGATE.test(s)) return 'contains a lone UTF-16 surrogate';
  return undefined;
}

/**
 * Walks a parsed value: every string and key free of NUL and lone surrogates, every number an
 * integer in canonical JSON's range unless `fractions` allows non-integers (tag `order`).
 * Depth is bounded by scanJsonText, so recursion here is bounded too.
 */
export function checkJsonValue(value: unknown, opts: { fractions?: boolean } = {}): void {
  const why = invalidValue(value, opts.fractions === true);
  if (why) throw badJson(why);
}

/** Why a value cannot be encoded or stored (naming the key where it was found), or undefined. */
function invalidValue(value: unknown, fractions: boolean): string | undefined {
  switch (typeof value) {
    case 'string':
      return badStringReason(value);
    case 'number':
      if (!Number.isFinite(value)) return 'a number is not finite';
      if (Number.isInteger(value)) return Math.abs(value) > MAX_SAFE ? 'integer out of range (canonical JSON allows ±(2^53−1))' : undefined;
      return fractions ? undefined : 'non-integer numbers are not allowed (canonical JSON)';
    case 'object': {
      if (value === null) return undefined;
      if (Array.isArray(value)) {
        for (const v of value) {
          const why = invalidValue(v, fractions);
          if (why) return why;
        }
        return undefined;
      }
      for (const k in value) {
        const keyWhy = badStringReason(k);
        if (keyWhy) return `a key ${keyWhy}`;
        const why = invalidValue((value as Record<string, unknown>)[k], fractions);
        if (why) return why.startsWith('in ') ? why : `in "${k}": ${why}`;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

/** Bodies whose text writes a number with a fraction or exponent: refused unless a route allows them. */
const withFractions = new WeakSet<object>();

/**
 * Parses a request body under the edge rules. Everything but fractional numbers is refused at
 * once; a body with fractions is marked, and refused when a handler reads it (see
 * refuseFractions), because one endpoint (room tags: `order` is a number in [0, 1]) takes them.
 */
export function parseGuardedJson(raw: Uint8Array): unknown {
  const text = decodeUtf8(raw);
  const { value, fractions } = parseGuardedText(text);
  if (fractions && typeof value === 'object' && value !== null) withFractions.add(value);
  return value;
}

/**
 * JSON text under the edge rules, fractions allowed (a schema decides on them): for JSON that
 * arrives in a query parameter (filters), where a `\u0000` escape would otherwise reach SQL.
 */
export function parseGuardedText(text: string): { value: unknown; fractions: boolean } {
  const { fractions } = scanJsonText(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw notJson('not valid JSON');
  }
  checkJsonValue(value, { fractions: true });
  return { value, fractions };
}

/** M_BAD_JSON for a body written with a fractional number (canonical JSON has integers only). */
export function refuseFractions(body: object): void {
  if (withFractions.has(body)) throw badJson('Non-integer numbers are not allowed (canonical JSON has integers only)');
}

/** M_INVALID_PARAM for a NUL in a path or query parameter: PostgreSQL text cannot hold it. */
export function refuseNulParams(params: Record<string, unknown> | undefined, query: Record<string, unknown>): void {
  for (const source of [params ?? {}, query]) {
    for (const [name, v] of Object.entries(source)) {
      const values = Array.isArray(v) ? v : [v];
      if (name.includes('\u0000') || values.some((x) => typeof x === 'string' && x.includes('\u0000'))) {
        throw new MatrixError(400, 'M_INVALID_PARAM', `Parameter ${name.split('\u0000').join('\\u0000')} contains U+0000 (NUL)`);
      }
    }
  }
}
