// Push rule evaluation (client-server spec, "Push Rules", "Conditions"): which actions a user's rule
// set yields for an event. Pure: the room context (member count, power levels, display names) is
// handed in. Rule sets are compiled once (glob patterns to regular expressions) and evaluated for
// every member of a room in memory.
import { toPowerLevel, userLevel, type PowerLevelsContent } from '../protocol/power-levels.ts';
import { versionOfCreate } from '../protocol/room-versions.ts';
import type { PushAction, PushCondition, PushRule, Ruleset } from './rules.ts';

/** What a room's state says about an event's context, shared by every member evaluated. */
export interface RoomContext {
  /** Joined members. */
  memberCount: number;
  /** The sender's power level. */
  senderPower: number;
  /** m.room.power_levels content (for `notifications`), undefined when the room has none. */
  powerLevels: PowerLevelsContent | undefined;
}

/** What one member brings: their id and their display name in the room. */
export interface MemberContext {
  userId: string;
  displayName: string | undefined;
  /** Computed once per member object when a rule needs it. */
  localpart?: string;
  lowerName?: string;
}

/** A compiled rule: its actions and a test on the event. */
interface CompiledRule {
  ruleId: string;
  actions: PushAction[];
  test: (ev: EvalEvent, room: RoomContext, member: MemberContext) => boolean;
}

/** A user's rule set, compiled (enabled rules only, in priority order). */
export interface CompiledRuleset {
  rules: CompiledRule[];
}

/** Rules that look for mentions in the body; skipped for events with `m.mentions` (Synapse, MSC3952). */
const LEGACY_MENTION_RULES = new Set(['.m.rule.contains_display_name', '.m.rule.contains_user_name', '.m.rule.roomnotif']);

/** An event being evaluated, with its property lookups cached (many members test the same keys). */
export class EvalEvent {
  private values = new Map<string, unknown>();
  readonly hasMentions: boolean;
  readonly body: string | undefined;

  constructor(readonly event: Record<string, unknown>) {
    const content = event.content as Record<string, unknown> | undefined;
    this.hasMentions = !!content && typeof content === 'object' && Object.hasOwn(content, 'm.mentions');
    this.body = typeof content?.body === 'string' ? content.body : undefined;
  }

  /** The value at a dot-separated property path (appendices: "Dot-separated property paths"). */
  get(key: string): unknown {
    if (this.values.has(key)) return this.values.get(key);
    let v: unknown = this.event;
    for (const part of splitPath(key)) {
      if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, part)) {
        v = undefined;
        break;
      }
      v = (v as Record<string, unknown>)[part];
    }
    this.values.set(key, v);
    return v;
  }

  private memos = new Map<string, boolean>();
  private lower: string | undefined;
  private candidateLists = new Map<Template, TemplateRule[]>();

  lowerBody(): string {
    return (this.lower ??= (this.body ?? '').toLowerCase());
  }

  /** A template's rules whose event- and room-only conditions hold, in order (once per template). */
  candidates(t: Template, room: RoomContext): TemplateRule[] {
    let list = this.candidateLists.get(t);
    if (!list) {
      const none: MemberContext = { userId: '', displayName: undefined };
      list = t.rules.filter((r) => r.independent.every((test) => test(this, room, none)));
      this.candidateLists.set(t, list);
    }
    return list;
  }

  /**
   * A test's result that depends only on the event and the room (not on the member), computed
   * once for all the members of a room whose rules share it.
   */
  memo(id: string, test: () => boolean): boolean {
    let v = this.memos.get(id);
    if (v === undefined) this.memos.set(id, (v = test()));
    return v;
  }
}

/** Splits a dot-separated path: `\.` is a literal dot and `\\` a literal backslash. */
export function splitPath(key: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < key.length; i++) {
    const c = key[i]!;
    if (c === '\\' && (key[i + 1] === '.' || key[i + 1] === '\\')) {
      cur += key[i + 1];
      i++;
    } else if (c === '.') {
      parts.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  parts.push(cur);
  return parts;
}

const globCache = new Map<string, RegExp>();
const GLOB_CACHE_MAX = 10_000;

/** A glob (appendices: `*` any run, `?` one character) as a case-insensitive regular expression. */
export function globRegex(pattern: string, wordBoundary: boolean): RegExp {
  const cacheKey = `${wordBoundary ? 'w' : 'x'}${pattern}`;
  const hit = globCache.get(cacheKey);
  if (hit) return hit;
  let src = '';
  for (const ch of pattern) {
    if (ch === '*') src += '.*?';
    else if (ch === '?') src += '.';
    else src += ch.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  }
  // A word boundary: the start or end of the value, or a character not in [A-Za-z0-9_].
  const re = wordBoundary ? new RegExp(`(?:^|[^A-Za-z0-9_])${src}(?:[^A-Za-z0-9_]|$)`, 'is') : new RegExp(`^${src}$`, 'is');
  if (globCache.size >= GLOB_CACHE_MAX) globCache.clear();
  globCache.set(cacheKey, re);
  return re;
}

const isScalar = (v: unknown) => v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isSafeInteger(v));

