// The room engine's outbox → the per-destination queues: each event persisted here by one of our
// users goes to the other servers of its room (and, for a kick or ban, to the target's server).
// EDUs other capabilities append to the outbox for a destination are queued as they are. Runs as
// a background job (the outbox's one elected reader); its position is saved only once the items
// are in the durable queues, so a crash loses nothing (a repeat is deduplicated by event id).
import type { Logger } from 'pino';
import { LruCache } from '../homeserver/cache/lru.ts';
import type { BackgroundJob } from '../homeserver/coordination/jobs.ts';
import type { Outbox, OutboxItem } from '../homeserver/rooms/outbox.ts';
import type { RoomReader } from '../homeserver/rooms/reader.ts';
import { getRoomVersion } from '../homeserver/protocol/room-versions.ts';
import type { FederationSender } from './sender.ts';

const serverOf = (id: string) => id.slice(id.indexOf(':') + 1);
/** Rooms whose servers the sender keeps. */
const ROOMS_CACHED = 10_000;

export function roomEventsToFederation(outbox: Outbox, sender: FederationSender, reader: RoomReader, serverName: string, log: Logger): BackgroundJob {
  /** The servers of each room's joined members, as of the last member event the stream passed. */
  const roomServers = new LruCache<string, Set<string>>(ROOMS_CACHED);
  // Returns whether anything went into a queue (if not, the outbox may save its position later).
  const handle = async (items: OutboxItem[]): Promise<boolean> => {
    let handedOff = false;
    for (const item of items) {
      if (item.kind === 'edu') {
        if (item.destination) {
          await sender.queueEdus([{ destination: item.destination, edu: { edu_type: item.type, content: item.content } }]);
          handedOff = true;
        }
        continue;
      }
      const pdu = { ...item.pdu } as Record<string, unknown>;
      // Every member event of every room passes here in stream order (remote ones too): the room's
      // servers are read again after one, and otherwise come from the cache (a read per event
      // cost every local send a statement).
      if (pdu.type === 'm.room.member') roomServers.delete(item.roomId);
      // Remote events came from their servers; only our users' events are ours to send.
      if (typeof pdu.sender !== 'string' || serverOf(pdu.sender) !== serverName) continue;
      let joined = roomServers.get(item.roomId);
      if (!joined) {
        joined = new Set<string>();
        for (const users of (await reader.roomMembersOf([item.roomId])).values()) for (const u of users) joined.add(serverOf(u));
        roomServers.set(item.roomId, joined);
      }
      const servers = new Set(joined);
      const membership = (pdu.content as { membership?: unknown } | undefined)?.membership;
      if (pdu.type === 'm.room.member' && typeof pdu.state_key === 'string' && (membership === 'leave' || membership === 'ban')) servers.add(serverOf(pdu.state_key));
      servers.delete(serverName);
      if (!servers.size) continue;
      // From room version 3 on, the event ID is the event's hash and is not sent.
      const room = await reader.roomMeta(item.roomId);
      const version = room ? getRoomVersion(room.room_version) : undefined;
      if (version?.eventIdFormat !== 'v1') delete pdu.event_id;
      await sender.queueRoomEventsForDestinations([pdu], [...servers]);
      handedOff = true;
      log.debug({ eventId: item.eventId, destinations: servers.size }, 'event queued for federation');
    }
    return handedOff;
  };
  return outbox.consumer('federation', handle, { batch: 100 });
}
