// Bulk push evaluation: the push rules of every member of a room on each new event, in memory. The
// room's members, display names and power levels come from its state, loaded once per state
// snapshot and carried forward event by event; each member's compiled rules are cached until their
// m.push_rules change. A send into a room of 1,000 members costs no query per member.
import { LruCache } from '../cache/lru.ts';
import type { PowerLevelsContent } from '../protocol/power-levels.ts';
import type { EventRow, RoomReader } from '../rooms/reader.ts';
import { threadOf } from '../receipts/service.ts';
import { EvalEvent, evaluateTemplate, highlights, notifies, senderPower, templateFor, type RoomContext, type Template } from './evaluator.ts';
import type { PushAction } from './rules.ts';
import type { PushRulesService } from './service.ts';
import type { PushWrite } from './store.ts';

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

/** A joined member with their template, as evaluation walks them (MemberContext). */
interface Evaluee {
  userId: string;
  displayName: string | undefined;
  template: Template;
  localpart?: string;
  lowerName?: string;
}

/** A room's state as push evaluation needs it, valid at one state snapshot (`group`). */
interface RoomState {
  group: number;
  members: Map<string, Member>;
  joined: Set<string>;
  powerLevels: PowerLevelsContent | undefined;
  create: { sender: string; content: Record<string, unknown> } | undefined;
  /** The joined members with their templates, valid while `listEpoch` is the rules' epoch. */
  list?: Evaluee[];
  listEpoch?: number;
}

export class BulkEvaluator {
  private rooms = new LruCache<number, RoomState>(ROOMS_CACHED);
  /** Each user's rules as a template (shared by users whose rules have the same shape). */
  private templates = new LruCache<string, Template>(RULESETS_CACHED);
  /** Bumped per user when their rules change, so a load that raced a change is not cached. */
  private versions = new Map<string, number>();

  constructor(private reader: RoomReader, private pushRules: PushRulesService) {
    pushRules.changed.subscribe((userId) => this.rulesChanged(userId));
  }

  /** Bumped whenever any user's rules change: the rooms' member lists are built again. */
  private epoch = 0;

  rulesChanged(userId: string): void {
    this.epoch += 1;
    this.templates.delete(userId);
    this.versions.set(userId, (this.versions.get(userId) ?? 0) + 1);
  }

