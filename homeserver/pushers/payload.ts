// The body of POST /_matrix/push/v1/notify (Push Gateway API) for one notification of one pusher.

/** What a notify says about the event (read from the room engine, see details.ts). */
export interface NotifyEvent {
  eventId: string;
  roomId: string;
  type: string;
  sender: string;
  stateKey: string | null;
  /** Absent when redacted or empty. */
  content?: Record<string, unknown>;
  senderDisplayName?: string;
  roomName?: string;
}

/** The pusher fields a notify carries. */
export interface NotifyPusher {
  app_id: string;
  pushkey: string;
  pushkey_ts: number;
  user_id: string;
  data: Record<string, unknown>;
}

/** The `set_tweak` actions as a dictionary (an absent value means true, as for `highlight`). */
export function tweaksOf(actions: unknown[]): Record<string, unknown> {
  const tweaks: Record<string, unknown> = {};
  for (const a of actions) {
    if (a && typeof a === 'object' && !Array.isArray(a) && typeof (a as { set_tweak?: unknown }).set_tweak === 'string') {
      const t = a as { set_tweak: string; value?: unknown };
      tweaks[t.set_tweak] = 'value' in t ? t.value : true;
    }
  }
  return tweaks;
}

/** Whether the actions ask for a notification at all (the only action that sends a push). */
export function notifies(actions: unknown[]): boolean {
  return actions.includes('notify');
}

/**
 * The notify body, as Synapse builds it: `prio` high when the event makes a sound, highlights, or is
 * encrypted (its effect unknown); `format: event_id_only` sends only ids, counts and prio (and no
 * tweaks); the full form adds type, sender, names and the content. Counts of zero are omitted (spec).
 * The device's `data` is the pusher's data minus `url`.
 */
export function notifyBody(pusher: NotifyPusher, event: NotifyEvent, actions: unknown[], unread: number): { notification: Record<string, unknown> } {
  let tweaks = tweaksOf(actions);
  const prio = event.type === 'm.room.encrypted' || tweaks.highlight === true || (tweaks.sound !== undefined && tweaks.sound !== false) ? 'high' : 'low';
  const counts: Record<string, number> = {};
  if (unread > 0) counts.unread = unread;
  const notification: Record<string, unknown> = { event_id: event.eventId, room_id: event.roomId, counts, prio };
  if (pusher.data.format === 'event_id_only') {
    tweaks = {};
  } else {
    notification.type = event.type;
    notification.sender = event.sender;
    if (event.type === 'm.room.member' && event.stateKey !== null) {
      if (typeof event.content?.membership === 'string') notification.membership = event.content.membership;
      notification.user_is_target = event.stateKey === pusher.user_id;
    }
    if (event.content && Object.keys(event.content).length > 0) notification.content = event.content;
    if (event.senderDisplayName) notification.sender_display_name = event.senderDisplayName;
    if (event.roomName) notification.room_name = event.roomName;
  }
  const { url: _url, ...data } = pusher.data;
  const device: Record<string, unknown> = {
    app_id: pusher.app_id,
    pushkey: pusher.pushkey,
    pushkey_ts: Math.floor(pusher.pushkey_ts / 1000),
    data,
  };
  if (Object.keys(tweaks).length > 0) device.tweaks = tweaks;
  notification.devices = [device];
  return { notification };
}
