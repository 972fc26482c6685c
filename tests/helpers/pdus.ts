// Synthetic PDUs from another server, signed with an in-test key (as a remote homeserver would):
// for persisting through the room engine's persistAuthorised without a network.
import { finalizeEvent, generateSigningKey, type SigningKey } from '../../homeserver/protocol/signing.ts';
import { getRoomVersion } from '../../homeserver/protocol/room-versions.ts';
import type { PDU } from '../../homeserver/protocol/auth.ts';

export interface RemoteServer {
  name: string;
  key: SigningKey;
  /** A signed PDU; `ts` defaults to an increasing clock so that later events sort later. */
  event(e: { roomId: string; type: string; sender: string; stateKey?: string; content: Record<string, unknown>; prev: PDU[]; auth: PDU[]; ts?: number; depth?: number }): PDU;
}

export function remoteServer(name: string, roomVersion = '10'): RemoteServer {
  const key = generateSigningKey();
  const version = getRoomVersion(roomVersion)!;
  let clock = Date.now();
  return {
    name,
    key,
    event(e) {
      const depth = e.depth ?? Math.max(0, ...e.prev.map((p) => Number(p.depth ?? 0))) + 1;
      const unsigned: Record<string, unknown> = {
        auth_events: e.auth.map((a) => a.event_id), content: e.content, depth, origin_server_ts: e.ts ?? ++clock,
        prev_events: e.prev.map((p) => p.event_id), room_id: e.roomId, sender: e.sender, type: e.type,
      };
      if (e.stateKey !== undefined) unsigned.state_key = e.stateKey;
      const { event, eventId } = finalizeEvent(unsigned, name, key, version);
      return { ...event, event_id: eventId } as unknown as PDU;
    },
  };
}
