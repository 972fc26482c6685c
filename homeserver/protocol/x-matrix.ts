// Request authentication between servers (server-server API "Request Authentication"): the
// request's method, target and body wrapped in a JSON object, signed with the origin's key, and
// carried in an `Authorization: X-Matrix …` header. Pure: no I/O.
import { signJson, verifyJsonSignature, type SigningKey } from './signing.ts';

export interface XMatrixAuth {
  origin: string;
  /** Absent in requests of servers older than spec v1.3 (receivers accept that). */
  destination: string | undefined;
  key: string;
  sig: string;
}

export interface SignedRequest {
  method: string;
  /** The path with its query string, exactly as sent (`/_matrix/…?…`). */
  uri: string;
  origin: string;
  destination: string;
  /** The JSON-parsed body, when there is one. */
  content?: unknown;
}

/** The JSON object whose signature authenticates a request. */
export function requestJson(req: SignedRequest): Record<string, unknown> {
  const json: Record<string, unknown> = { method: req.method.toUpperCase(), uri: req.uri, origin: req.origin, destination: req.destination };
  if (req.content !== undefined) json.content = req.content;
  return json;
}

/** The `Authorization` header value of a request made with `key` (lower-case names, no spaces, as the spec asks of senders). */
export function signRequest(req: SignedRequest, key: SigningKey): string {
  const signed = signJson(requestJson(req), req.origin, key) as { signatures: Record<string, Record<string, string>> };
  const sig = signed.signatures[req.origin]![key.keyId]!;
  return `X-Matrix origin="${req.origin}",destination="${req.destination}",key="${key.keyId}",sig="${sig}"`;
}

/**
 * Parses an `X-Matrix` Authorization header (RFC 9110 §11.4 parameters: case-insensitive names,
 * quoted or token values, backslash escapes, optional whitespace around commas; unquoted values
 * may hold colons for older servers). Undefined when it is not one or lacks origin, key or sig.
 */
export function parseXMatrix(header: string): XMatrixAuth | undefined {
  const m = /^X-Matrix +(.*)$/is.exec(header.trim());
  if (!m) return undefined;
  const params: Record<string, string> = {};
  let rest = m[1]!;
  while (rest.length) {
    const name = /^[ \t]*([A-Za-z0-9!#$%&'*+.^_`|~-]+)[ \t]*=[ \t]*/.exec(rest);
    if (!name) return undefined;
    rest = rest.slice(name[0].length);
    let value = '';
    if (rest.startsWith('"')) {
      let i = 1;
      for (; i < rest.length && rest[i] !== '"'; i++) {
        if (rest[i] === '\\' && i + 1 < rest.length) i++;
        value += rest[i];
      }
      if (i >= rest.length) return undefined; // unterminated quoted value
      rest = rest.slice(i + 1);
    } else {
      const token = /^[^,\s]*/.exec(rest)![0];
      value = token;
      rest = rest.slice(token.length);
    }
    const key = name[1]!.toLowerCase();
    if (!(key in params)) params[key] = value;
    const sep = /^[ \t]*(,[ \t]*)?/.exec(rest)![0];
    if (!sep.includes(',') && rest.slice(sep.length).length) return undefined;
    rest = rest.slice(sep.length);
  }
  if (!params.origin || !params.key || !params.sig) return undefined;
  return { origin: params.origin, destination: params.destination || undefined, key: params.key, sig: params.sig };
}

/** True when `auth.sig` is origin's signature, with the public key given, over this request. */
export function verifyRequest(auth: XMatrixAuth, req: Omit<SignedRequest, 'origin' | 'destination'> & { destination: string }, publicKey: string): boolean {
  const json = requestJson({ ...req, origin: auth.origin, destination: auth.destination ?? req.destination });
  json.signatures = { [auth.origin]: { [auth.key]: auth.sig } };
  // Requests from before v1.3 signed no destination when they sent none: try that form too.
  if (verifyJsonSignature(json, auth.origin, auth.key, publicKey)) return true;
  if (auth.destination === undefined) {
    const { destination: _d, ...without } = json;
    return verifyJsonSignature(without, auth.origin, auth.key, publicKey);
  }
  return false;
}