  /**
   * The push actions for the events of one room (rows oldest first): per event the actions most
   * members get (shared), the members who get others, and the member changes push_members keeps.
   * Every row carries the room's state forward; only rows that `evaluateRow` accepts are evaluated.
   */
  async evaluateRoom(rows: EventRow[], evaluateRow: (row: EventRow) => boolean = () => true): Promise<PushWrite> {
    const out: PushWrite = { shared: [], actions: [], members: [], notified: new Set() };
    if (!rows.length) return out;
    const roomNid = Number(rows[0]!.room_nid);
    const roomId = rows[0]!.room_id;
    const work: Array<{ row: EventRow; state: RoomState; invitee: string | undefined }> = [];
    let state = this.rooms.get(roomNid);
    for (const row of rows) {
      const before = Number(row.state_before);
      const after = Number(row.state_after);
      const evaluated = evaluateRow(row);
      if (state && state.group === before) {
        if (after !== before) {
          const was = row.type === 'm.room.member' && row.state_key ? state.joined.has(row.state_key) : false;
          // Copy on write: an evaluation queued before this row keeps the state it saw.
          state = applyRow(state, row, after);
          if (evaluated && row.type === 'm.room.member' && row.state_key) {
            const now = state.joined.has(row.state_key);
            if (now !== was) out.members.push({ roomId, userId: row.state_key, joined: now, pos: Number(row.stream_pos) });
          }
        }
      } else if (!state || state.group !== after) {
        state = await this.load(after);
        // Members this worker sees joined for the first time (their join is older, or another
        // worker's): whose shared actions these are from now on.
        for (const u of state.joined) out.members.push({ roomId, userId: u, joined: true, pos: 0 });
        if (evaluated && row.type === 'm.room.member' && row.state_key && state.joined.has(row.state_key)) {
          out.members.push({ roomId, userId: row.state_key, joined: true, pos: Number(row.stream_pos) });
        }
      }
      if (!evaluated || row.redacted_by) continue;
      // An invite notifies the invitee (.m.rule.invite_for_me), who is not joined yet.
      const invitee = row.type === 'm.room.member' && row.membership === 'invite' && row.state_key && row.state_key !== row.sender && !state.joined.has(row.state_key)
        ? row.state_key : undefined;
      work.push({ row, state, invitee });
    }
    if (state) this.rooms.set(roomNid, state);
    const needed: string[] = [];
    for (const st of new Set(work.map((w) => w.state))) if (st.listEpoch !== this.epoch) needed.push(...st.joined);
    for (const w of work) if (w.invitee) needed.push(w.invitee);
    await this.loadRules(needed);

    for (const { row, state: st, invitee } of work) {
      const pdu = JSON.parse(row.json) as Record<string, unknown>;
      pdu.event_id = row.event_id;
      const ev = new EvalEvent(pdu);
      const room: RoomContext = { memberCount: st.joined.size, senderPower: senderPower(st.powerLevels, row.sender, st.create), powerLevels: st.powerLevels };
      const threadId = threadOf(pdu.content);
      const pos = Number(row.stream_pos);
      const ts = Number(row.origin_server_ts);
      // Each member's actions, grouped: the largest group of joined members shares one row.
      const results = new Map<PushAction[] | undefined, string[]>();
      const outsiders: Array<{ userId: string; actions: PushAction[] | undefined }> = [];
      for (const m of this.memberList(st)) {
        if (m.userId === row.sender) continue;
        const actions = evaluateTemplate(m.template, ev, room, m)?.actions;
        const list = results.get(actions);
        if (list) list.push(m.userId);
        else results.set(actions, [m.userId]);
      }
      const t = invitee ? this.templates.get(invitee) : undefined;
      if (invitee && t) outsiders.push({ userId: invitee, actions: evaluateTemplate(t, ev, room, { userId: invitee, displayName: st.members.get(invitee)?.displayName })?.actions });
      let shared: PushAction[] | undefined;
      let most = -1;
      for (const [actions, users] of results) {
        if (users.length > most) {
          most = users.length;
          shared = actions;
        }
      }
      const sharedNotifies = !!shared && notifies(shared);
      if (sharedNotifies) {
        for (const u of results.get(shared)!) out.notified.add(u);
        out.shared.push({ roomId, streamPos: pos, eventId: row.event_id, threadId, sender: row.sender, highlight: highlights(shared!), actions: actionsJson(shared!), ts });
      }
      const own = (userId: string, actions: PushAction[] | undefined, unread: boolean) => {
        const notify = !!actions && notifies(actions);
        if (notify) out.notified.add(userId);
        out.actions.push({
          userId, streamPos: pos, roomId, eventId: row.event_id, threadId, notify,
          highlight: notify && highlights(actions!), actions: notify ? actionsJson(actions!) : null, ts, unread,
        });
      };
      for (const [actions, users] of results) {
        if (actions === shared && sharedNotifies) continue;
        // Without shared actions, only the members who are notified need a row.
        if (!sharedNotifies && !(actions && notifies(actions))) continue;
        for (const u of users) own(u, actions, true);
      }
      for (const o of outsiders) if (o.actions && notifies(o.actions)) own(o.userId, o.actions, !(row.type === 'm.room.member' && row.state_key === o.userId));
    }
    return out;
  }

  /** The joined members of a room state with their templates (kept on the state while rules stay). */
  private memberList(st: RoomState): Evaluee[] {
    if (st.list && st.listEpoch === this.epoch) return st.list;
    const list: Evaluee[] = [];
    for (const userId of st.joined) {
      const template = this.templates.get(userId);
      if (template) list.push({ userId, displayName: st.members.get(userId)?.displayName, template });
    }
    st.list = list;
    st.listEpoch = this.epoch;
    return list;
  }

  /** The state a room's members have at a snapshot: one query. */
  private async load(group: number): Promise<RoomState> {
    const rows = await this.reader.stateForSync(group, undefined, { types: STATE_TYPES });
    let state: RoomState = { group, members: new Map(), joined: new Set(), powerLevels: undefined, create: undefined };
    for (const r of rows) state = applyRow(state, r, group, true);
    return state;
  }

  /** The templates of users not cached, a few reads at a time. */
  private async loadRules(userIds: string[]): Promise<void> {
    const missing = [...new Set(userIds)].filter((u) => !this.templates.has(u));
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < missing.length; i = next++) {
        const userId = missing[i]!;
        const version = this.versions.get(userId) ?? 0;
        const t = templateFor(await this.pushRules.storedRules(userId), userId);
        if ((this.versions.get(userId) ?? 0) === version) this.templates.set(userId, t);
        else this.templates.set(userId, templateFor(await this.pushRules.storedRules(userId), userId));
      }
    };
    await Promise.all(Array.from({ length: Math.min(RULE_LOADS_AT_ONCE, missing.length) }, worker));
  }
}

/** The room state after a state event (a new object unless `inPlace`). */
function applyRow(state: RoomState, row: EventRow, group: number, inPlace = false): RoomState {
  const s = inPlace ? state : { ...state, group, list: undefined, listEpoch: undefined };
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

/** Actions as stored: NULL for the plain ["notify"]. */
function actionsJson(actions: PushAction[]): string | null {
  return actions.length === 1 && actions[0] === 'notify' ? null : JSON.stringify(actions);
}