function memberCountTest(is: string): ((n: number) => boolean) | undefined {
  const m = /^(==|<=|>=|<|>)?([0-9]+)$/.exec(is);
  if (!m) return undefined;
  const n = Number(m[2]);
  switch (m[1] ?? '==') {
    case '==': return (x) => x === n;
    case '<': return (x) => x < n;
    case '>': return (x) => x > n;
    case '<=': return (x) => x <= n;
    default: return (x) => x >= n;
  }
}

type Test = CompiledRule['test'];
const NEVER: Test = () => false;

/** One condition as a test; unknown or malformed conditions never match (the rule is disabled). */
export function compileCondition(c: PushCondition): Test {
  switch (c.kind) {
    case 'event_match': {
      if (typeof c.key !== 'string' || typeof c.pattern !== 'string') return NEVER;
      const key = c.key;
      const body = key === 'content.body';
      const re = globRegex(c.pattern, body);
      return (ev) => {
        const v = ev.get(key);
        return typeof v === 'string' && re.test(v);
      };
    }
    case 'event_property_is': {
      if (typeof c.key !== 'string' || !isScalar(c.value)) return NEVER;
      const key = c.key;
      const want = c.value;
      return (ev) => {
        const v = ev.get(key);
        return isScalar(v) && v === want;
      };
    }
    case 'event_property_contains': {
      if (typeof c.key !== 'string' || !isScalar(c.value)) return NEVER;
      const key = c.key;
      const want = c.value;
      return (ev) => {
        const v = ev.get(key);
        return Array.isArray(v) && v.some((x) => isScalar(x) && x === want);
      };
    }
    case 'contains_display_name':
      return (ev, _room, member) => {
        const name = member.displayName;
        if (!name || ev.body === undefined) return false;
        return literalWordRegex(name).test(ev.body);
      };
    case 'room_member_count': {
      if (typeof c.is !== 'string') return NEVER;
      const cmp = memberCountTest(c.is);
      if (!cmp) return NEVER;
      return (_ev, room) => cmp(room.memberCount);
    }
    case 'sender_notification_permission': {
      if (typeof c.key !== 'string') return NEVER;
      const key = c.key;
      return (_ev, room) => room.senderPower >= notificationLevel(room.powerLevels, key);
    }
    default:
      return NEVER;
  }
}

const literalCache = new Map<string, RegExp>();

/** A literal (not a glob) found as a whole word, case-insensitively: display names. */
function literalWordRegex(text: string): RegExp {
  const hit = literalCache.get(text);
  if (hit) return hit;
  const re = new RegExp(`(?:^|[^A-Za-z0-9_])${text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&')}(?:[^A-Za-z0-9_]|$)`, 'is');
  if (literalCache.size >= GLOB_CACHE_MAX) literalCache.clear();
  literalCache.set(text, re);
  return re;
}

/** The power level needed to notify `key` (`notifications.room` defaults to 50). */
export function notificationLevel(pl: PowerLevelsContent | undefined, key: string): number {
  const n = pl?.notifications;
  const v = n && typeof n === 'object' && Object.hasOwn(n, key) ? toPowerLevel((n as Record<string, unknown>)[key]) : undefined;
  return v ?? 50;
}

/** The sender's power level as sender_notification_permission needs it (v12+: a creator's is infinite). */
export function senderPower(pl: PowerLevelsContent | undefined, sender: string, create?: { sender: string; content: Record<string, unknown> }): number {
  return userLevel(pl, sender, create, versionOfCreate(create));
}

/** A condition's test, memoized per event unless it depends on the member (display name). */
function memoized(c: PushCondition): Test {
  const t = compileCondition(c);
  if (c.kind === 'contains_display_name') return t;
  const id = `c:${JSON.stringify(c)}`;
  return (ev, room, m) => ev.memo(id, () => t(ev, room, m));
}

