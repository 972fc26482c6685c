// Bulk push evaluation: the push rules of every member of a room on each new event, in memory. The
// room's members, display names and power levels come from its state, loaded once per state
// snapshot and carried forward event by event; each member's compiled rules are cached until their
// m.push_rules change. A send into a room of 1,000 members costs no query per member.
import { LruCache } from '../cache/lru.ts';
import type { PowerLevelsContent } from '../protocol/power-levels.ts';
import type { EventRow, RoomReader } from '../rooms/reader.ts';
import { threadOf } from '../receipts/service.ts';
import { compileRuleset, evaluate, EvalEvent, highlights, notifies, senderPower, type CompiledRuleset, type RoomContext } from './evaluator.ts';
import type { PushRulesService } from './service.ts';
import type { ActionRow } from './store.ts';

/** Rooms whose member list is kept, and users whose compiled rules are kept. */
const ROOMS_CACHED = 2_000;
const RULESETS_CACHED = 100_000;
/** Users' rules read at once when they are not cached. */
const RULE_LOADS_AT_ONCE = 8;
const STATE_TYPES = ['m.room.member', 'm.room.power_levels', 'm.room.create'];

interface Member {
  membership: string;
  displayName: string | undefined;
}

/** A room's state as push evaluation needs it, valid at one state snapshot (`group`). */
interface RoomState {
  group: number;
  members: Map<string, Member>;
  joined: Set<string>;
  powerLevels: PowerLevelsContent | undefined;
  create: { sender: string; content: Record<string, unknown> } | undefined;
}

export class BulkEvaluator {
  private rooms = new LruCache<number, RoomState>(ROOMS_CACHED);
  private rulesets = new LruCache<string, CompiledRuleset>(RULESETS_CACHED);
  /** Bumped per user when their rules change, so a load that raced a change is not cached. */
  private versions = new Map<string, number>();

  constructor(private reader: RoomReader, private pushRules: PushRulesService) {
    pushRules.changed.subscribe((userId) => this.rulesChanged(userId));
  }

  rulesChanged(userId: string): void {
    this.rulesets.delete(userId);
    this.versions.set(userId, (this.versions.get(userId) ?? 0) + 1);
  }

  /**
   * The notifying actions for the events of one room (rows oldest first). Every row carries the
   * room's state forward; only rows that `evaluate` accepts are evaluated.
   */
  async evaluateRoom(rows: EventRow[], evaluateRow: (row: EventRow) => boolean = () => true): Promise<ActionRow[]> {
    if (!rows.length) return [];
    const roomNid = Number(rows[0]!.room_nid);
    const work: Array<{ row: EventRow; state: RoomState; candidates: string[] }> = [];
    let state = this.rooms.get(roomNid);
    for (const row of rows) {
      const before = Number(row.state_before);
      const after = Number(row.state_after);
      if (state && state.group === before) {
        if (after !== before) {
          // Copy on write: an evaluation queued before this row keeps the state it saw.
          state = applyRow(state, row, after);
        }
      } else if (!state || state.group !== after) {
        state = await this.load(after);
      }
      if (!evaluateRow(row) || row.redacted_by) continue;
      const candidates = [...state.joined].filter((u) => u !== row.sender);
      // An invite notifies the invitee (.m.rule.invite_for_me), who is not joined yet.
      if (row.type === 'm.room.member' && row.membership === 'invite' && row.state_key && row.state_key !== row.sender && !state.joined.has(row.state_key)) {
        candidates.push(row.state_key);
      }
      work.push({ row, state, candidates });
    }
    if (state) this.rooms.set(roomNid, state);
    await this.loadRules(work.flatMap((w) => w.candidates));

    const out: ActionRow[] = [];
    for (const { row, state: st, candidates } of work) {
      const pdu = JSON.parse(row.json) as Record<string, unknown>;
      pdu.event_id = row.event_id;
      const ev = new EvalEvent(pdu);
      const room: RoomContext = { memberCount: st.joined.size, senderPower: senderPower(st.powerLevels, row.sender, st.create), powerLevels: st.powerLevels };
      const threadId = threadOf(pdu.content);
      for (const userId of candidates) {
        const rules = this.rulesets.get(userId);
        if (!rules) continue;
        const hit = evaluate(rules, ev, room, { userId, displayName: st.members.get(userId)?.displayName });
        if (!hit || !notifies(hit.actions)) continue;
        const plain = hit.actions.length === 1;
        out.push({
          userId,
          streamPos: Number(row.stream_pos),
          roomId: row.room_id,
          eventId: row.event_id,
          threadId,
          highlight: highlights(hit.actions),
          actions: plain ? null : JSON.stringify(hit.actions),
          ts: Number(row.origin_server_ts),
          unread: !(row.type === 'm.room.member' && row.state_key === userId),
        });
      }
    }
    return out;
  }

  /** The state a room's members have at a snapshot: one query. */
  private async load(group: number): Promise<RoomState> {
    const rows = await this.reader.stateForSync(group, undefined, { types: STATE_TYPES });
    let state: RoomState = { group, members: new Map(), joined: new Set(), powerLevels: undefined, create: undefined };
    for (const r of rows) state = applyRow(state, r, group, true);
    return state;
  }

  /** Compiles the rules of users not cached, a few reads at a time. */
  private async loadRules(userIds: string[]): Promise<void> {
    const missing = [...new Set(userIds)].filter((u) => !this.rulesets.has(u));
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < missing.length; i = next++) {
        const userId = missing[i]!;
        const version = this.versions.get(userId) ?? 0;
        const compiled = compileRuleset(await this.pushRules.storedRules(userId));
        if ((this.versions.get(userId) ?? 0) === version) this.rulesets.set(userId, compiled);
        else this.rulesets.set(userId, compileRuleset(await this.pushRules.storedRules(userId)));
      }
    };
    await Promise.all(Array.from({ length: Math.min(RULE_LOADS_AT_ONCE, missing.length) }, worker));
  }
}

/** The room state after a state event (a new object unless `inPlace`). */
function applyRow(state: RoomState, row: EventRow, group: number, inPlace = false): RoomState {
  const s = inPlace ? state : { ...state, group };
  s.group = group;
  if (row.state_key === null || row.state_key === undefined) return s;
  if (row.type === 'm.room.member') {
    const content = (JSON.parse(row.json) as { content?: { displayname?: unknown } }).content;
    const membership = row.membership ?? 'leave';
    if (!inPlace) {
      s.members = new Map(s.members);
      s.joined = new Set(s.joined);
    }
    s.members.set(row.state_key, { membership, displayName: typeof content?.displayname === 'string' ? content.displayname : undefined });
    if (membership === 'join') s.joined.add(row.state_key);
    else s.joined.delete(row.state_key);
  } else if (row.type === 'm.room.power_levels' && row.state_key === '') {
    s.powerLevels = (JSON.parse(row.json) as { content?: PowerLevelsContent }).content;
  } else if (row.type === 'm.room.create' && row.state_key === '') {
    const pdu = JSON.parse(row.json) as { sender: string; content: Record<string, unknown> };
    s.create = { sender: pdu.sender, content: pdu.content ?? {} };
  }
  return s;
}
