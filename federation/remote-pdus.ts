// PDUs received in /send go to a RemotePduIntake (RoomFederation: signature, hash and auth checks,
// the room engine's persistAuthorised path), each answered alone.
import { computeEventId } from '../homeserver/protocol/hashes.ts';
import { ROOM_VERSIONS, type RoomVersion } from '../homeserver/protocol/room-versions.ts';

export type PduResults = Record<string, { error?: string }>;

/** What receives the PDUs of a transaction (the DAG integration implements it). */
export interface RemotePduIntake {
  receiveRemotePdus(origin: string, pdus: unknown[]): Promise<PduResults>;
}

/** The event ID of a received PDU: its `event_id` (room versions 1–2), else its reference hash. */
export function remoteEventId(pdu: Record<string, unknown>, version: RoomVersion | undefined): string | undefined {
  if (typeof pdu.event_id === 'string') return pdu.event_id;
  try { return computeEventId(pdu, version ?? ROOM_VERSIONS['10']!); } catch { return undefined; }
}
