// Issue 9 (mod9): the admin room list (GET /_synapse/admin/v1/rooms) over 10,000 rooms, seeded by
// one SQL script (rooms, their create / member / name / join-rules / alias events, current state and
// memberships), then listed paged and ordered the ways synapse-admin lists them. Goal: p99 ≤ 50 ms.
import pg from 'pg';
import { Client, createDatabase, enc, fmt, latencyLine, register, startHomeserver, stats, summary } from './lib.ts';

const ROOMS = Number(process.env.BENCH_ROOMS ?? 10_000);
const USERS = 200;
const REPEAT = 20;

/** Seeds `n` rooms straight into the room engine's tables. */
export async function seedRooms(db: pg.Client, n: number, serverName: string): Promise<void> {
  await db.query(`INSERT INTO event_types (type) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`,
    [['m.room.create', 'm.room.member', 'm.room.name', 'm.room.join_rules', 'm.room.canonical_alias']]);
  await db.query(`INSERT INTO state_keys (state_key) SELECT '' UNION ALL SELECT '@bu' || k || ':' || $1 FROM generate_series(0, $2 - 1) k ON CONFLICT DO NOTHING`, [serverName, USERS]);
  await db.query('BEGIN');
  await db.query(`
    CREATE TEMP TABLE seed ON COMMIT DROP AS
      SELECT i, '!bench' || i || ':' || $1 AS room_id, '@bu' || (i % ${USERS}) || ':' || $1 AS creator,
             'Room ' || md5(i::text) AS name, 1 + (i % 7) AS members
      FROM generate_series(1, $2::int) i;
    INSERT INTO rooms (room_id, room_version, creator, created_ts, published)
      SELECT room_id, '10', creator, 0, i % 10 = 0 FROM seed;
  `.replace(/\$1/g, `'${serverName}'`).replace('$2::int', String(n)));
  // One row per (room, state event): create, name, join rules, an alias on every third room, and one member event per member.
  await db.query(`
    CREATE TEMP TABLE seed_state ON COMMIT DROP AS
      SELECT s.room_id, r.room_nid, x.type, x.state_key, x.sender, x.content, x.membership
      FROM seed s JOIN rooms r ON r.room_id = s.room_id
      CROSS JOIN LATERAL (
        SELECT 'm.room.create' AS type, '' AS state_key, s.creator AS sender, json_build_object('room_version', '10')::text AS content, NULL::text AS membership
        UNION ALL SELECT 'm.room.name', '', s.creator, json_build_object('name', s.name)::text, NULL
        UNION ALL SELECT 'm.room.join_rules', '', s.creator, json_build_object('join_rule', CASE WHEN s.i % 2 = 0 THEN 'public' ELSE 'invite' END)::text, NULL
        UNION ALL SELECT 'm.room.canonical_alias', '', s.creator, json_build_object('alias', '#bench' || s.i || ':${serverName}')::text, NULL WHERE s.i % 3 = 0
        UNION ALL SELECT 'm.room.member', '@bu' || ((s.i + m) % ${USERS}) || ':${serverName}', '@bu' || ((s.i + m) % ${USERS}) || ':${serverName}', '{"membership":"join"}', 'join'
          FROM generate_series(0, s.members - 1) m
      ) x;
    CREATE TEMP TABLE seed_events ON COMMIT DROP AS
      SELECT st.*, nextval('events_event_nid_seq') AS event_nid, nextval('stream_positions') AS stream_pos,
             '$bench' || md5(st.room_id || st.type || st.state_key) AS event_id
      FROM seed_state st;
    INSERT INTO events (event_nid, event_id, room_nid, stream_pos, depth, type_nid, state_key_nid, sender, origin_server_ts,
                        state_before, state_after, membership, prev_event_ids, auth_event_nids, json)
      SELECT e.event_nid, e.event_id, e.room_nid, e.stream_pos, 1, t.type_nid, k.state_key_nid, e.sender, 0, 0, 0, e.membership, '{}', '{}',
             json_build_object('type', e.type, 'state_key', e.state_key, 'sender', e.sender, 'room_id', e.room_id,
                               'content', e.content::json, 'origin_server_ts', 0, 'depth', 1)::text
      FROM seed_events e JOIN event_types t ON t.type = e.type JOIN state_keys k ON k.state_key = e.state_key;
    INSERT INTO current_state (room_nid, type_nid, state_key_nid, event_nid)
      SELECT e.room_nid, t.type_nid, k.state_key_nid, e.event_nid
      FROM seed_events e JOIN event_types t ON t.type = e.type JOIN state_keys k ON k.state_key = e.state_key;
    INSERT INTO room_memberships (user_id, room_nid, membership, event_nid, stream_pos, sender)
      SELECT e.state_key, e.room_nid, 'join', e.event_nid, e.stream_pos, e.sender FROM seed_events e WHERE e.type = 'm.room.member';
    UPDATE rooms r SET last_pos = m.pos FROM (SELECT room_nid, max(stream_pos) AS pos FROM seed_events GROUP BY room_nid) m WHERE m.room_nid = r.room_nid;
  `);
  await db.query('COMMIT');
  await db.query('ANALYZE');
}

