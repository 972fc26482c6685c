// Push rules (client-server spec, "Push Rules"): the server-default rule set and the pure
// operations on a user's rule set. No I/O here; push/service.ts loads and stores the result as the
// user's `m.push_rules` global account data.
import { MatrixError, notFound } from '../http/errors.ts';

export const KINDS = ['override', 'content', 'room', 'sender', 'underride'] as const;
export type PushKind = (typeof KINDS)[number];

export type PushAction = string | Record<string, unknown>;
export type PushCondition = Record<string, unknown> & { kind: string };

export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: PushAction[];
  /** override and underride rules only. */
  conditions?: PushCondition[];
  /** content rules only. */
  pattern?: string;
}

export type Ruleset = Record<PushKind, PushRule[]>;

export function isKind(s: string): s is PushKind {
  return (KINDS as readonly string[]).includes(s);
}

const SOUND_DEFAULT = { set_tweak: 'sound', value: 'default' };
const SOUND_RING = { set_tweak: 'sound', value: 'ring' };
const HIGHLIGHT = { set_tweak: 'highlight' };
const match = (key: string, pattern: string): PushCondition => ({ kind: 'event_match', key, pattern });

function rule(rule_id: string, conditions: PushCondition[], actions: PushAction[], enabled = true): PushRule {
  return { rule_id, default: true, enabled, conditions, actions };
}

/**
 * The server-default rules in the spec's order, with the user's own ID and localpart filled in.
 * The rules removed from the spec in v1.17 (contains_display_name, roomnotif, contains_user_name)
 * are kept, as Synapse keeps them: clients of older spec versions still rely on them.
 */
export function defaultRules(userId: string): Ruleset {
  const localpart = userId.slice(1, userId.indexOf(':'));
  return {
    override: [
      rule('.m.rule.master', [], [], false),
      rule('.m.rule.suppress_notices', [match('content.msgtype', 'm.notice')], []),
      rule('.m.rule.invite_for_me', [match('type', 'm.room.member'), match('content.membership', 'invite'), match('state_key', userId)], ['notify', SOUND_DEFAULT]),
      rule('.m.rule.member_event', [match('type', 'm.room.member')], []),
      rule('.m.rule.is_user_mention', [{ kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: userId }], ['notify', SOUND_DEFAULT, HIGHLIGHT]),
      rule('.m.rule.contains_display_name', [{ kind: 'contains_display_name' }], ['notify', SOUND_DEFAULT, HIGHLIGHT]),
      rule('.m.rule.is_room_mention', [{ kind: 'event_property_is', key: 'content.m\\.mentions.room', value: true }, { kind: 'sender_notification_permission', key: 'room' }], ['notify', HIGHLIGHT]),
      rule('.m.rule.roomnotif', [match('content.body', '@room'), { kind: 'sender_notification_permission', key: 'room' }], ['notify', HIGHLIGHT]),
      rule('.m.rule.tombstone', [match('type', 'm.room.tombstone'), match('state_key', '')], ['notify', HIGHLIGHT]),
      rule('.m.rule.reaction', [match('type', 'm.reaction')], []),
      rule('.m.rule.room.server_acl', [match('type', 'm.room.server_acl'), match('state_key', '')], []),
      rule('.m.rule.suppress_edits', [{ kind: 'event_property_is', key: 'content.m\\.relates_to.rel_type', value: 'm.replace' }], []),
    ],
    content: [
      { rule_id: '.m.rule.contains_user_name', default: true, enabled: true, pattern: localpart, actions: ['notify', SOUND_DEFAULT, HIGHLIGHT] },
    ],
    room: [],
    sender: [],
    underride: [
      rule('.m.rule.call', [match('type', 'm.call.invite')], ['notify', SOUND_RING]),
      rule('.m.rule.encrypted_room_one_to_one', [{ kind: 'room_member_count', is: '2' }, match('type', 'm.room.encrypted')], ['notify', SOUND_DEFAULT]),
      rule('.m.rule.room_one_to_one', [{ kind: 'room_member_count', is: '2' }, match('type', 'm.room.message')], ['notify', SOUND_DEFAULT]),
      rule('.m.rule.message', [match('type', 'm.room.message')], ['notify']),
      rule('.m.rule.encrypted', [match('type', 'm.room.encrypted')], ['notify']),
    ],
  };
}

const MASTER = '.m.rule.master';

/** Historical actions that clients and servers MUST ignore. */
const IGNORED_ACTIONS = new Set(['dont_notify', 'coalesce']);

