// Policy lists (spec "Moderation policy lists"): the server follows the rooms of POLICY_ROOMS and
// applies their m.policy.rule.user|room|server rules with recommendation m.ban, globs included, to
// registrations, invites and joins. Rules are read from the rooms' current state and reloaded on
// every worker when a rule changes.
import type { Logger } from 'pino';
import { MatrixError } from '../http/errors.ts';
import type { RoomReader } from '../rooms/reader.ts';

export type RuleKind = 'user' | 'room' | 'server';

export interface PolicyRule {
  kind: RuleKind;
  entity: string;
  reason: string;
  pattern: RegExp;
}

const RULE_TYPES: Record<string, RuleKind> = {
  'm.policy.rule.user': 'user', 'm.policy.rule.room': 'room', 'm.policy.rule.server': 'server',
  // The types of the spec's first version, still sent by some tools (Mjolnir, Draupnir).
  'm.room.rule.user': 'user', 'm.room.rule.room': 'room', 'm.room.rule.server': 'server',
};

export function isPolicyRuleType(type: string): boolean {
  return type in RULE_TYPES;
}

/** A glob (`*` any run, `?` one character) as an anchored, case-sensitive regular expression. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (const ch of glob) re += ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${re}$`, 's');
}

export class PolicyLists {
  private rules: PolicyRule[] = [];
  private roomIds = new Set<string>();
  /** Set by the composition root: reloads on every worker (the bus). */
  changed: () => void = () => { void this.reload(); };

  constructor(
    private rooms: string[],
    private reader: RoomReader,
    private resolveAlias: (alias: string) => Promise<string | undefined>,
    private log: Logger,
  ) {}

  get enabled(): boolean {
    return this.rooms.length > 0;
  }

  /** Whether a room is one of the followed policy rooms (its rule changes trigger a reload). */
  follows(roomId: string): boolean {
    return this.roomIds.has(roomId);
  }

  /** Reads every rule of the followed rooms (a room not known here yet is skipped until it is). */
  async reload(): Promise<void> {
    if (!this.enabled) return;
    const rules: PolicyRule[] = [];
    const ids = new Set<string>();
    for (const ref of this.rooms) {
      try {
        const roomId = ref.startsWith('#') ? await this.resolveAlias(ref) : ref;
        if (!roomId) continue;
        ids.add(roomId);
        const room = await this.reader.roomMeta(roomId);
        if (!room) continue;
        const state = await this.reader.currentState(room.room_nid, Object.keys(RULE_TYPES));
        for (const row of state) {
          const kind = RULE_TYPES[row.type];
          if (!kind || row.redacted_by) continue;
          const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {};
          const { entity, recommendation, reason } = content;
          if (typeof entity !== 'string' || !entity) continue;
          if (recommendation !== 'm.ban' && recommendation !== 'org.matrix.mjolnir.ban') continue;
          rules.push({ kind, entity, reason: typeof reason === 'string' ? reason : '', pattern: globToRegExp(entity) });
        }
      } catch (err) {
        this.log.warn({ err, room: ref }, 'policy room not read');
      }
    }
    this.rules = rules;
    this.roomIds = ids;
  }

  /** The first ban rule matching the entity. */
  match(kind: RuleKind, entity: string): PolicyRule | undefined {
    return this.rules.find((r) => r.kind === kind && r.pattern.test(entity));
  }

  private refuse(rule: PolicyRule, what: string): never {
    throw new MatrixError(403, 'M_FORBIDDEN', `${what} is banned by a policy list${rule.reason ? `: ${rule.reason}` : ''}`);
  }

  /** A user (or their server) on a list. */
  checkUser(userId: string): void {
    const user = this.match('user', userId);
    if (user) this.refuse(user, userId);
    const server = this.match('server', userId.slice(userId.indexOf(':') + 1));
    if (server) this.refuse(server, `The server of ${userId}`);
  }

  checkRoom(roomId: string): void {
    const room = this.match('room', roomId);
    if (room) this.refuse(room, roomId);
  }
}
