// Matrix uses *unpadded* base64 everywhere (appendices "Unpadded Base64"); decoders SHOULD
// accept padding too. Event IDs in room v4+ use the URL-safe alphabet.

export function encodeBase64(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64').replace(/=+$/, '');
}

export function encodeBase64Url(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64url');
}

/** Decodes standard or URL-safe base64, padded or not. Throws on malformed input
 *  (Buffer.from would silently skip bad characters, which could hide forged signatures). */
export function decodeBase64(s: string): Buffer {
  const m = /^([A-Za-z0-9+/_-]*)(={0,2})$/.exec(s);
  if (!m) throw new Error('invalid base64: bad characters');
  const body = m[1]!;
  if (body.length % 4 === 1) throw new Error('invalid base64: bad length');
  if (m[2]!.length > 0 && s.length % 4 !== 0) throw new Error('invalid base64: bad padding');
  return Buffer.from(body.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}
