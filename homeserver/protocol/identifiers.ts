// Identifier grammar (appendices "Identifier Grammar").

const MAX_ID_BYTES = 255;

/** server_name = hostname [ ":" port ]; hostname = IPv4 / "[" IPv6 "]" / dns-name.
 *  (A dotted-quad IPv4 literal is also a valid dns-name, so it needs no separate branch.) */
export function isValidServerName(s: string): boolean {
  return /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?$/.test(s);
}

/** Localpart grammar for *new* users: 1*[a-z0-9._=-/+]. */
export function isValidLocalpart(s: string): boolean {
  return /^[a-z0-9._=\-/+]+$/.test(s);
}

/** Splits `<sigil>localpart:server`. The localpart may use the historical character set (any
 *  codepoint but ':' and NUL), which servers MUST accept for users over federation. */
function parseSigilled(s: string, sigil: string, allowEmptyLocalpart: boolean): { localpart: string; server: string } | null {
  if (!s.startsWith(sigil) || Buffer.byteLength(s, 'utf8') > MAX_ID_BYTES) return null;
  const colon = s.indexOf(':');
  if (colon < 0) return null;
  const localpart = s.slice(1, colon);
  const server = s.slice(colon + 1);
  if (localpart.includes('\u0000') || (!allowEmptyLocalpart && localpart === '')) return null;
  if (!isValidServerName(server)) return null;
  return { localpart, server };
}

/** Accepts historical user IDs too (spec: "clients and servers MUST accept" them, including an
 *  empty localpart). Use isValidLocalpart to police IDs this server creates. */
export function parseUserId(s: string): { localpart: string; server: string } | null {
  return parseSigilled(s, '@', true);
}

export function isValidUserId(s: string): boolean {
  return parseUserId(s) !== null;
}

/** Room IDs of room versions 1-11 carry a domain: `!opaque:domain`; from v12 a room ID is the
 *  create event's ID (URL-safe unpadded base64 of a sha256 hash) with the `!` sigil. */
export function isValidRoomId(s: string): boolean {
  return parseSigilled(s, '!', false) !== null || isHashRoomId(s);
}

/** v12+: `!` and 43 characters of URL-safe unpadded base64 (a sha256 reference hash). */
export function isHashRoomId(s: string): boolean {
  return /^![A-Za-z0-9_-]{43}$/.test(s);
}

export function isValidRoomAlias(s: string): boolean {
  return parseSigilled(s, '#', false) !== null;
}

/** The part after the first ':' ('' when there is none, e.g. v3+ event IDs). */
export function serverNameOf(id: string): string {
  const colon = id.indexOf(':');
  return colon < 0 ? '' : id.slice(colon + 1);
}
