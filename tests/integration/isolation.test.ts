// One user cannot hurt everyone (issue 5, deliverable 3): one client sends every hostile body in a
// loop while 20 users send valid messages into 20 other rooms. The room engine writes the queued
// events of several rooms in one statement; a hostile draft must fail alone — at the edge, while
// being built, or when the database refuses the write — and nothing may be half-written.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { registerUser, roomApi, type Credentials } from '../helpers/client.ts';
import { connectDatabase } from '../helpers/database.ts';

const USERS = 20;
const SENDS_PER_USER = 30;
/** Event content holding this is refused by a CHECK constraint the test adds to the events table. */
const REFUSED_BY_DATABASE = 'refused-by-the-database';

interface Hostile {
  what: string;
  method: 'PUT';
  path: (roomPath: string, n: number) => string;
  body: string | Uint8Array;
  status: number;
  errcode: string;
}

const nested = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
const hostiles: Hostile[] = [
  ...([
    ['float', '{"msgtype":"m.text","body":"x","f":1.5}'],
    ['float written 1.0', '{"msgtype":"m.text","body":"x","f":1.0}'],
    ['integer beyond 2^53-1', '{"msgtype":"m.text","body":"x","n":9007199254740993}'],
    ['NUL', '{"msgtype":"m.text","body":"a\\u0000b"}'],
    ['lone surrogate', '{"msgtype":"m.text","body":"\\udc00"}'],
    ['10k-deep nesting', `{"msgtype":"m.text","body":"x","d":${nested(10_000)}}`],
  ] as const).map(([what, body]): Hostile => ({ what, method: 'PUT', path: (r, n) => `${r}/send/m.room.message/h-${what}-${n}`, body, status: 400, errcode: 'M_BAD_JSON' })),
  {
    what: 'invalid UTF-8', method: 'PUT', path: (r, n) => `${r}/send/m.room.message/h-utf8-${n}`, status: 400, errcode: 'M_NOT_JSON',
    body: Buffer.concat([Buffer.from('{"msgtype":"m.text","body":"'), Buffer.from([0xed, 0xa0, 0x80, 0xff]), Buffer.from('"}')]),
  },
  // Past the edge: refused while the engine builds the draft, inside a shared write.
  { what: 'type over 255 bytes', method: 'PUT', path: (r, n) => `${r}/send/m.${'t'.repeat(260)}/h-type-${n}`, body: '{"body":"x"}', status: 413, errcode: 'M_TOO_LARGE' },
  { what: 'state_key over 255 bytes', method: 'PUT', path: (r) => `${r}/state/m.custom/${'k'.repeat(300)}`, body: '{"a":1}', status: 413, errcode: 'M_TOO_LARGE' },
  { what: 'event over 64 KiB', method: 'PUT', path: (r, n) => `${r}/send/m.room.message/h-big-${n}`, body: JSON.stringify({ msgtype: 'm.text', body: 'x'.repeat(70_000) }), status: 413, errcode: 'M_TOO_LARGE' },
  // Past the edge and the build: the database refuses the write statement that carries it.
  { what: 'value the database refuses', method: 'PUT', path: (r, n) => `${r}/send/m.room.message/h-db-${n}`, body: JSON.stringify({ msgtype: 'm.text', body: REFUSED_BY_DATABASE }), status: 400, errcode: 'M_BAD_JSON' },
];

