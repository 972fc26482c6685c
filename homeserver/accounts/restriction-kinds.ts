// issue 12 (userbans12): the restrictions server admins put on an account, each one a flag of
// `users` (accounts/enforcement.ts says what it forbids) described by a row of user_restrictions.

export const RESTRICTION_KINDS = ['suspended', 'locked', 'shadow_banned'] as const;
export type RestrictionKind = (typeof RESTRICTION_KINDS)[number];

export function isRestrictionKind(k: string): k is RestrictionKind {
  return (RESTRICTION_KINDS as readonly string[]).includes(k);
}

/** One restriction: why, by whom, since and until when. */
export interface RestrictionRow {
  user_id: string;
  kind: RestrictionKind;
  /** null: none given (Synapse's endpoints give none). */
  reason: string | null;
  /** null: set before restrictions were recorded (migration 021). */
  created_by: string | null;
  created_ts: number | null;
  /** null: until lifted. */
  expires_ts: number | null;
  /** A ban: the lock also ended every session. */
  logged_out: boolean;
}
