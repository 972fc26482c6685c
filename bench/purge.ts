// Issue 9 (mod9): DELETE /_synapse/admin/v2/rooms/{roomId} with purge, of a room of 10,000 events
// (a real room with members and messages sent through the API, the rest of its messages inserted by
// SQL), timed from the request to the status "complete"; then the rows the room has left in every
// table of the room engine (must be 0).
import pg from 'pg';
import { Client, createDatabase, enc, fmt, pool, register, sleep, startHomeserver, summary } from './lib.ts';

const EVENTS = Number(process.env.BENCH_PURGE_EVENTS ?? 10_000);
const MEMBERS = 20;
const API_MESSAGES = 200;

export async function main(): Promise<void> {
  console.log(`purge: one room of ${EVENTS} events (${MEMBERS} members, ${API_MESSAGES} messages over the API, the rest by SQL), deleted with purge`);
  const bdb = await createDatabase('purge');
  const hs = await startHomeserver({ databaseUrl: bdb.url, env: { AUTO_JOIN_ROOMS: '' } });
  const c = new Client(hs.baseUrl, 16);
  const q = new pg.Client({ connectionString: bdb.url });
  await q.connect();
  try {
    const users = await pool(MEMBERS, 4, (i) => register(c, `pu${i}`));
    const admin = users[0]!;
    await q.query('UPDATE users SET is_admin = TRUE WHERE user_id = $1', [admin.userId]);
    const roomId: string = (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: admin.token, body: { preset: 'public_chat', name: 'purge bench', room_alias_name: 'purgebench' } })).room_id;
    await pool(MEMBERS - 1, 4, (i) => c.ok('POST', `/_matrix/client/v3/join/${enc(roomId)}`, { token: users[i + 1]!.token, body: {} }));
    await pool(API_MESSAGES, 8, (i) => c.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/b${i}`, { token: users[i % MEMBERS]!.token, body: { msgtype: 'm.text', body: `message ${i}` } }));
    const rowsLeft = async () => (await q.query(
      `WITH n AS (SELECT room_nid FROM rooms WHERE room_id = $1)
       SELECT (SELECT count(*) FROM events WHERE room_nid IN (SELECT room_nid FROM n) OR json LIKE '%' || $1 || '%')::int AS events,
              (SELECT count(*) FROM current_state WHERE room_nid IN (SELECT room_nid FROM n))::int AS current_state,
              (SELECT count(*) FROM room_memberships WHERE room_nid IN (SELECT room_nid FROM n))::int AS room_memberships,
              (SELECT count(*) FROM state_groups WHERE room_nid IN (SELECT room_nid FROM n))::int AS state_groups,
              (SELECT count(*) FROM state_group_entries g JOIN state_groups s ON s.state_group = g.state_group WHERE s.room_nid IN (SELECT room_nid FROM n))::int AS state_group_entries,
              (SELECT count(*) FROM event_search WHERE room_nid IN (SELECT room_nid FROM n))::int AS event_search,
              (SELECT count(*) FROM room_aliases WHERE room_id = $1)::int AS room_aliases,
              (SELECT count(*) FROM n)::int AS rooms`, [roomId])).rows[0] as Record<string, number>;
    const have = (await rowsLeft()).events;
    const extra = Math.max(0, EVENTS - have);
    // The rest of the messages: copies of the last one at later positions, with search rows.
    await q.query(`
      WITH last AS (SELECT * FROM events WHERE room_nid = (SELECT room_nid FROM rooms WHERE room_id = $1) ORDER BY stream_pos DESC LIMIT 1),
      ins AS (
        INSERT INTO events (event_id, room_nid, stream_pos, depth, type_nid, sender, origin_server_ts, state_before, state_after, prev_event_ids, auth_event_nids, json)
        SELECT '$purge' || g || md5(g::text), l.room_nid, nextval('stream_positions'), l.depth + g, l.type_nid, l.sender, l.origin_server_ts + g, l.state_before, l.state_after, l.prev_event_ids, l.auth_event_nids,
               replace(l.json, '"message', '"seeded ' || g || ' message')
        FROM last l, generate_series(1, $2::int) g RETURNING event_nid, room_nid, json)
      INSERT INTO event_search (event_nid, room_nid, key, vector) SELECT event_nid, room_nid, 'content.body', to_tsvector('simple', json) FROM ins`, [roomId, extra]);
    const before = await rowsLeft();
    console.log(`  the room before: ${JSON.stringify(before)}`);
    const t0 = performance.now();
    const { delete_id: deleteId } = await c.ok('DELETE', `/_synapse/admin/v2/rooms/${enc(roomId)}`, { token: admin.token, body: { purge: true } });
    let status: any;
    for (;;) {
      status = await c.ok('GET', `/_synapse/admin/v2/rooms/delete_status/${deleteId}`, { token: admin.token });
      if (status.status === 'complete' || status.status === 'failed') break;
      await sleep(20);
    }
    const ms = performance.now() - t0;
    if (status.status !== 'complete') throw new Error(`deletion ${status.status}: ${status.error}`);
    const after = await rowsLeft();
    const left = Object.values(after).reduce((a, b) => a + b, 0);
    console.log(`  deleted (${status.shutdown_room.kicked_users.length} members made to leave, then purged) in ${fmt(ms, 0)} ms; rows left: ${left} ${JSON.stringify(after)}`);
    summary('purge', { events: before.events, rows_before: Object.values(before).reduce((a, b) => a + b, 0), purge_ms: ms, rows_left: left });
    if (left !== 0) throw new Error(`${left} rows left after the purge`);
  } finally {
    await q.end();
    c.close();
    await hs.stop();
  }
}
