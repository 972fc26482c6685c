// Canonical JSON as defined in the Matrix spec appendices ("Signing JSON" > "Canonical JSON"):
// shortest UTF-8 JSON, object keys sorted by Unicode codepoint, integers only in
// [-(2**53)+1, (2**53)-1]. Signatures, hashes and event IDs are computed over this encoding,
// so any deviation breaks federation.

const MAX_SAFE = 2 ** 53 - 1;

/** Compare two strings by Unicode codepoint (JS `<` compares UTF-16 code units, which
 *  orders astral characters before U+E000..U+FFFF - wrong for canonical JSON). */
function compareCodepoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(i)!;
    if (ca !== cb) return ca - cb;
    if (ca > 0xffff) i++; // both strings hold the same surrogate pair here
  }
  return a.length - b.length;
}

function encode(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      // JSON.stringify escapes exactly what the spec grammar requires: `"`, `\`, and
      // U+0000..U+001F (short forms \b \t \n \f \r, otherwise lowercase \u00XX).
      return JSON.stringify(value);
    case 'number':
      if (!Number.isInteger(value) || Math.abs(value) > MAX_SAFE) {
        throw new TypeError(`canonical JSON: ${path} is not an integer in the safe range: ${value}`);
      }
      return String(value); // String(-0) === '0', as the spec requires
    case 'object': {
      if (Array.isArray(value)) {
        return '[' + value.map((v, i) => encode(v, `${path}[${i}]`)).join(',') + ']';
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new TypeError(`canonical JSON: ${path} is not a plain object`);
      }
      const obj = value as Record<string, unknown>;
      const parts: string[] = [];
      // `undefined` properties are skipped, like JSON.stringify, so optional fields can be left unset.
      for (const key of Object.keys(obj).filter((k) => obj[k] !== undefined).sort(compareCodepoints)) {
        parts.push(JSON.stringify(key) + ':' + encode(obj[key], `${path}.${key}`));
      }
      return '{' + parts.join(',') + '}';
    }
    default:
      throw new TypeError(`canonical JSON: ${path} has unsupported type ${typeof value}`);
  }
}

export function canonicalJson(value: unknown): string {
  return encode(value, '$');
}

export function canonicalJsonBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), 'utf8');
}
