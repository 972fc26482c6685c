// The HTTP pusher sender against a local push gateway (node:http), with a notification feed and a
// pusher store held in memory: what it POSTs, back-off and give-up, rejected pushkeys, durable positions.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { PusherSender, type PusherRepository, type SenderOptions } from '../../homeserver/pushers/sender.ts';
import type { NotificationFeed, StagedNotification } from '../../homeserver/push/notifications.ts';
import type { PusherRow } from '../../homeserver/pushers/store.ts';
import type { NotifyEvent } from '../../homeserver/pushers/payload.ts';

const log = pino({ level: 'silent' });
const ALICE = '@alice:localhost';

class MemRepo implements PusherRepository {
  rows = new Map<number, PusherRow>();
  removed: number[] = [];
  async allOfKind(kind: string) { return [...this.rows.values()].filter((r) => r.kind === kind).map((r) => ({ ...r })); }
  async byId(id: number) { const r = this.rows.get(id); return r && { ...r }; }
  async advance(id: number, pos: number) {
    const r = this.rows.get(id);
    if (!r) return false;
    r.sent_up_to = Math.max(r.sent_up_to, pos);
    r.failing_since = null;
    return true;
  }
  async setFailingSince(id: number, ts: number | null) { const r = this.rows.get(id); if (r) r.failing_since = ts; }
  async removeById(id: number) { this.removed.push(id); return this.rows.delete(id); }
}

class MemFeed implements NotificationFeed {
  items: StagedNotification[] = [];
  unread = 3;
  reads = 0;
  add(streamPos: number, actions: unknown[] = ['notify'], userId = ALICE): void {
    this.items.push({ userId, roomId: '!room:localhost', eventId: `$e${streamPos}`, streamPos, actions, highlight: false, ts: Date.now() });
  }
  async after(userId: string, pos: number, limit: number) {
    this.reads++;
    return this.items.filter((n) => n.userId === userId && n.streamPos > pos).sort((a, b) => a.streamPos - b.streamPos).slice(0, limit);
  }
  async unreadCount() { return this.unread; }
}

const details = async (eventId: string): Promise<NotifyEvent> => ({
  eventId, roomId: '!room:localhost', type: 'm.room.message', sender: '@bob:localhost', stateKey: null,
  content: { msgtype: 'm.text', body: `hello ${eventId}` }, senderDisplayName: 'Bob', roomName: 'Chat',
});

type Reply = { status: number; body?: unknown; hang?: boolean; bytes?: number };
interface Gateway { url: string; received: Array<{ body: any; at: number }>; reply: (n: number, body: any) => Reply; close(): Promise<void> }

const servers: Server[] = [];
after(() => { for (const s of servers) s.closeAllConnections(); });

