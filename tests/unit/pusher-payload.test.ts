// The body of POST /_matrix/push/v1/notify for one notification (homeserver/pushers/payload.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { notifies, notifyBody, tweaksOf, type NotifyEvent, type NotifyPusher } from '../../homeserver/pushers/payload.ts';

const pusher: NotifyPusher = { app_id: 'a', pushkey: 'k', pushkey_ts: 1_000_999, user_id: '@me:hs', data: { url: 'https://gw/_matrix/push/v1/notify', format: 'full', x: 1 } };
const event: NotifyEvent = { eventId: '$e', roomId: '!r:hs', type: 'm.room.message', sender: '@you:hs', stateKey: null, content: { body: 'hi' } };

test('tweaks come from set_tweak actions; a tweak without value is true; notify is the only sending action', () => {
  assert.deepEqual(tweaksOf(['notify', { set_tweak: 'sound', value: 'ping' }, { set_tweak: 'highlight' }, 'dont_notify', { other: 1 }, null, 5]),
    { sound: 'ping', highlight: true });
  assert.equal(notifies(['notify']), true);
  assert.equal(notifies(['dont_notify', { set_tweak: 'highlight' }]), false);
  assert.equal(notifies([]), false);
});

test('priority: high for sound, highlight or encrypted events, low otherwise', () => {
  assert.equal(notifyBody(pusher, event, ['notify'], 1).notification.prio, 'low');
  assert.equal(notifyBody(pusher, event, ['notify', { set_tweak: 'highlight', value: false }], 1).notification.prio, 'low');
  assert.equal(notifyBody(pusher, event, ['notify', { set_tweak: 'sound', value: 'default' }], 1).notification.prio, 'high');
  assert.equal(notifyBody(pusher, event, ['notify', { set_tweak: 'highlight' }], 1).notification.prio, 'high');
  assert.equal(notifyBody(pusher, { ...event, type: 'm.room.encrypted' }, ['notify'], 1).notification.prio, 'high');
});

test('full format: member events say membership and whether the user is the target; data loses url; pushkey_ts in seconds', () => {
  const invite = notifyBody(pusher, { ...event, type: 'm.room.member', stateKey: '@me:hs', content: { membership: 'invite' } }, ['notify'], 2).notification;
  assert.equal(invite.membership, 'invite');
  assert.equal(invite.user_is_target, true);
  assert.deepEqual(invite.counts, { unread: 2 });
  const dev = (invite.devices as Array<Record<string, unknown>>)[0]!;
  assert.deepEqual(dev, { app_id: 'a', pushkey: 'k', pushkey_ts: 1000, data: { format: 'full', x: 1 } });
  const other = notifyBody(pusher, { ...event, type: 'm.room.member', stateKey: '@else:hs', content: { membership: 'join' } }, ['notify'], 0).notification;
  assert.equal(other.user_is_target, false);
  assert.deepEqual(other.counts, {});
});

test('a redacted (content-less) event has no content; absent names are left out', () => {
  const n = notifyBody(pusher, { ...event, content: undefined }, ['notify'], 1).notification;
  assert.equal('content' in n, false);
  assert.equal('sender_display_name' in n, false);
  assert.equal('room_name' in n, false);
  assert.equal(n.sender, '@you:hs');
});