/** Checks actions as Synapse does and strips the historical ones; M_BAD_JSON when malformed. */
export function checkActions(actions: unknown): PushAction[] {
  if (!Array.isArray(actions)) throw new MatrixError(400, 'M_BAD_JSON', 'actions must be an array');
  const out: PushAction[] = [];
  for (const a of actions) {
    if (typeof a === 'string') {
      if (IGNORED_ACTIONS.has(a)) continue;
      if (a !== 'notify') throw new MatrixError(400, 'M_BAD_JSON', `Unrecognised action ${a}`);
      out.push(a);
    } else if (a !== null && typeof a === 'object' && !Array.isArray(a) && typeof (a as Record<string, unknown>).set_tweak === 'string') {
      out.push(a as Record<string, unknown>);
    } else {
      throw new MatrixError(400, 'M_BAD_JSON', `Unrecognised action ${JSON.stringify(a)}`);
    }
  }
  return out;
}

const isScalar = (v: unknown) => v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isSafeInteger(v));

/**
 * Checks conditions: each needs a `kind`, and the kinds the spec defines need their parameters.
 * Unknown kinds are kept (they never match, which the spec says disables the rule).
 */
export function checkConditions(conditions: unknown): PushCondition[] {
  if (!Array.isArray(conditions)) throw new MatrixError(400, 'M_BAD_JSON', 'conditions must be an array');
  return conditions.map((c, i) => {
    const where = `conditions.${i}`;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new MatrixError(400, 'M_BAD_JSON', `${where} must be an object`);
    const cond = c as Record<string, unknown>;
    if (cond.kind === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', `${where}.kind is missing`);
    if (typeof cond.kind !== 'string') throw new MatrixError(400, 'M_BAD_JSON', `${where}.kind must be a string`);
    const needString = (key: string) => {
      if (cond[key] === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', `${where}.${key} is missing`);
      if (typeof cond[key] !== 'string') throw new MatrixError(400, 'M_BAD_JSON', `${where}.${key} must be a string`);
    };
    switch (cond.kind) {
      case 'event_match':
        needString('key');
        needString('pattern');
        break;
      case 'event_property_is':
      case 'event_property_contains':
        needString('key');
        if (!('value' in cond)) throw new MatrixError(400, 'M_MISSING_PARAM', `${where}.value is missing`);
        if (!isScalar(cond.value)) throw new MatrixError(400, 'M_BAD_JSON', `${where}.value must be a string, integer, boolean or null`);
        break;
      case 'room_member_count':
        needString('is');
        if (!/^(==|<|>|<=|>=)?[0-9]+$/.test(cond.is as string)) throw new MatrixError(400, 'M_BAD_JSON', `${where}.is is not a valid member count comparison`);
        break;
      case 'sender_notification_permission':
        needString('key');
        break;
    }
    return cond as PushCondition;
  });
}

/** A stored rule as the spec shapes it for its kind; undefined when it is malformed. */
function cleanRule(kind: PushKind, raw: unknown): PushRule | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r.rule_id !== 'string' || !Array.isArray(r.actions)) return undefined;
  const out: PushRule = {
    rule_id: r.rule_id,
    default: r.default === true,
    enabled: r.enabled !== false,
    actions: r.actions.filter((a) => !(typeof a === 'string' && IGNORED_ACTIONS.has(a))) as PushAction[],
  };
  if (kind === 'override' || kind === 'underride') out.conditions = Array.isArray(r.conditions) ? (r.conditions as PushCondition[]) : [];
  if (kind === 'content') {
    if (typeof r.pattern !== 'string') return undefined;
    out.pattern = r.pattern;
  }
  return out;
}

/**
 * A user's rule set from their stored `m.push_rules` content: their own rules in their stored
 * order, and the current server-default rules with the user's enabled/actions changes applied.
 * Defaults added to the server later appear for everyone; ones removed disappear.
 */
