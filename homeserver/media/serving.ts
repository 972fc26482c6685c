// The headers every media answer carries, so that uploaded bytes can never run as a page of ours.

/**
 * Types served `inline` (the spec's list in "Serving inline content", as Synapse's
 * INLINE_CONTENT_TYPES); everything else, HTML and SVG first of all, is an attachment.
 */
export const INLINE_CONTENT_TYPES = new Set([
  'text/css', 'text/plain', 'text/csv', 'application/json', 'application/ld+json',
  'image/jpeg', 'image/gif', 'image/png', 'image/apng', 'image/webp', 'image/avif',
  'video/mp4', 'video/webm', 'video/ogg', 'video/quicktime',
  'audio/mp4', 'audio/webm', 'audio/aac', 'audio/mpeg', 'audio/ogg', 'audio/wave', 'audio/wav', 'audio/x-wav',
  'audio/x-pn-wav', 'audio/flac', 'audio/x-flac',
]);

/** The spec's recommended policy plus media-src, as Synapse sends it. */
export const MEDIA_CSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/** The type without parameters, lower case. */
export function baseType(contentType: string): string {
  return contentType.split(';')[0]!.trim().toLowerCase();
}

/** RFC 6266 / RFC 5987: a plain token when the name is safe ASCII, else filename*=utf-8''… */
export function contentDisposition(contentType: string, fileName: string | null): string {
  const disposition = INLINE_CONTENT_TYPES.has(baseType(contentType)) ? 'inline' : 'attachment';
  if (!fileName) return disposition;
  if (/^[A-Za-z0-9!#$&+.^_`|~-]+$/.test(fileName)) return `${disposition}; filename=${fileName}`;
  const encoded = encodeURIComponent(fileName).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${disposition}; filename*=utf-8''${encoded}`;
}

/** What a client may send as a media type: a type/subtype with optional parameters, no control characters. */
export function acceptableContentType(value: string): boolean {
  return value.length <= 255 && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;[\x20-\x7e]*)?$/.test(value);
}

export function mediaHeaders(contentType: string, fileName: string | null, size: number): Record<string, string> {
  return {
    'Content-Type': contentType,
    'Content-Length': String(size),
    'Content-Disposition': contentDisposition(contentType, fileName),
    'Content-Security-Policy': MEDIA_CSP,
    'X-Content-Type-Options': 'nosniff',
    'Cross-Origin-Resource-Policy': 'cross-origin',
    // Media never changes under its id.
    'Cache-Control': 'public, max-age=86400, s-maxage=86400',
  };
}