describe('isolation: one hostile client among 20 valid senders', () => {
  let server: TestServer;
  const { call, room, create } = roomApi(() => server.baseUrl);

  before(async () => {
    server = await startServer({ env: { MAX_REQUEST_BYTES: '1000000' } });
  });
  after(() => server?.stop());

  test(`${USERS} × ${SENDS_PER_USER} valid sends all succeed while every hostile body is refused; nothing half-written`, async () => {
    const users: Array<Credentials & { roomId: string }> = [];
    for (let i = 0; i < USERS; i++) {
      const who = await registerUser(server.baseUrl);
      users.push({ ...who, roomId: await create(who, { name: `valid ${i}` }) });
    }
    const attacker = await registerUser(server.baseUrl);
    const attackerRoom = await create(attacker, { name: 'hostile' });
    const db = await connectDatabase(server);
    try {
      // A constraint of the real database stands for any value PostgreSQL refuses at write time.
      await db.query(`ALTER TABLE events ADD CONSTRAINT test_refused CHECK (position('${REFUSED_BY_DATABASE}' in json) = 0)`);

      let validDone = false;
      const hostileAnswers: Array<{ what: string; status: number; errcode?: string }> = [];
      const attack = async () => {
        for (let n = 0; !validDone || n < 2; n++) {
          // Every hostile body at once, so several sit in the same write as the valid sends.
          const answers = await Promise.all(hostiles.map(async (h) => {
            const res = await fetch(server.baseUrl + h.path(room(attackerRoom), n), {
              method: h.method, body: h.body,
              headers: { authorization: `Bearer ${attacker.accessToken}`, 'content-type': 'application/json' },
            });
            const body = await res.json() as { errcode?: string };
            return { what: h.what, status: res.status, errcode: body.errcode };
          }));
          hostileAnswers.push(...answers);
        }
      };
      const failures: string[] = [];
      const sendValid = async (u: (typeof users)[number]) => {
        for (let i = 0; i < SENDS_PER_USER; i++) {
          const res = await call('PUT', `${room(u.roomId)}/send/m.room.message/v${i}`, { token: u.accessToken, body: { msgtype: 'm.text', body: `m${i}`, n: i } });
          if (res.status !== 200) failures.push(`${u.userId} #${i}: ${res.status} ${JSON.stringify(res.body)}`);
        }
      };
      const started = performance.now();
      const attacking = attack();
      await Promise.all(users.map(sendValid));
      validDone = true;
      await attacking;
      const split = (server.logs().match(/writing it again in parts/g) ?? []).length;
      console.log(`valid sends: ${USERS * SENDS_PER_USER} in ${Math.round(performance.now() - started)} ms; hostile answers: ${hostileAnswers.length}; shared writes split: ${split}`);

      assert.deepEqual(failures, [], `${failures.length} of ${USERS * SENDS_PER_USER} valid sends failed`);
      assert.ok(hostileAnswers.length >= hostiles.length * 2);
      for (const a of hostileAnswers) {
        const h = hostiles.find((x) => x.what === a.what)!;
        assert.deepEqual({ what: a.what, status: a.status, errcode: a.errcode }, { what: h.what, status: h.status, errcode: h.errcode });
      }

      // Each valid room holds exactly its messages, in order; the attacker's room holds none.
      for (const u of users) {
        const res = await call('GET', `${room(u.roomId)}/messages?dir=f&limit=100`, { token: u.accessToken });
        const bodies = res.body.chunk.filter((e: { type: string }) => e.type === 'm.room.message').map((e: { content: { body: string } }) => e.content.body);
        assert.deepEqual(bodies, Array.from({ length: SENDS_PER_USER }, (_, i) => `m${i}`));
      }
      const hostileTimeline = await call('GET', `${room(attackerRoom)}/messages?dir=f&limit=100`, { token: attacker.accessToken });
      assert.deepEqual(hostileTimeline.body.chunk.filter((e: { type: string; state_key?: string }) => e.type === 'm.room.message' || e.state_key === undefined), []);

      // Nothing half-written: every room's head is its newest event (position, depth, extremity),
      // every event's state groups and every transaction's event exist.
      const heads = await db.query(`
        SELECT r.room_id, r.last_pos, r.depth, r.extremities, last.stream_pos AS max_pos, last.depth AS max_depth, last.event_id AS last_event
        FROM rooms r CROSS JOIN LATERAL (SELECT stream_pos, depth, event_id FROM events e WHERE e.room_nid = r.room_nid ORDER BY stream_pos DESC LIMIT 1) last`);
      for (const h of heads.rows) {
        assert.equal(Number(h.last_pos), Number(h.max_pos), `${h.room_id}: head at its newest event`);
        assert.equal(Number(h.depth), Number(h.max_depth), `${h.room_id}: depth`);
        assert.deepEqual(h.extremities, [h.last_event], `${h.room_id}: forward extremity`);
      }
      const orphans = await db.query(`
        SELECT (SELECT count(*)::int FROM events e WHERE NOT EXISTS (SELECT 1 FROM state_groups g WHERE g.state_group = e.state_after)
                                               OR NOT EXISTS (SELECT 1 FROM state_groups g WHERE g.state_group = e.state_before)) AS without_state,
               (SELECT count(*)::int FROM event_txns t WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.event_id)) AS txns_without_event,
               (SELECT count(*)::int FROM events WHERE json LIKE '%${REFUSED_BY_DATABASE}%') AS refused_rows`);
      assert.deepEqual(orphans.rows[0], { without_state: 0, txns_without_event: 0, refused_rows: 0 });
      // Depths of each room are 1..n without gaps or repeats: no event was written twice or lost.
      const depths = await db.query(`SELECT room_nid, count(*) AS n, count(DISTINCT depth) AS d, max(depth) AS top FROM events GROUP BY room_nid`);
      for (const r of depths.rows) assert.ok(Number(r.n) === Number(r.d) && Number(r.top) === Number(r.n), JSON.stringify(r));
    } finally {
      await db.query('ALTER TABLE events DROP CONSTRAINT IF EXISTS test_refused').catch(() => {});
      await db.end();
    }
  });
});