function compileRule(kind: string, r: PushRule): CompiledRule | undefined {
  if (!r.enabled) return undefined;
  let test: Test;
  if (kind === 'override' || kind === 'underride') {
    const tests = (r.conditions ?? []).map(memoized);
    test = tests.length === 0 ? () => true : tests.length === 1 ? tests[0]! : (ev, room, m) => tests.every((t) => t(ev, room, m));
  } else if (kind === 'content') {
    if (typeof r.pattern !== 'string') return undefined;
    const re = globRegex(r.pattern, true);
    const id = `p:${r.pattern}`;
    test = (ev) => ev.body !== undefined && ev.memo(id, () => re.test(ev.body!));
  } else if (kind === 'room') {
    const roomId = r.rule_id;
    test = (ev) => ev.get('room_id') === roomId;
  } else if (kind === 'sender') {
    const sender = r.rule_id;
    test = (ev) => ev.get('sender') === sender;
  } else {
    return undefined;
  }
  if (LEGACY_MENTION_RULES.has(r.rule_id)) {
    const inner = test;
    test = (ev, room, m) => !ev.hasMentions && inner(ev, room, m);
  }
  return { ruleId: r.rule_id, actions: r.actions, test };
}

/** Compiles a rule set: enabled rules, in the order the spec checks them. */
export function compileRuleset(rules: Ruleset): CompiledRuleset {
  const out: CompiledRule[] = [];
  for (const kind of ['override', 'content', 'room', 'sender', 'underride'] as const) {
    for (const r of rules[kind] ?? []) {
      const c = compileRule(kind, r);
      if (c) out.push(c);
    }
  }
  return { rules: out };
}

/** The actions of the first matching rule, with its id; undefined when no rule matches. */
export function evaluate(rules: CompiledRuleset, ev: EvalEvent, room: RoomContext, member: MemberContext): { ruleId: string; actions: PushAction[] } | undefined {
  for (const r of rules.rules) if (r.test(ev, room, member)) return { ruleId: r.ruleId, actions: r.actions };
  return undefined;
}

/** Whether actions notify ("notify" present). */
export function notifies(actions: PushAction[]): boolean {
  return actions.includes('notify');
}

/** Whether actions highlight (a `highlight` tweak whose value is not false). */
export function highlights(actions: PushAction[]): boolean {
  return actions.some((a) => typeof a === 'object' && a !== null && a.set_tweak === 'highlight' && a.value !== false);
}

// ---- templates: one compiled rule set shared by every user whose rules have the same shape ------
//
// Most users' rules are the defaults, which differ only by the user's id and localpart. A template
// is a rule set with those replaced by placeholders; a rule's conditions split into the ones that
// depend only on the event and the room (evaluated once per event and template) and the ones that
// name the user (evaluated per member, cheaply). Evaluating a room of 1,000 members on the default
// rules then costs a few string checks per member.

const ME = '\u0000me\u0000';
const LOCALPART = '\u0000localpart\u0000';

type DependentTest = (ev: EvalEvent, member: MemberContext) => boolean;

interface TemplateRule {
  ruleId: string;
  actions: PushAction[];
  independent: Test[];
  dependent: DependentTest[];
}

export interface Template {
  readonly key: string;
  readonly rules: TemplateRule[];
}

const templates = new Map<string, Template>();
const TEMPLATES_MAX = 10_000;

/** Replaces string values equal to the user's id (anywhere) or localpart (content patterns) with placeholders. */
function abstractRules(rules: Ruleset, userId: string): Ruleset {
  const localpart = userId.slice(1, userId.indexOf(':'));
  const walk = (v: unknown, key?: string): unknown => {
    if (v === userId) return ME;
    if (Array.isArray(v)) return v.map((x) => walk(x));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    if (key === 'pattern' && v === localpart) return LOCALPART;
    return v;
  };
  return walk(rules) as Ruleset;
}

const hasPlaceholder = (v: unknown): boolean => JSON.stringify(v).includes('\\u0000');

