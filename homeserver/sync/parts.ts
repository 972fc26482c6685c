import type { Requester } from '../http/context.ts';
import type { ClientEvent } from '../rooms/reader.ts';
import type { StreamName, SyncToken } from '../storage/stream-token.ts';
import type { SyncFilter } from './filter.ts';

/**
 * What one /sync (or one WebSocket push) asks of a part: who, from where to where, and which
 * rooms the user is joined to. `since` is undefined on an initial sync.
 */
export interface SyncPartContext {
  me: Requester;
  since: SyncToken | undefined;
  to: SyncToken;
  fullState: boolean;
  filter: SyncFilter;
  /** Rooms the user is joined to at `to.events` (ids), whatever the filter says. */
  joinedRoomIds: string[];
}

/** What a part adds to the response. Absent fields add nothing. */
export interface SyncPartOutput {
  /** Per joined room: ephemeral events (typing, receipts); a room with some is in the response. */
  ephemeral?: Map<string, ClientEvent[]>;
  /** Per joined room: fields merged into its section when it is in the response (unread counts). */
  roomFields?: Map<string, Record<string, unknown>>;
  /** Top-level sections, merged: presence.events, to_device.events, device_lists, … */
  top?: Record<string, unknown>;
  /** Whether this output alone is worth answering a long-poll with (false for counts alone). */
  news?: boolean;
  /**
   * A part that pages (to-device: at most 100 per sync): the position of its stream delivered up
   * to, below `to`; next_batch carries it, so the next sync goes on from there.
   */
  upTo?: number;
}

/**
 * A stream or a per-room field of /sync that a capability owns (presence, typing, receipts,
 * unread counts, to-device, …). The sync service asks each part at every sync; a part with a
 * stream also gives its readable position for next_batch and wakes waiters through the notifier
 * under its stream name.
 */
export interface SyncPart {
  readonly name: string;
  /** The stream whose position this part reads and delivers (undefined: it rides on the others). */
  readonly stream?: StreamName;
  /** Up to where the stream is readable now (parts with a stream). */
  current?(): number;
  /** Keys a long-poll of this user also waits on besides its rooms and its user id (its device). */
  waitKeys?(me: Requester): string[];
  read(ctx: SyncPartContext): Promise<SyncPartOutput>;
  /**
   * Called once per /sync (or WebSocket round) that has a `since`, even one that finds nothing new:
   * the client holds that token, so what was delivered up to it may go (to-device messages).
   */
  acknowledge?(me: Requester, since: SyncToken): Promise<void>;
}
