// Content hashes, reference hashes and event IDs (server-server-api.md "Signing Events";
// rooms v3/v4 "Event IDs").
import { createHash, randomInt } from 'node:crypto';
import { canonicalJsonBytes } from './canonical-json.ts';
import { decodeBase64, encodeBase64, encodeBase64Url } from './base64.ts';
import { redactEvent } from './redaction.ts';
import type { RoomVersion } from './room-versions.ts';

function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

function without(obj: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const copy = { ...obj };
  for (const k of keys) delete copy[k];
  return copy;
}

function contentHashBytes(event: Record<string, unknown>): Buffer {
  // unsigned changes in transit, signatures depend on the hash, and hashes can't cover themselves.
  return sha256(canonicalJsonBytes(without(event, ['unsigned', 'signatures', 'hashes'])));
}

export function computeContentHash(event: Record<string, unknown>): string {
  return encodeBase64(contentHashBytes(event));
}

export function addContentHash<T extends Record<string, unknown>>(event: T): T & { hashes: { sha256: string } } {
  return { ...event, hashes: { sha256: computeContentHash(event) } };
}

export function checkContentHash(event: Record<string, unknown>): boolean {
  const hashes = event.hashes as Record<string, unknown> | undefined;
  const claimed = hashes && typeof hashes === 'object' ? hashes.sha256 : undefined;
  if (typeof claimed !== 'string') return false;
  try {
    return decodeBase64(claimed).equals(contentHashBytes(event));
  } catch {
    return false; // malformed base64 or non-canonical JSON: the hash cannot match
  }
}

export function referenceHash(event: Record<string, unknown>, version: RoomVersion): Buffer {
  const strip = ['signatures', 'unsigned'];
  // From v3 the event ID *is* the reference hash, so an event_id field (which some stores keep
  // on the object) must not feed into it. In v1/v2 event_id is part of the signed event.
  if (version.eventIdFormat !== 'v1') strip.push('event_id');
  return sha256(canonicalJsonBytes(without(redactEvent(event, version), strip)));
}

export function computeEventId(event: Record<string, unknown>, version: RoomVersion): string {
  switch (version.eventIdFormat) {
    case 'v3':
      return '$' + encodeBase64(referenceHash(event, version));
    case 'v4':
      return '$' + encodeBase64Url(referenceHash(event, version));
    default:
      throw new Error(`room version ${version.id} uses server-assigned event IDs; none can be computed`);
  }
}

/** v12+: the room ID a create event gives its room: its event ID with the `!` sigil. The create
 *  event carries no room_id (the ID is derived from the event). */
export function computeRoomId(createEvent: Record<string, unknown>, version: RoomVersion): string {
  if (!version.roomIdIsCreateEventHash) throw new Error(`room version ${version.id} does not derive room IDs from the create event`);
  if (createEvent.type !== 'm.room.create') throw new Error('only an m.room.create event derives a room ID');
  if (Object.hasOwn(createEvent, 'room_id')) throw new Error('a v12 m.room.create event has no room_id');
  return `!${computeEventId(createEvent, version).slice(1)}`;
}

/** v1/v2: a server-assigned event ID, `$` + 18 random alphanumerics + `:` + the server name. */
export function generateV1EventId(serverName: string): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  let local = '';
  for (let i = 0; i < 18; i++) local += alphabet[randomInt(alphabet.length)];
  return `$${local}:${serverName}`;
}
