// The redaction algorithm of each room version (rooms/fragments/v1-, v6-, v9-, v11-redactions.md
// and the inline v8 list). Used for redacting events and, crucially, for signing and reference
// hashes, which are computed over the redacted form.
import type { RoomVersion } from './room-versions.ts';

const TOP_LEVEL_KEYS = [
  'event_id', 'type', 'room_id', 'sender', 'state_key', 'content', 'hashes',
  'signatures', 'depth', 'prev_events', 'auth_events', 'origin_server_ts',
];
// v1-v10 additionally protect these; v11 dropped them.
const PRE_V11_TOP_LEVEL_KEYS = ['prev_state', 'origin', 'membership'];

function allowedContentKeys(type: string, v: RoomVersion): string[] {
  switch (type) {
    case 'm.room.member':
      return v.restrictedJoinRuleFix ? ['membership', 'join_authorised_via_users_server'] : ['membership'];
    case 'm.room.create':
      return ['creator']; // v11 keeps all content; handled by the caller
    case 'm.room.join_rules':
      return v.restrictedJoinRule ? ['join_rule', 'allow'] : ['join_rule'];
    case 'm.room.power_levels': {
      const keys = ['ban', 'events', 'events_default', 'kick', 'redact', 'state_default', 'users', 'users_default'];
      return v.updatedRedactionRules ? [...keys, 'invite'] : keys;
    }
    case 'm.room.aliases':
      return v.specialCaseAliasesAuth ? ['aliases'] : [];
    case 'm.room.history_visibility':
      return ['history_visibility'];
    case 'm.room.redaction':
      return v.updatedRedactionRules ? ['redacts'] : [];
    default:
      return [];
  }
}

function pick(obj: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (Object.hasOwn(obj, k)) out[k] = obj[k];
  return out;
}

/** Returns a redacted copy; the input is not mutated (kept values are shared, not cloned). */
export function redactEvent(event: Record<string, unknown>, version: RoomVersion): Record<string, unknown> {
  const topKeys = version.updatedRedactionRules ? TOP_LEVEL_KEYS : [...TOP_LEVEL_KEYS, ...PRE_V11_TOP_LEVEL_KEYS];
  const out = pick(event, topKeys);
  const type = typeof event.type === 'string' ? event.type : '';
  const content =
    event.content !== null && typeof event.content === 'object' && !Array.isArray(event.content)
      ? (event.content as Record<string, unknown>)
      : {};

  let newContent: Record<string, unknown>;
  if (type === 'm.room.create' && version.updatedRedactionRules) {
    newContent = { ...content };
  } else {
    newContent = pick(content, allowedContentKeys(type, version));
    // v11: member events keep only `signed` inside `third_party_invite`.
    if (type === 'm.room.member' && version.updatedRedactionRules) {
      const tpi = content.third_party_invite;
      if (tpi !== null && typeof tpi === 'object' && Object.hasOwn(tpi, 'signed')) {
        newContent.third_party_invite = { signed: (tpi as Record<string, unknown>).signed };
      }
    }
  }
  // Every event has `content`; a redacted one keeps at least `{}`.
  out.content = newContent;
  return out;
}
