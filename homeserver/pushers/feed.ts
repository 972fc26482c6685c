// LOCAL COPY of the notification feed's interface (homeserver/push/notifications.ts, built by another
// helper at the same time). When that file is merged, delete this one and import these types from
// '../push/notifications.ts' instead (sender.ts, main.ts): the shapes are identical.

/** A push action staged for one user on one event (Synapse's event_push_actions row). */
export interface StagedNotification {
  userId: string;
  roomId: string;
  eventId: string;
  /** The event's stream position: the feed hands them out in this order. */
  streamPos: number;
  actions: unknown[];
  highlight: boolean;
  ts: number;
}

export interface NotificationFeed {
  /** The user's staged notifications with streamPos > the given one, in stream order, at most `limit`. */
  after(userId: string, streamPos: number, limit: number): Promise<StagedNotification[]>;
  /** The user's unread notification count across all rooms (the badge). */
  unreadCount(userId: string): Promise<number>;
}