async function gateway(reply: Gateway['reply'] = () => ({ status: 200, body: { rejected: [] } })): Promise<Gateway> {
  const g: Gateway = { url: '', received: [], reply, close: async () => {} };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString());
      g.received.push({ body, at: Date.now() });
      const r = g.reply(g.received.length, body);
      if (r.hang) return; // never answers
      res.writeHead(r.status, { 'content-type': 'application/json' });
      if (r.bytes) {
        res.end(`{"rejected":[],"pad":"${'x'.repeat(r.bytes)}"}`);
        return;
      }
      res.end(JSON.stringify(r.body ?? {}));
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  g.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/_matrix/push/v1/notify`;
  g.close = () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
  return g;
}

function pusher(id: number, url: string, extra: Partial<PusherRow> = {}): PusherRow {
  return {
    id, user_id: ALICE, device_id: 'DEV', kind: 'http', app_id: 'org.example.app', pushkey: `key${id}`, pushkey_ts: 1_700_000_000_123,
    app_display_name: 'App', device_display_name: 'Phone', profile_tag: null, lang: 'en', data: { url, custom: 'kept' },
    sent_up_to: 0, failing_since: null, ...extra,
  };
}

const FAST: Partial<SenderOptions> = { pollMs: 60_000, initialBackoffMs: 40, maxBackoffMs: 400, timeoutMs: 2_000 };

async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function setup(opts: Partial<SenderOptions> = {}) {
  const repo = new MemRepo();
  const feed = new MemFeed();
  const sender = new PusherSender(repo, feed, details, log, { ...FAST, ...opts });
  return { repo, feed, sender };
}

test('a notify carries the event, the counts and the device (data minus url, tweaks); only notifying actions are sent; the position is kept', async () => {
  const g = await gateway();
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(5, ['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }]);
  feed.add(6, [{ set_tweak: 'highlight', value: false }]); // no notify: skipped, but passed
  feed.add(7, ['notify']);
  await sender.start();
  await until(() => g.received.length === 2 && repo.rows.get(1)!.sent_up_to === 7, 'two notifies');
  await sender.stop();
  const [first, second] = g.received.map((r) => r.body.notification);
  assert.equal(first.event_id, '$e5');
  assert.equal(first.room_id, '!room:localhost');
  assert.equal(first.type, 'm.room.message');
  assert.equal(first.sender, '@bob:localhost');
  assert.equal(first.sender_display_name, 'Bob');
  assert.equal(first.room_name, 'Chat');
  assert.deepEqual(first.content, { msgtype: 'm.text', body: 'hello $e5' });
  assert.deepEqual(first.counts, { unread: 3 });
  assert.equal(first.prio, 'high', 'a sound or a highlight is high priority');
  assert.deepEqual(first.devices, [{ app_id: 'org.example.app', pushkey: 'key1', pushkey_ts: 1_700_000_000, data: { custom: 'kept' }, tweaks: { sound: 'default', highlight: true } }]);
  assert.equal(second.event_id, '$e7');
  assert.equal(second.prio, 'low');
  assert.equal(second.devices[0].tweaks, undefined);
  await g.close();
});

test('format event_id_only sends ids, counts and prio only; zero counts are omitted', async () => {
  const g = await gateway();
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url, { data: { url: g.url, format: 'event_id_only' } }));
  feed.unread = 0;
  feed.add(3, ['notify', { set_tweak: 'sound', value: 'default' }]);
  await sender.start();
  await until(() => g.received.length === 1, 'a notify');
  await sender.stop();
  const n = g.received[0]!.body.notification;
  assert.deepEqual(Object.keys(n).sort(), ['counts', 'devices', 'event_id', 'prio', 'room_id']);
  assert.deepEqual(n.counts, {});
  assert.deepEqual(n.devices[0].data, { format: 'event_id_only' });
  assert.equal(n.devices[0].tweaks, undefined);
  await g.close();
});

test('a 500 is retried with growing back-off until it succeeds; the notification is delivered once', async () => {
  const g = await gateway((n) => (n <= 3 ? { status: 500 } : { status: 200, body: { rejected: [] } }));
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  await sender.start();
  await until(() => repo.rows.get(1)!.failing_since !== null, 'failing_since recorded');
  await until(() => g.received.length === 4 && repo.rows.get(1)!.sent_up_to === 1, 'success after three failures');
  await sender.stop();
  const at = g.received.map((r) => r.at);
  const gaps = [at[1]! - at[0]!, at[2]! - at[1]!, at[3]! - at[2]!];
  assert.ok(gaps[0]! >= 35, `first back-off ${gaps[0]} ms ≥ 40 ms`);
  assert.ok(gaps[1]! >= 75, `second back-off ${gaps[1]} ms ≥ 80 ms (doubled)`);
  assert.ok(gaps[2]! >= 155, `third back-off ${gaps[2]} ms ≥ 160 ms (doubled)`);
  assert.ok(g.received.every((r) => r.body.notification.event_id === '$e1'));
  assert.equal(repo.rows.get(1)!.failing_since, null, 'healthy again');
  await g.close();
});

test('429 and an unreachable gateway are retried too; a gateway that never answers times out', async () => {
  const g = await gateway((n) => (n === 1 ? { status: 429 } : n === 2 ? { status: 200, hang: true } : { status: 200, body: {} }));
  const { repo, feed, sender } = setup({ timeoutMs: 150 });
  repo.rows.set(1, pusher(1, g.url));
  // A second pusher of the same user on a port where nobody listens: refused connection, retried, no effect on the first.
  const dead = await gateway();
  await dead.close();
  repo.rows.set(2, pusher(2, dead.url));
  feed.add(1);
  await sender.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 1, 'delivered after a 429 and a timeout');
  assert.equal(g.received.length, 3);
  await until(() => repo.rows.get(2)!.failing_since !== null, 'the dead gateway is marked failing');
  assert.equal(repo.rows.get(2)!.sent_up_to, 0, 'nothing counted as sent to it');
  await sender.stop();
  await g.close();
});

test('a 400 gives up on that notification (one attempt) and goes on with the next', async () => {
  const g = await gateway((_n, body) => (body.notification.event_id === '$e1' ? { status: 400, body: { error: 'bad' } } : { status: 200, body: { rejected: [] } }));
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  feed.add(2);
  await sender.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 2, 'both passed');
  await new Promise((r) => setTimeout(r, 120)); // longer than a back-off: no retry of $e1 comes
  await sender.stop();
  assert.deepEqual(g.received.map((r) => r.body.notification.event_id), ['$e1', '$e2']);
  await g.close();
});

test('a rejected pushkey removes the pusher; nothing more is sent to it', async () => {
  const g = await gateway(() => ({ status: 200, body: { rejected: ['key1'] } }));
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  feed.add(2);
  await sender.start();
  await until(() => repo.removed.includes(1), 'pusher removed');
  await sender.idle();
  feed.add(3);
  sender.wake([ALICE]);
  await sender.idle();
  await sender.stop();
  assert.deepEqual(g.received.map((r) => r.body.notification.event_id), ['$e1']);
  assert.equal(repo.rows.size, 0);
  await g.close();
});

test('a rejected pushkey of another pusher is ignored (only the key sent is removed)', async () => {
  const g = await gateway(() => ({ status: 200, body: { rejected: ['someone-else'] } }));
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  await sender.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 1, 'sent');
  await sender.stop();
  assert.deepEqual(repo.removed, []);
  await g.close();
});

test('a restart resumes from the durable position: nothing lost, nothing repeated', async () => {
  const g = await gateway();
  const repo = new MemRepo();
  const feed = new MemFeed();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  feed.add(2);
  const first = new PusherSender(repo, feed, details, log, FAST);
  await first.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 2, 'two sent');
  await first.stop();
  feed.add(3); // staged while no sender runs
  const second = new PusherSender(repo, feed, details, log, FAST);
  await second.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 3, 'the third sent');
  await second.stop();
  assert.deepEqual(g.received.map((r) => r.body.notification.event_id), ['$e1', '$e2', '$e3']);
  await g.close();
});

test('a POST in flight when the sender stops is sent again after the restart (the one duplicate allowed)', async () => {
  let hang = true;
  const g = await gateway(() => (hang ? { status: 200, hang: true } : { status: 200, body: { rejected: [] } }));
  const repo = new MemRepo();
  const feed = new MemFeed();
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  const first = new PusherSender(repo, feed, details, log, FAST);
  await first.start();
  await until(() => g.received.length === 1, 'the POST arrived');
  await first.stop(); // aborts it: no answer, the position stays
  assert.equal(repo.rows.get(1)!.sent_up_to, 0);
  hang = false;
  const second = new PusherSender(repo, feed, details, log, FAST);
  await second.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 1, 'sent after restart');
  await second.stop();
  assert.deepEqual(g.received.map((r) => r.body.notification.event_id), ['$e1', '$e1']);
  await g.close();
});

test('wake() sends at once; a pusher created later starts at its own position; a removed pusher stops', async () => {
  const g = await gateway();
  const { repo, feed, sender } = setup();
  repo.rows.set(1, pusher(1, g.url));
  await sender.start();
  feed.add(10);
  sender.wake([ALICE]);
  await until(() => g.received.length === 1, 'sent on wake (the poll is a minute away)');
  repo.rows.set(2, pusher(2, g.url, { sent_up_to: 10 }));
  await sender.pusherChanged([2]);
  feed.add(11);
  sender.wake([ALICE, '@nobody:localhost']);
  await until(() => g.received.length === 3, 'both pushers sent $e11');
  assert.deepEqual(g.received.map((r) => [r.body.notification.event_id, r.body.notification.devices[0].pushkey]).sort(),
    [['$e10', 'key1'], ['$e11', 'key1'], ['$e11', 'key2']]);
  repo.rows.delete(1);
  await sender.pusherChanged([1]);
  feed.add(12);
  sender.wake([ALICE]);
  await until(() => g.received.length === 4, 'only pusher 2 sent $e12');
  await sender.idle();
  await sender.stop();
  assert.deepEqual(g.received[3]!.body.notification.devices[0].pushkey, 'key2');
  await g.close();
});

test('the poll finds notifications staged elsewhere and pushers set elsewhere', async () => {
  const g = await gateway();
  let pos = 0;
  const { repo, feed, sender } = setup({ pollMs: 30, currentPosition: () => pos });
  await sender.start();
  repo.rows.set(1, pusher(1, g.url)); // set on another worker
  feed.add(1); // staged on another worker
  pos = 1;
  await until(() => g.received.length === 1, 'found by the poll');
  await sender.stop();
  await g.close();
});

test('an oversized answer to a 2xx counts as sent; many notifications go in order, in batches', async () => {
  const g = await gateway(() => ({ status: 200, bytes: 200_000 }));
  const { repo, feed, sender } = setup({ maxResponseBytes: 1024, batch: 4 });
  repo.rows.set(1, pusher(1, g.url));
  for (let i = 1; i <= 10; i++) feed.add(i);
  await sender.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 10, 'ten sent');
  await sender.stop();
  assert.deepEqual(g.received.map((r) => r.body.notification.event_id), Array.from({ length: 10 }, (_, i) => `$e${i + 1}`));
  await g.close();
});

test('a gateway failing for longer than giveUpAfterMs has the notification skipped', async () => {
  const g = await gateway(() => ({ status: 503 }));
  const { repo, feed, sender } = setup({ giveUpAfterMs: 0 });
  repo.rows.set(1, pusher(1, g.url));
  feed.add(1);
  await sender.start();
  await until(() => repo.rows.get(1)!.sent_up_to === 1, 'skipped');
  await sender.stop();
  assert.equal(g.received.length, 1);
  await g.close();
});

test('setting a backing-off pusher again (a fixed URL) retries at once with the new settings', async () => {
  const bad = await gateway(() => ({ status: 502 }));
  const good = await gateway();
  const { repo, feed, sender } = setup({ initialBackoffMs: 60_000 });
  repo.rows.set(1, pusher(1, bad.url));
  feed.add(1);
  await sender.start();
  await until(() => bad.received.length === 1 && repo.rows.get(1)!.failing_since !== null, 'the first failure');
  repo.rows.get(1)!.data = { url: good.url };
  await sender.pusherChanged([1]);
  await until(() => good.received.length === 1 && repo.rows.get(1)!.sent_up_to === 1, 'sent to the new URL without waiting a minute');
  await sender.stop();
  await bad.close();
  await good.close();
});
