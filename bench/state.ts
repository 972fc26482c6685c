// State storage: one room of 1,000 members, 10,000 messages and 200 topic/name changes, all via the
// client API; then the bytes the state tables use, against a naive "full state per event" design.
import pg from 'pg';
import { Client, createDatabase, enc, fmt, mb, pool, printTable, register, startHomeserver, summary } from './lib.ts';

const MEMBERS = 1000;
const MESSAGES = 10_000;
const STATE_CHANGES = 200;
const STATE_TABLES = ['state_groups', 'state_group_entries', 'current_state'];

export async function main(): Promise<void> {
  console.log(`state: 1 room, ${MEMBERS} members, ${MESSAGES} messages, ${STATE_CHANGES} state changes (alternating m.room.topic / m.room.name), via the client API`);
  const db = await createDatabase('state');
  // No auto-join room: only the measured room has state.
  const hs = await startHomeserver({ databaseUrl: db.url, env: { AUTO_JOIN_ROOMS: '' } });
  const c = new Client(hs.baseUrl);
  const phase = async <T>(label: string, n: number, fn: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    const r = await fn();
    const s = (performance.now() - t) / 1000;
    console.log(`  ${label}: ${n} in ${fmt(s)} s (${fmt(n / s, 0)}/s)`);
    return r;
  };
  try {
    const run = Math.random().toString(36).slice(2, 7);
    console.log('populating:');
    // Registration hashes with argon2id (~19 MiB, 2 passes): a few in parallel keep both cores busy.
    const users = await phase('registrations (8 concurrent)', MEMBERS, () => pool(MEMBERS, 8, (i) => register(c, `st${run}u${i}`)));
    const owner = users[0]!;
    const roomId: string = (await c.ok('POST', '/_matrix/client/v3/createRoom', { token: owner.token, body: { preset: 'public_chat', name: 'state bench' } })).room_id;
    const room = enc(roomId);
    await phase('joins (20 concurrent)', MEMBERS - 1, () => pool(MEMBERS - 1, 20, (i) => c.ok('POST', `/_matrix/client/v3/join/${room}`, { token: users[i + 1]!.token, body: {} })));
    // Messages from every member; every (MESSAGES / STATE_CHANGES + 1)th job is a state change by the owner.
    const every = Math.floor(MESSAGES / STATE_CHANGES) + 1;
    let states = 0;
    await phase(`messages + state changes (50 concurrent)`, MESSAGES + STATE_CHANGES, () => pool(MESSAGES + STATE_CHANGES, 50, async (j) => {
      if (j % every === every - 1 && states < STATE_CHANGES) {
        const n = states++;
        const [type, content] = n % 2 ? ['m.room.name', { name: `name ${n}` }] : ['m.room.topic', { topic: `topic ${n}` }];
        return c.ok('PUT', `/_matrix/client/v3/rooms/${room}/state/${type}/`, { token: owner.token, body: content });
      }
      return c.ok('PUT', `/_matrix/client/v3/rooms/${room}/send/m.room.message/m${j}`, { token: users[j % MEMBERS]!.token, body: { msgtype: 'm.text', body: `message ${j}` } });
    }));

    const q = new pg.Client({ connectionString: db.url });
    await q.connect();
    try {
      const one = async (sql: string, params: unknown[] = []) => (await q.query(sql, params)).rows[0];
      const { room_nid: roomNid } = await one('SELECT room_nid FROM rooms WHERE room_id = $1', [roomId]);
      const counts = await one(`SELECT count(*)::int AS events, count(state_key_nid)::int AS state_events FROM events WHERE room_nid = $1`, [roomNid]);
      const rows: Array<{ table: string; rows: number; bytes: number }> = [];
      for (const t of STATE_TABLES) {
        const r = await one(`SELECT count(*)::bigint AS n, pg_total_relation_size('${t}')::bigint AS bytes FROM ${t}`);
        rows.push({ table: t, rows: Number(r.n), bytes: Number(r.bytes) });
      }
      const actualBytes = rows.reduce((a, r) => a + r.bytes, 0);
      const actualRows = rows.reduce((a, r) => a + r.rows, 0);
      const sge = rows.find((r) => r.table === 'state_group_entries')!;
      const bytesPerRow = sge.bytes / sge.rows;
      // Naive: every event stores the room's full state after it, one row per (type, state_key).
      const naive = await one(
        `WITH ev AS (
           SELECT stream_pos, CASE WHEN state_key_nid IS NOT NULL AND
             row_number() OVER (PARTITION BY type_nid, state_key_nid ORDER BY stream_pos) = 1 THEN 1 ELSE 0 END AS new_key
           FROM events WHERE room_nid = $1)
         SELECT sum(size)::bigint AS rows, max(size)::int AS final_size FROM (SELECT sum(new_key) OVER (ORDER BY stream_pos) AS size FROM ev) x`,
        [roomNid]);
      const naiveRows = Number(naive.rows);
      // A heap row of (bigint, int, int, bigint): 4 B line pointer + 24 B header + 24 B data; its PK b-tree entry ~28 B.
      const floorPerRow = 52 + 28;
      const naiveBytes = naiveRows * bytesPerRow;
      const events = await one(`SELECT pg_total_relation_size('events')::bigint AS bytes, pg_database_size(current_database())::bigint AS db`);

      console.log(`room: ${counts.events} events, ${counts.state_events} of them state events; final state ${naive.final_size} entries`);
      printTable(rows.map((r) => ({ table: r.table, rows: r.rows, 'MB (heap+indexes+toast)': fmt(mb(r.bytes), 2), 'B/row': fmt(r.bytes / r.rows, 0) })));
      console.log(`state tables total: ${actualRows} rows, ${fmt(mb(actualBytes), 2)} MB`);
      console.log(`naive full state per event: ${naiveRows} rows (sum over the ${counts.events} events of the state size after each); `
        + `at the measured ${fmt(bytesPerRow, 0)} B/row of state_group_entries = ${fmt(mb(naiveBytes), 0)} MB `
        + `(at a ${floorPerRow} B/row floor: ${fmt(mb(naiveRows * floorPerRow), 0)} MB)`);
      console.log(`naive / actual: ${fmt(naiveBytes / actualBytes, 0)}x the bytes, ${fmt(naiveRows / actualRows, 0)}x the rows`);
      console.log(`for scale: events table ${fmt(mb(Number(events.bytes)), 1)} MB, whole database ${fmt(mb(Number(events.db)), 1)} MB`);
      summary('state', {
        events: counts.events, stateEvents: counts.state_events, stateRows: actualRows, stateBytes: actualBytes, stateMb: mb(actualBytes),
        ...Object.fromEntries(rows.map((r) => [`${r.table}Bytes`, r.bytes])),
        naiveRows, naiveBytesEstimate: Math.round(naiveBytes), naiveMb: mb(naiveBytes), ratio: naiveBytes / actualBytes,
      });
    } finally {
      await q.end();
    }
  } finally {
    c.close();
    await hs.stop();
    await db.drop();
  }
}
