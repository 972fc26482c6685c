// Two workers on one database writing to the same room at once: a write whose room head moved
// under it is rebuilt on top of the other worker's events, so nothing is lost or forked.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startServer } from '../helpers/server.ts';
import { api, registerUser, type Credentials } from '../helpers/client.ts';

const C = '/_matrix/client/v3';

describe('two workers, one database', { skip: process.env.TEST_BACKEND === 'embedded' ? 'needs an external database' : false }, () => {
  test('concurrent sends to one room through both workers all persist, once, on one chain', async () => {
    const a = await startServer();
    const b = await startServer({ env: { DATABASE_URL: a.env.DATABASE_URL!, KEEP_DB: '1' } });
    try {
      const users: Array<Credentials & { base: string }> = [];
      for (let i = 0; i < 6; i++) {
        const base = i % 2 ? b.baseUrl : a.baseUrl;
        users.push({ ...(await registerUser(base)), base });
      }
      const roomId = (await api(a.baseUrl, 'POST', `${C}/createRoom`, { token: users[0]!.accessToken, body: { preset: 'public_chat' } })).body.room_id;
      for (const u of users.slice(1)) assert.equal((await api(u.base, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: u.accessToken })).status, 200);

      const sent: string[] = [];
      await Promise.all(users.map(async (u, i) => {
        for (let n = 0; n < 25; n++) {
          const body = `w${i}-${n}`;
          const res = await api(u.base, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t${n}`, { token: u.accessToken, body: { msgtype: 'm.text', body } });
          assert.equal(res.status, 200, JSON.stringify(res.body));
          sent.push(body);
        }
      }));

      // Read back through a fresh worker, which knows every committed position.
      await b.stop();
      await a.restart();
      const page = await api(a.baseUrl, 'GET', `${C}/rooms/${encodeURIComponent(roomId)}/messages?dir=f&limit=1000`, { token: users[0]!.accessToken });
      const bodies = page.body.chunk.filter((e: { type: string }) => e.type === 'm.room.message').map((e: { content: { body: string } }) => e.content.body);
      assert.deepEqual([...bodies].sort(), [...sent].sort(), 'every send once');
      for (let i = 0; i < users.length; i++) {
        const mine = bodies.filter((x: string) => x.startsWith(`w${i}-`));
        assert.deepEqual(mine, Array.from({ length: 25 }, (_, n) => `w${i}-${n}`), 'each sender in order');
      }
      // One chain: a single forward extremity, and every event points at the one before it.
      const db = new pg.Client({ connectionString: a.env.DATABASE_URL });
      await db.connect();
      try {
        const ext = await db.query('SELECT extremities FROM rooms WHERE room_id = $1', [roomId]);
        assert.equal(ext.rows[0].extremities.length, 1);
        const chain = await db.query(
          'SELECT e.event_id, e.prev_event_ids FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = $1 ORDER BY e.stream_pos',
          [roomId],
        );
        for (let i = 1; i < chain.rows.length; i++) assert.deepEqual(chain.rows[i].prev_event_ids, [chain.rows[i - 1].event_id]);
        assert.deepEqual(ext.rows[0].extremities, [chain.rows[chain.rows.length - 1].event_id], 'the extremity is the newest event');
      } finally {
        await db.end();
      }
    } finally {
      await b.stop().catch(() => {});
      await a.stop();
    }
  });

  test('one worker under load: batched writes keep one chain, every send once', async () => {
    const server = await startServer();
    try {
      const users: Credentials[] = [];
      for (let i = 0; i < 12; i++) users.push(await registerUser(server.baseUrl));
      const roomId = (await api(server.baseUrl, 'POST', `${C}/createRoom`, { token: users[0]!.accessToken, body: { preset: 'public_chat' } })).body.room_id;
      for (const u of users.slice(1)) await api(server.baseUrl, 'POST', `${C}/join/${encodeURIComponent(roomId)}`, { token: u.accessToken });
      const sent: string[] = [];
      await Promise.all(users.map(async (u, i) => {
        for (let n = 0; n < 20; n++) {
          const res = await api(server.baseUrl, 'PUT', `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t${n}`, { token: u.accessToken, body: { msgtype: 'm.text', body: `s${i}-${n}` } });
          assert.equal(res.status, 200);
          sent.push(`s${i}-${n}`);
        }
      }));
      const db = new pg.Client({ connectionString: server.env.DATABASE_URL });
      await db.connect();
      try {
        const chain = await db.query(
          `SELECT e.event_id, e.prev_event_ids, e.json::jsonb -> 'content' ->> 'body' AS body FROM events e JOIN rooms r ON r.room_nid = e.room_nid
           WHERE r.room_id = $1 ORDER BY e.stream_pos`,
          [roomId],
        );
        for (let i = 1; i < chain.rows.length; i++) assert.deepEqual(chain.rows[i].prev_event_ids, [chain.rows[i - 1].event_id]);
        const bodies = chain.rows.map((r) => r.body).filter((b): b is string => typeof b === 'string' && b.startsWith('s'));
        assert.deepEqual([...bodies].sort(), [...sent].sort());
      } finally {
        await db.end();
      }
    } finally {
      await server.stop();
    }
  });
});
