// The DAG path of the room engine (issue 10): 10,000 remote-style events (signed by another
// server, with their own prev_events and auth_events) persisted through persistAuthorised in
// batches of 50 (a federation /send transaction), 5% of them forks of two branches that both
// change the topic, merged by the next event. Prints events/s and state-resolution time per fork.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { startHomeserver } from '../homeserver/main.ts';
import { loadConfig } from '../homeserver/config.ts';
import { finalizeEvent, generateSigningKey } from '../homeserver/protocol/signing.ts';
import { getRoomVersion } from '../homeserver/protocol/room-versions.ts';
import type { PDU } from '../homeserver/protocol/auth.ts';
import { createDatabase, fmt, onCleanup, summary } from './lib.ts';

const EVENTS = 10_000;
const FORK_SHARE = 0.05;
const BATCH = 50;
const MEMBERS = 20;

export async function main(): Promise<void> {
  const db = await createDatabase('dag');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-dag-'));
  onCleanup(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const config = loadConfig({ PORT: '0', SERVER_NAME: 'localhost', DATA_DIR: dataDir, DATABASE_URL: db.url, RATE_LIMITS: 'off', LOG_LEVEL: 'warn', AUTO_JOIN_ROOMS: '' });
  const hs = await startHomeserver(config, pino({ level: 'warn' }));
  onCleanup(() => hs.stop());

  const key = generateSigningKey();
  const version = getRoomVersion('10')!;
  const roomId = '!bench:remote.test';
  let ts = Date.now();
  const ev = (type: string, sender: string, content: Record<string, unknown>, prev: PDU[], auth: PDU[], stateKey?: string): PDU => {
    const u: Record<string, unknown> = {
      auth_events: auth.map((a) => a.event_id), content, depth: Math.max(0, ...prev.map((p) => Number(p.depth))) + 1, origin_server_ts: ++ts,
      prev_events: prev.map((p) => p.event_id), room_id: roomId, sender, type,
    };
    if (stateKey !== undefined) u.state_key = stateKey;
    const { event, eventId } = finalizeEvent(u, 'remote.test', key, version);
    return { ...event, event_id: eventId } as unknown as PDU;
  };
  const users = Array.from({ length: MEMBERS }, (_, i) => `@u${i}:remote.test`);
  const create = ev('m.room.create', users[0]!, { room_version: '10', creator: users[0] }, [], [], '');
  const owner = ev('m.room.member', users[0]!, { membership: 'join' }, [create], [create], users[0]);
  const power = ev('m.room.power_levels', users[0]!, { users: Object.fromEntries(users.map((u, i) => [u, i < 2 ? 100 : 0])), state_default: 50 }, [owner], [create, owner], '');
  const rules = ev('m.room.join_rules', users[0]!, { join_rule: 'public' }, [power], [create, owner, power], '');
  const events: PDU[] = [create, owner, power, rules];
  const joins = new Map<string, PDU>([[users[0]!, owner]]);
  let head: PDU[] = [rules];
  for (const u of users.slice(1)) {
    const j = ev('m.room.member', u, { membership: 'join' }, head, [create, power, rules], u);
    joins.set(u, j);
    events.push(j);
    head = [j];
  }
  let forks = 0;
  let i = 0;
  while (events.length < EVENTS) {
    const sender = users[i++ % MEMBERS]!;
    const auth = [create, power, joins.get(sender)!];
    if (Math.random() < FORK_SHARE && events.length + 3 <= EVENTS) {
      // Two admins change the topic on two branches from the same parent; the next event merges them.
      const a = ev('m.room.topic', users[0]!, { topic: `a${i}` }, head, [create, power, owner], '');
      const b = ev('m.room.topic', users[1]!, { topic: `b${i}` }, head, [create, power, joins.get(users[1]!)!], '');
      const merge = ev('m.room.message', sender, { msgtype: 'm.text', body: `merge ${i}` }, [a, b], auth);
      events.push(a, b, merge);
      head = [merge];
      forks += 1;
    } else {
      const m = ev('m.room.message', sender, { msgtype: 'm.text', body: `message ${i}` }, head, auth);
      events.push(m);
      head = [m];
    }
  }
  console.log(`dag: ${events.length} events in one room, ${forks} forks (two branches changing the topic, then a merge; ${fmt((forks * 100) / events.length)}% of the events start one), batches of ${BATCH}`);
  const timings = hs.engine.dag.timings;
  const began = performance.now();
  let accepted = 0;
  for (let k = 0; k < events.length; k += BATCH) {
    const r = await hs.engine.persistAuthorised(roomId, events.slice(k, k + BATCH));
    accepted += r.filter((x) => x.outcome === 'accepted').length;
  }
  const seconds = (performance.now() - began) / 1000;
  if (accepted !== events.length) throw new Error(`only ${accepted} of ${events.length} events accepted`);
  const perFork = timings.resolveMs / Math.max(1, forks);
  console.log(`  persisted ${events.length} in ${fmt(seconds, 2)} s: ${fmt(events.length / seconds, 0)} events/s`);
  console.log(`  state resolutions: ${timings.resolutions} (${fmt(timings.resolutions / Math.max(1, forks), 1)} per fork), ${fmt(timings.resolveMs, 0)} ms in all: ${fmt(perFork, 2)} ms per fork`);
  summary('dag', { events: events.length, forks, eventsPerSec: events.length / seconds, resolutions: timings.resolutions, resolveMsPerFork: perFork });
}
