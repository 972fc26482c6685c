import type { RoomReader } from '../rooms/reader.ts';
import type { NotifyEvent } from './payload.ts';

/** Looks up what a notify says about an event; undefined when the event is unknown. */
export type EventDetails = (eventId: string) => Promise<NotifyEvent | undefined>;

function contentOf(json: string): Record<string, unknown> | undefined {
  try {
    const c = (JSON.parse(json) as { content?: unknown }).content;
    return c && typeof c === 'object' && !Array.isArray(c) ? (c as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Event details through the room engine's read interface: the event, and from the room's current
 * state the sender's display name and the room's name (m.room.name, else its canonical alias, as
 * Synapse sends "the human readable name of the room, which may be an alias").
 */
export function roomEventDetails(reader: RoomReader): EventDetails {
  return async (eventId) => {
    const row = await reader.eventById(eventId);
    if (!row) return undefined;
    const state = await reader.currentStateFor(row.room_nid, [['m.room.member', row.sender], ['m.room.name', ''], ['m.room.canonical_alias', '']]);
    const of = (type: string) => {
      const s = state.find((x) => x.type === type);
      return s ? contentOf(s.json) : undefined;
    };
    const displayname = of('m.room.member')?.displayname;
    const name = of('m.room.name')?.name;
    const alias = of('m.room.canonical_alias')?.alias;
    const roomName = typeof name === 'string' && name ? name : typeof alias === 'string' && alias ? alias : undefined;
    return {
      eventId: row.event_id,
      roomId: row.room_id,
      type: row.type,
      sender: row.sender,
      stateKey: row.state_key,
      content: row.redacted_by ? undefined : contentOf(row.json),
      senderDisplayName: typeof displayname === 'string' && displayname ? displayname : undefined,
      roomName,
    };
  };
}
