// Media: uploads (encrypted first in an encrypted room, as the spec's attachment encryption says)
// and downloads through the authenticated media API (/_matrix/client/v1/media), whose answers need
// the access token: they are fetched and shown as blob: URLs.
import type { MatrixClient } from 'matrix-js-sdk';

export interface EncryptedFile {
  url: string;
  key: { kty: 'oct'; key_ops: string[]; alg: 'A256CTR'; k: string; ext: true };
  iv: string;
  hashes: { sha256: string };
  v: 'v2';
}

const b64 = (bytes: ArrayBuffer | Uint8Array) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/=+$/, '');
const unb64 = (s: string) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));

/** AES-CTR-256 with a random key and IV (top 8 bytes random, counter 0), SHA-256 of the ciphertext. */
export async function encryptAttachment(data: ArrayBuffer): Promise<{ data: ArrayBuffer; info: Omit<EncryptedFile, 'url'> }> {
  const iv = new Uint8Array(16);
  crypto.getRandomValues(iv.subarray(0, 8));
  const key = await crypto.subtle.generateKey({ name: 'AES-CTR', length: 256 }, true, ['encrypt', 'decrypt']);
  const jwk = await crypto.subtle.exportKey('jwk', key);
  const cipher = await crypto.subtle.encrypt({ name: 'AES-CTR', counter: iv, length: 64 }, key, data);
  const hash = await crypto.subtle.digest('SHA-256', cipher);
  return { data: cipher, info: { key: { kty: 'oct', key_ops: ['encrypt', 'decrypt'], alg: 'A256CTR', k: jwk.k!, ext: true }, iv: b64(iv), hashes: { sha256: b64(hash) }, v: 'v2' } };
}

export async function decryptAttachment(data: ArrayBuffer, file: EncryptedFile): Promise<ArrayBuffer> {
  const hash = b64(await crypto.subtle.digest('SHA-256', data));
  if (hash !== file.hashes.sha256.replace(/=+$/, '')) throw new Error('The file does not match its hash');
  const key = await crypto.subtle.importKey('jwk', file.key, { name: 'AES-CTR' }, false, ['decrypt']);
  return crypto.subtle.decrypt({ name: 'AES-CTR', counter: unb64(file.iv), length: 64 }, key, data);
}

const cache = new Map<string, Promise<string>>();

/** A blob: URL of an mxc:// (its thumbnail when a size is given), fetched with the access token. */
export function mediaUrl(client: MatrixClient, mxc: string, opts: { width?: number; height?: number; file?: EncryptedFile; type?: string } = {}): Promise<string> {
  const key = `${mxc}|${opts.width ?? ''}|${opts.file ? 'e' : ''}`;
  let hit = cache.get(key);
  if (!hit) {
    hit = (async () => {
      const thumb = opts.width !== undefined && !opts.file;
      const http = client.mxcUrlToHttp(mxc, thumb ? opts.width : undefined, thumb ? opts.height : undefined, thumb ? 'scale' : undefined, false, true, true);
      if (!http) throw new Error('Not a media URL');
      const res = await fetch(http, { headers: { authorization: `Bearer ${client.getAccessToken()}` } });
      if (!res.ok) throw new Error(`The media server answered ${res.status}`);
      let bytes = await res.arrayBuffer();
      if (opts.file) bytes = await decryptAttachment(bytes, opts.file);
      return URL.createObjectURL(new Blob([bytes], { type: opts.type ?? res.headers.get('content-type') ?? 'application/octet-stream' }));
    })();
    hit.catch(() => cache.delete(key));
    cache.set(key, hit);
  }
  return hit;
}

/** Image size without decoding the whole file twice: for the event's info. */
async function imageSize(file: File): Promise<{ w: number; h: number } | undefined> {
  try {
    const bmp = await createImageBitmap(file);
    const out = { w: bmp.width, h: bmp.height };
    bmp.close();
    return out;
  } catch {
    return undefined;
  }
}

/** Uploads a file and sends it as m.image or m.file (encrypted file in an encrypted room). */
export async function sendFile(client: MatrixClient, roomId: string, file: File): Promise<void> {
  const encrypted = client.getRoom(roomId)?.hasEncryptionStateEvent() ?? false;
  const crypto = client.getCrypto();
  if (encrypted && crypto) for (let i = 0; i < 50 && !(await crypto.isEncryptionEnabledInRoom(roomId)); i++) await new Promise((r) => setTimeout(r, 200));
  const isImage = file.type.startsWith('image/');
  const info: Record<string, unknown> = { mimetype: file.type || 'application/octet-stream', size: file.size };
  if (isImage) {
    const size = await imageSize(file);
    if (size) Object.assign(info, size);
  }
  const content: Record<string, unknown> = { msgtype: isImage ? 'm.image' : 'm.file', body: file.name, filename: file.name, info };
  if (encrypted) {
    const { data, info: keyInfo } = await encryptAttachment(await file.arrayBuffer());
    const up = await client.uploadContent(new Blob([data], { type: 'application/octet-stream' }), { name: 'encrypted', type: 'application/octet-stream' });
    content.file = { ...keyInfo, url: up.content_uri };
  } else {
    const up = await client.uploadContent(file, { name: file.name, type: file.type || 'application/octet-stream' });
    content.url = up.content_uri;
  }
  // biome-ignore lint/suspicious/noExplicitAny: the SDK's content union has no room for a file message built field by field
  await client.sendMessage(roomId, content as any);
}