/** The template of a user's rules (shared between users whose rules have the same shape). */
export function templateFor(rules: Ruleset, userId: string): Template {
  const abstract = abstractRules(rules, userId);
  const key = JSON.stringify(abstract);
  const hit = templates.get(key);
  if (hit) return hit;
  const out: TemplateRule[] = [];
  for (const kind of ['override', 'content', 'room', 'sender', 'underride'] as const) {
    for (const r of abstract[kind] ?? []) {
      if (!r.enabled) continue;
      const independent: Test[] = [];
      const dependent: DependentTest[] = [];
      if (LEGACY_MENTION_RULES.has(r.rule_id)) independent.push((ev) => !ev.hasMentions);
      if (kind === 'override' || kind === 'underride') {
        for (const c of r.conditions ?? []) {
          if (c.kind === 'contains_display_name') dependent.push(displayNameTest);
          else if (hasPlaceholder(c)) dependent.push(dependentCondition(c));
          else independent.push(memoized(c));
        }
      } else if (kind === 'content') {
        if (typeof r.pattern !== 'string') continue;
        if (r.pattern === LOCALPART) dependent.push(localpartTest);
        else {
          const re = globRegex(r.pattern, true);
          const id = `p:${r.pattern}`;
          independent.push((ev) => ev.body !== undefined && ev.memo(id, () => re.test(ev.body!)));
        }
      } else if (kind === 'room') {
        const roomId = r.rule_id;
        independent.push((ev) => ev.get('room_id') === roomId);
      } else {
        if (r.rule_id === ME) dependent.push((ev, m) => ev.get('sender') === m.userId);
        else {
          const sender = r.rule_id;
          independent.push((ev) => ev.get('sender') === sender);
        }
      }
      out.push({ ruleId: r.rule_id, actions: r.actions, independent, dependent });
    }
  }
  if (templates.size >= TEMPLATES_MAX) templates.clear();
  const t: Template = { key, rules: out };
  templates.set(key, t);
  return t;
}

function displayNameTest(ev: EvalEvent, m: MemberContext): boolean {
  const name = m.displayName;
  if (!name || ev.body === undefined) return false;
  if (!ev.lowerBody().includes((m.lowerName ??= name.toLowerCase()))) return false;
  return literalWordRegex(name).test(ev.body);
}

function localpartTest(ev: EvalEvent, m: MemberContext): boolean {
  const localpart = (m.localpart ??= m.userId.slice(1, m.userId.indexOf(':')));
  if (ev.body === undefined || !localpart) return false;
  if (!/[*?]/.test(localpart) && !ev.lowerBody().includes(localpart.toLowerCase())) return false;
  return globRegex(localpart, true).test(ev.body);
}

/** A condition naming the user: the common forms as direct checks, others compiled per user. */
function dependentCondition(c: PushCondition): DependentTest {
  if (c.kind === 'event_property_contains' && c.value === ME && typeof c.key === 'string') {
    const key = c.key;
    return (ev, m) => {
      const v = ev.get(key);
      return Array.isArray(v) && v.includes(m.userId);
    };
  }
  if (c.kind === 'event_match' && c.pattern === ME && typeof c.key === 'string') {
    const key = c.key;
    return (ev, m) => {
      const v = ev.get(key);
      if (typeof v !== 'string') return false;
      return /[*?]/.test(m.userId) ? globRegex(m.userId, key === 'content.body').test(v) : key === 'content.body' ? globRegex(m.userId, true).test(v) : v.toLowerCase() === m.userId.toLowerCase();
    };
  }
  const perUser = new Map<string, Test>();
  return (ev, m) => {
    let t = perUser.get(m.userId);
    if (!t) {
      const json = JSON.stringify(c).replaceAll(JSON.stringify(ME).slice(1, -1), m.userId.replace(/["\\]/g, (x) => `\\${x}`));
      t = compileCondition(JSON.parse(json) as PushCondition);
      if (perUser.size > 100_000) perUser.clear();
      perUser.set(m.userId, t);
    }
    return t(ev, NO_ROOM, m);
  };
}

/** Dependent conditions never read the room (member count and power are independent). */
const NO_ROOM: RoomContext = { memberCount: 0, senderPower: 0, powerLevels: undefined };

/** The first rule of the template that matches for this member. */
export function evaluateTemplate(t: Template, ev: EvalEvent, room: RoomContext, member: MemberContext): { ruleId: string; actions: PushAction[] } | undefined {
  const rules = ev.candidates(t, room);
  outer: for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    for (let j = 0; j < r.dependent.length; j++) if (!r.dependent[j]!(ev, member)) continue outer;
    return r;
  }
  return undefined;
}