export function normalize(stored: Record<string, unknown> | undefined, userId: string): Ruleset {
  const base = defaultRules(userId);
  const global = (stored?.global ?? {}) as Record<string, unknown>;
  const out = {} as Ruleset;
  for (const kind of KINDS) {
    const rows = Array.isArray(global[kind]) ? (global[kind] as unknown[]) : [];
    const user: PushRule[] = [];
    const tweaks = new Map<string, PushRule>();
    const seen = new Set<string>();
    for (const raw of rows) {
      const r = cleanRule(kind, raw);
      if (!r || seen.has(r.rule_id)) continue;
      seen.add(r.rule_id);
      if (r.default) tweaks.set(r.rule_id, r);
      else if (!r.rule_id.startsWith('.')) user.push(r);
    }
    const defaults = base[kind].map((d) => {
      const t = tweaks.get(d.rule_id);
      return t ? { ...d, enabled: t.enabled, actions: t.actions } : d;
    });
    // The master rule outranks even the user's own override rules.
    const [first, ...rest] = defaults;
    out[kind] = kind === 'override' && first?.rule_id === MASTER ? [first, ...user, ...rest] : [...user, ...defaults];
  }
  return out;
}

export function findRule(rules: Ruleset, kind: PushKind, ruleId: string): PushRule {
  const r = rules[kind].find((x) => x.rule_id === ruleId);
  if (!r) throw notFound('The push rule was not found.');
  return r;
}

export interface NewRule {
  actions: PushAction[];
  conditions?: PushCondition[];
  pattern?: string;
}

/**
 * Adds or updates a user-defined rule. An update keeps the rule's enabled state; a new rule is
 * enabled. With `before`/`after` (before wins when both are given) the rule is placed next to that
 * user-defined rule of the same kind; otherwise it becomes the most important user-defined rule.
 */
export function putRule(rules: Ruleset, kind: PushKind, ruleId: string, body: NewRule, before?: string, after?: string): void {
  const list = rules[kind];
  const existing = list.find((r) => r.rule_id === ruleId);
  const r: PushRule = { rule_id: ruleId, default: false, enabled: existing?.enabled ?? true, actions: body.actions };
  if (kind === 'override' || kind === 'underride') r.conditions = body.conditions ?? [];
  if (kind === 'content') r.pattern = body.pattern;
  const rest = list.filter((x) => x.rule_id !== ruleId);
  let at: number;
  const relative = before ?? after;
  if (relative !== undefined) {
    const i = rest.findIndex((x) => x.rule_id === relative && !x.default);
    if (i < 0) throw new MatrixError(400, 'M_UNKNOWN', `before/after rule not found: ${relative}`);
    at = before !== undefined ? i : i + 1;
  } else {
    at = kind === 'override' && rest[0]?.rule_id === MASTER ? 1 : 0;
  }
  rest.splice(at, 0, r);
  rules[kind] = rest;
}

export function deleteRule(rules: Ruleset, kind: PushKind, ruleId: string): void {
  const r = findRule(rules, kind, ruleId);
  if (r.default) throw new MatrixError(400, 'M_INVALID_PARAM', 'Server-default push rules cannot be deleted');
  rules[kind] = rules[kind].filter((x) => x !== r);
}

export function setEnabled(rules: Ruleset, kind: PushKind, ruleId: string, enabled: boolean): void {
  findRule(rules, kind, ruleId).enabled = enabled;
}

export function setActions(rules: Ruleset, kind: PushKind, ruleId: string, actions: PushAction[]): void {
  findRule(rules, kind, ruleId).actions = actions;
}

/**
 * Copies a user's rules about one room to another (room upgrades, as Synapse does): the room rule
 * named after the old room, and override/underride rules with a `room_id` condition on it.
 */
export function copyRoomRules(rules: Ruleset, oldRoomId: string, newRoomId: string): boolean {
  let changed = false;
  const room = rules.room.find((r) => r.rule_id === oldRoomId && !r.default);
  if (room && !rules.room.some((r) => r.rule_id === newRoomId)) {
    rules.room.unshift({ ...room, rule_id: newRoomId, enabled: true, actions: [...room.actions] });
    changed = true;
  }
  for (const kind of ['override', 'underride'] as const) {
    for (const r of [...rules[kind]]) {
      if (r.default || !r.conditions?.some((c) => c.key === 'room_id' && c.pattern === oldRoomId)) continue;
      // Synapse names the copy after the new room.
      if (rules[kind].some((x) => x.rule_id === newRoomId)) continue;
      const conditions = r.conditions.map((c) => (c.key === 'room_id' && c.pattern === oldRoomId ? { ...c, pattern: newRoomId } : c));
      putRule(rules, kind, newRoomId, { actions: [...r.actions], conditions });
      changed = true;
    }
  }
  return changed;
}

/** The account data content: the spec's `m.push_rules` event content. */
export function toContent(rules: Ruleset): Record<string, unknown> {
  return { global: rules };
}
