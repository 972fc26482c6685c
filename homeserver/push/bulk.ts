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

/** An event as push evaluation reads it: from the engine's write (live) or a stored row (catch-up). */
export interface PushInput {
  eventId: string;
  roomId: string;
  roomNid: number;
  pos: number;
  type: string;
  stateKey: string | undefined;
  sender: string;
  ts: number;
  membership: string | undefined;
  stateBefore: number;
  stateAfter: number;
  redacted: boolean;
  pdu: Record<string, unknown>;
}

/** A stored event row as PushInput. */
export function inputOfRow(row: EventRow): PushInput {
  const pdu = JSON.parse(row.json) as Record<string, unknown>;
  pdu.event_id = row.event_id;
  return {
    eventId: row.event_id, roomId: row.room_id, roomNid: Number(row.room_nid), pos: Number(row.stream_pos), type: row.type,
    stateKey: row.state_key ?? undefined, sender: row.sender, ts: Number(row.origin_server_ts), membership: row.membership ?? undefined,
    stateBefore: Number(row.state_before), stateAfter: Number(row.state_after), redacted: !!row.redacted_by, pdu,
  };
}

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

  /**
   * `isLocal`: whether a user is this server's. Only local users have push rules, counts and
   * pushers here (as Synapse): remote members count towards room_member_count and nothing else.
   */
  constructor(private reader: RoomReader, private pushRules: PushRulesService, private isLocal: (userId: string) => boolean = () => true) {
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
  async evaluateRoom(rows: PushInput[], evaluateRow: (row: PushInput) => boolean = () => true): Promise<PushWrite> {
    const out: PushWrite = { shared: [], actions: [], members: [], notified: new Set() };
    if (!rows.length) return out;
    const roomNid = rows[0]!.roomNid;
    const roomId = rows[0]!.roomId;
    const work: Array<{ row: PushInput; state: RoomState; invitee: string | undefined }> = [];
    let state = this.rooms.get(roomNid);
    for (const row of rows) {
      const before = row.stateBefore;
      const after = row.stateAfter;
      const evaluated = evaluateRow(row);
      if (!state || state.group !== before) {
        // The snapshot before the row is committed (the one after may be written with it): read
        // that one and apply the row. Members this worker sees joined for the first time (their
        // join is older, or another worker's): whose shared actions these are from now on.
        state = await this.load(before);
        for (const u of state.joined) if (this.isLocal(u)) out.members.push({ roomId, userId: u, joined: true, pos: 0 });
      }
      if (after !== before) {
        const was = row.type === 'm.room.member' && row.stateKey ? state.joined.has(row.stateKey) : false;
        // Copy on write: an evaluation queued before this row keeps the state it saw.
        state = applyInput(state, row, after);
        if (evaluated && row.type === 'm.room.member' && row.stateKey) {
          const now = state.joined.has(row.stateKey);
          if (now !== was && this.isLocal(row.stateKey)) out.members.push({ roomId, userId: row.stateKey, joined: now, pos: row.pos });
        }
      }
      if (!evaluated || row.redacted) continue;
      // An invite notifies the invitee (.m.rule.invite_for_me), who is not joined yet.
      const invitee = row.type === 'm.room.member' && row.membership === 'invite' && row.stateKey && row.stateKey !== row.sender && !state.joined.has(row.stateKey) && this.isLocal(row.stateKey)
        ? row.stateKey : undefined;
      work.push({ row, state, invitee });
    }
    if (state) this.rooms.set(roomNid, state);
    const needed: string[] = [];
    for (const st of new Set(work.map((w) => w.state))) if (st.listEpoch !== this.epoch) for (const u of st.joined) if (this.isLocal(u)) needed.push(u);
    for (const w of work) if (w.invitee) needed.push(w.invitee);
    await this.loadRules(needed);

    for (const { row, state: st, invitee } of work) {
      const pdu = row.pdu;
      const ev = new EvalEvent(pdu);
      const room: RoomContext = { memberCount: st.joined.size, senderPower: senderPower(st.powerLevels, row.sender, st.create), powerLevels: st.powerLevels };
      const threadId = threadOf(pdu.content);
      const pos = row.pos;
      const ts = row.ts;
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
        out.shared.push({ roomId, streamPos: pos, eventId: row.eventId, threadId, sender: row.sender, highlight: highlights(shared!), actions: actionsJson(shared!), ts });
      }
      const own = (userId: string, actions: PushAction[] | undefined, unread: boolean) => {
        const notify = !!actions && notifies(actions);
        if (notify) out.notified.add(userId);
        out.actions.push({
          userId, streamPos: pos, roomId, eventId: row.eventId, threadId, notify,
          highlight: notify && highlights(actions!), actions: notify ? actionsJson(actions!) : null, ts, unread,
        });
      };
      for (const [actions, users] of results) {
        if (actions === shared && sharedNotifies) continue;
        // Without shared actions, only the members who are notified need a row.
        if (!sharedNotifies && !(actions && notifies(actions))) continue;
        for (const u of users) own(u, actions, true);
      }
      for (const o of outsiders) if (o.actions && notifies(o.actions)) own(o.userId, o.actions, !(row.type === 'm.room.member' && row.stateKey === o.userId));
    }
    return out;
  }

  /** The joined members of a room state with their templates (kept on the state while rules stay). */
  private memberList(st: RoomState): Evaluee[] {
    if (st.list && st.listEpoch === this.epoch) return st.list;
    const list: Evaluee[] = [];
    for (const userId of st.joined) {
      if (!this.isLocal(userId)) continue;
      const template = this.templates.get(userId);
      if (template) list.push({ userId, displayName: st.members.get(userId)?.displayName, template });
    }
    st.list = list;
    st.listEpoch = this.epoch;
    return list;
  }

  /** The state a room's members have at a snapshot: one query. */
  private async load(group: number): Promise<RoomState> {
    const rows = await this.reader.stateOfGroup(group, { types: STATE_TYPES });
    let state: RoomState = { group, members: new Map(), joined: new Set(), powerLevels: undefined, create: undefined };
    for (const r of rows) state = applyInput(state, inputOfRow(r), group, true);
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
function applyInput(state: RoomState, row: PushInput, group: number, inPlace = false): RoomState {
  const s = inPlace ? state : { ...state, group, list: undefined, listEpoch: undefined };
  s.group = group;
  if (row.stateKey === undefined) return s;
  const content = (row.pdu.content ?? {}) as Record<string, unknown>;
  if (row.type === 'm.room.member') {
    const membership = row.membership ?? 'leave';
    if (!inPlace) {
      s.members = new Map(s.members);
      s.joined = new Set(s.joined);
    }
    s.members.set(row.stateKey, { membership, displayName: typeof content.displayname === 'string' ? content.displayname : undefined });
    if (membership === 'join') s.joined.add(row.stateKey);
    else s.joined.delete(row.stateKey);
  } else if (row.type === 'm.room.power_levels' && row.stateKey === '') {
    s.powerLevels = content as PowerLevelsContent;
  } else if (row.type === 'm.room.create' && row.stateKey === '') {
    s.create = { sender: row.sender, content };
  }
  return s;
}

/** Actions as stored: NULL for the plain ["notify"]. */
function actionsJson(actions: PushAction[]): string | null {
  return actions.length === 1 && actions[0] === 'notify' ? null : JSON.stringify(actions);
}
