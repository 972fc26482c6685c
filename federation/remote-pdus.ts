// PDUs received in /send. The DAG engine (signature, hash and auth checks, state resolution, the
// room engine's persistAuthorised path) plugs in here; until it lands, every PDU is answered with
// an error of its own, so a sender knows it was not accepted and nothing else in the transaction fails.
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

/** Until the DAG path exists: each PDU is refused by name, none is persisted. */
export class PdusNotYetAccepted implements RemotePduIntake {
  constructor(private roomVersion: (roomId: string) => Promise<RoomVersion | undefined>) {}

  async receiveRemotePdus(_origin: string, pdus: unknown[]): Promise<PduResults> {
    const out: PduResults = {};
    for (const pdu of pdus) {
      if (typeof pdu !== 'object' || pdu === null || Array.isArray(pdu)) continue;
      const p = pdu as Record<string, unknown>;
      const version = typeof p.room_id === 'string' ? await this.roomVersion(p.room_id).catch(() => undefined) : undefined;
      const id = remoteEventId(p, version);
      if (id) out[id] = { error: 'This server does not accept events over federation yet' };
    }
    return out;
  }
}
