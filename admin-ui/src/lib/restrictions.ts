// User restrictions (issue 12): suspended, locked (a ban: with every session logged out) and
// shadow-banned, each with a reason and an expiry, through /_super/admin/v1.
import { api, enc, SU } from './api.ts';

export type Kind = 'suspended' | 'locked' | 'shadow_banned';
export interface Restriction { user_id: string; kind: Kind; reason: string | null; created_by: string | null; created_ts: number | null; expires_ts: number | null; logout_devices: boolean }

export const KIND_LABELS: Record<Kind, string> = { suspended: 'suspended', locked: 'locked', shadow_banned: 'shadow-banned' };
/** What each one does, for the confirmations. */
export const KIND_EFFECTS: Record<Kind | 'ban', string> = {
  suspended: 'They can still read, but cannot join, invite, send or change their profile.',
  locked: 'Every request of theirs answers "locked" and they cannot log in; their sessions stay.',
  ban: 'Every session is logged out and they cannot log in.',
  shadow_banned: 'Their messages look sent to them but nobody else ever sees them.',
};

export function label(r: Restriction): string {
  return r.kind === 'locked' && r.logout_devices ? 'banned' : KIND_LABELS[r.kind];
}

export function restrict(userId: string, kind: Kind, input: { reason: string; durationMs: number | null; logoutDevices?: boolean }): Promise<Restriction> {
  return api<Restriction>('PUT', `${SU}/users/${enc(userId)}/restrictions/${kind}`, {
    ...(input.reason ? { reason: input.reason } : {}),
    ...(input.durationMs !== null ? { duration_ms: input.durationMs } : {}),
    ...(input.logoutDevices ? { logout_devices: true } : {}),
  });
}

export function lift(userId: string, kind: Kind): Promise<unknown> {
  return api('DELETE', `${SU}/users/${enc(userId)}/restrictions/${kind}`);
}
