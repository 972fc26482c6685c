import { redactEvent } from '../protocol/redaction.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { RoomStore, EventRow } from './store.ts';

export type ClientEvent = Record<string, unknown> & { event_id: string; type: string; sender: string; content: Record<string, unknown> };

export interface FormatOptions {
  /** The device asking: only it sees its own transaction ids. */
  userId?: string;
  deviceId?: string;
  /** Drop room_id (sync's timeline format). */
  omitRoomId?: boolean;
  /** Add bundled aggregations (m.relations) — timeline events want them, state does not. */
  aggregations?: boolean;
  /**
   * Which of the relating events the reader may see (history visibility): an aggregation must not
   * carry an edit or a thread reply the user could not read on its own. RoomReader.format sets it.
   */
  visible?: (rows: EventRow[]) => Promise<EventRow[]>;
}

/**
 * Turns stored events into the client-server format: the PDU's client fields, with `unsigned`
 * holding age, transaction_id, prev_content and redacted_because, and redactions applied.
 * Looks up what it needs for the whole list at once.
 */
export async function formatEvents(store: RoomStore, rows: EventRow[], opts: FormatOptions = {}): Promise<ClientEvent[]> {
  if (!rows.length) return [];
  const replacedNids = rows.map((r) => r.replaces_nid).filter((n): n is number => n !== null);
  const redactionIds = rows.map((r) => r.redacted_by).filter((id): id is string => id !== null);
  const [replaced, redactions] = await Promise.all([store.eventsByNid(replacedNids), store.eventsById(redactionIds)]);
  const replacedBy = new Map(replaced.map((r) => [Number(r.event_nid), r]));
  const redactionById = new Map(redactions.map((r) => [r.event_id, r]));
  const relations = opts.aggregations ? await bundledRelations(store, rows, opts.userId, opts.visible) : new Map<string, Record<string, unknown>>();
  const now = Date.now();

  return Promise.all(
    rows.map(async (row) => {
      const version = getRoomVersion(row.room_version ?? '10') ?? getRoomVersion('10')!;
      let pdu = JSON.parse(row.json) as Record<string, unknown>;
      const unsigned: Record<string, unknown> = { age: Math.max(0, now - Number(row.origin_server_ts)) };
      if (row.redacted_by) {
        pdu = redactEvent(pdu, version);
        const because = redactionById.get(row.redacted_by);
        if (because) unsigned.redacted_because = (await formatEvents(store, [because], { ...opts, aggregations: false }))[0];
      }
      if (row.txn_id && row.txn_device && opts.deviceId === row.txn_device && opts.userId === row.sender) {
        unsigned.transaction_id = row.txn_id;
      }
      if (row.replaces_nid !== null) {
        const prev = replacedBy.get(Number(row.replaces_nid));
        if (prev) {
          const prevPdu = prev.redacted_by ? redactEvent(JSON.parse(prev.json), version) : JSON.parse(prev.json);
          unsigned.prev_content = prevPdu.content;
          unsigned.prev_sender = prev.sender;
          unsigned.replaces_state = prev.event_id;
        }
      }
      const rel = relations.get(row.event_id);
      if (rel && !row.redacted_by) unsigned['m.relations'] = rel;
      const ev: ClientEvent = {
        content: (pdu.content as Record<string, unknown>) ?? {},
        event_id: row.event_id,
        origin_server_ts: Number(row.origin_server_ts),
        sender: row.sender,
        type: row.type,
        unsigned,
      };
      if (!opts.omitRoomId) ev.room_id = row.room_id;
      if (row.state_key !== null) ev.state_key = row.state_key;
      // Clients look for `redacts` at the top level in every room version.
      if (row.type === 'm.room.redaction') {
        const redacts = (pdu.redacts as string | undefined) ?? ((pdu.content as Record<string, unknown>)?.redacts as string | undefined);
        if (redacts) ev.redacts = redacts;
      }
      return ev;
    }),
  );
}

/** Bundled aggregations as the spec lists them: m.replace (latest edit), m.thread and m.reference. */
async function bundledRelations(store: RoomStore, rows: EventRow[], userId?: string, visible?: FormatOptions['visible']): Promise<Map<string, Record<string, unknown>>> {
  const ids = rows.map((r) => r.event_id);
  let related = await store.aggregatedRelations(ids);
  if (visible && related.length) {
    const seen = new Set((await visible(related)).map((r) => r.event_id));
    related = related.filter((r) => seen.has(r.event_id));
  }
  const out = new Map<string, Record<string, unknown>>();
  const originalSender = new Map(rows.map((x) => [x.event_id, x.sender]));
  const latestThread = new Map<string, string>();
  const latestEdit = new Map<string, string>();
  for (const rel of related) {
    const agg = out.get(rel.relates_to) ?? {};
    if (rel.rel_type === 'm.replace') {
      // Only the original sender's edits count.
      if (rel.sender === originalSender.get(rel.relates_to)) latestEdit.set(rel.relates_to, rel.event_id);
    } else if (rel.rel_type === 'm.thread') {
      const t = (agg['m.thread'] as { count: number; current_user_participated: boolean } | undefined) ?? { count: 0, current_user_participated: userId !== undefined && originalSender.get(rel.relates_to) === userId };
      t.count += 1;
      if (rel.sender === userId) t.current_user_participated = true;
      agg['m.thread'] = t;
      latestThread.set(rel.relates_to, rel.event_id);
    } else {
      const ref = (agg['m.reference'] as { chunk: Array<{ event_id: string }> } | undefined) ?? { chunk: [] };
      ref.chunk.push({ event_id: rel.event_id });
      agg['m.reference'] = ref;
    }
    out.set(rel.relates_to, agg);
  }
  const needed = [...latestThread.values(), ...latestEdit.values()];
  if (needed.length) {
    const evs = await formatEvents(store, related.filter((r) => needed.includes(r.event_id)), { userId, aggregations: false });
    const byId = new Map(evs.map((e) => [e.event_id, e]));
    for (const [target, id] of latestThread) {
      const t = out.get(target)!['m.thread'] as Record<string, unknown>;
      t.latest_event = byId.get(id);
    }
    for (const [target, id] of latestEdit) {
      const agg = out.get(target) ?? {};
      agg['m.replace'] = byId.get(id);
      out.set(target, agg);
    }
  }
  for (const [k, v] of out) if (Object.keys(v).length === 0) out.delete(k);
  return out;
}