export async function main(): Promise<void> {
  console.log(`admin-rooms: GET /_synapse/admin/v1/rooms over ${ROOMS} rooms seeded by SQL, one request at a time`);
  const bdb = await createDatabase('admin_rooms');
  const hs = await startHomeserver({ databaseUrl: bdb.url, env: { AUTO_JOIN_ROOMS: '' } });
  const c = new Client(hs.baseUrl, 4);
  const q = new pg.Client({ connectionString: bdb.url });
  await q.connect();
  try {
    const t0 = performance.now();
    await seedRooms(q, ROOMS, 'localhost');
    console.log(`  seeded ${ROOMS} rooms in ${fmt((performance.now() - t0) / 1000)} s`);
    const admin = await register(c, 'benchadmin');
    await q.query('UPDATE users SET is_admin = TRUE WHERE user_id = $1', [admin.userId]);
    const scenarios: Array<[string, string]> = [
      ['name, first page', 'limit=100'],
      ['name, page at 5,000', 'limit=100&from=5000'],
      ['name, last page', `limit=100&from=${ROOMS - 100}`],
      ['joined_members desc', 'order_by=joined_members&dir=b&limit=100'],
      ['canonical_alias', 'order_by=canonical_alias&limit=100&from=1000'],
      ['state_events desc', 'order_by=state_events&dir=b&limit=100'],
      ['search_term', 'search_term=room%20a1&limit=100'],
    ];
    const all: number[] = [];
    const figures: Record<string, number> = { rooms: ROOMS };
    // Warm-up: the first query of a connection plans and reads from disk.
    for (const [, qs] of scenarios) await c.ok('GET', `/_synapse/admin/v1/rooms?${qs}`, { token: admin.token });
    for (const [label, qs] of scenarios) {
      const samples: number[] = [];
      for (let i = 0; i < REPEAT; i++) {
        const r = await c.request('GET', `/_synapse/admin/v1/rooms?${qs}`, { token: admin.token });
        if (r.status !== 200) throw new Error(`${qs}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        if (i === 0 && label === 'name, first page' && r.body.total_rooms !== ROOMS) throw new Error(`total_rooms ${r.body.total_rooms}, expected ${ROOMS}`);
        samples.push(r.ms);
      }
      all.push(...samples);
      const s = stats(samples);
      console.log(`  ${latencyLine(label, s)}`);
      figures[`${label.replace(/\W+/g, '_')}_p99_ms`] = s.p99;
    }
    const s = stats(all);
    console.log(`  ${latencyLine('all', s)} — goal p99 ≤ 50 ms: ${s.p99 <= 50 ? 'met' : 'NOT met'}`);
    const detailMs: number[] = [];
    for (let i = 0; i < 20; i++) detailMs.push((await c.request('GET', `/_synapse/admin/v1/rooms/${enc(`!bench${i + 1}:localhost`)}`, { token: admin.token })).ms);
    const detail = stats(detailMs);
    console.log(`  ${latencyLine('room details', detail)}`);
    summary('admin-rooms', { ...figures, p50_ms: s.p50, p99_ms: s.p99, details_p99_ms: detail.p99 });
  } finally {
    await q.end();
    c.close();
    await hs.stop();
  }
}
