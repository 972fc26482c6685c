// issue 9 (roles9): what the account states set by server admins forbid (spec v1.19 §Account
// locking, §Account suspension; Synapse's approval and shadow-ban).
//
//   locked              every request but /logout and /logout/all: 401 M_USER_LOCKED, soft_logout true
//   awaiting approval   login and every request: 403 M_USER_AWAITING_APPROVAL (REGISTRATION_APPROVAL=on)
//   suspended           reads work; joining, knocking, inviting, creating rooms, sending messages and
//                       state, changing the profile: 403 M_USER_SUSPENDED
//   shadow-banned       sends, state, redactions and invites answer 200 with a real-looking event ID,
//                       but nothing is persisted: nobody else ever sees them
//
// issue 12 (userbans12): suspended, locked and shadow-banned may carry a reason and an expiry
// (restrictions-store.ts); past its expiry a state no longer applies (AccountService.restrictionsInForce).
import { createHmac, randomBytes } from 'node:crypto';
import { MatrixError } from '../http/errors.ts';
import type { Requester } from '../http/context.ts';

export interface LockableRequester extends Requester {
  locked?: boolean;
  awaitingApproval?: boolean;
}

export function refuseLockedOrWaiting(r: { locked?: boolean; awaitingApproval?: boolean }, allowLocked: boolean): void {
  if (r.awaitingApproval) throw new MatrixError(403, 'M_USER_AWAITING_APPROVAL', 'This account is pending approval by a server administrator.');
  if (r.locked && !allowLocked) throw new MatrixError(401, 'M_USER_LOCKED', 'This account has been locked', { soft_logout: true });
}

/** 403 M_USER_SUSPENDED when the requester is suspended (call it before anything is done). */
export function refuseIfSuspended(r: Requester): void {
  if (r.suspended) throw new MatrixError(403, 'M_USER_SUSPENDED', 'You cannot perform this action while suspended.');
}

/** Secret of this process: a shadow-banned user cannot tell their event IDs from real ones. */
const SHADOW_KEY = randomBytes(32);

/**
 * A real-looking event ID (room versions 4+: `$` and 43 characters of unpadded URL-safe base64)
 * for a shadow-banned send, stable for the same transaction ID (a retried send gets the same one).
 */
export function shadowEventId(r: Requester, roomId: string, what: string): string {
  return `$${createHmac('sha256', SHADOW_KEY).update(`${r.userId}\x00${r.deviceId}\x00${roomId}\x00${what}`).digest('base64url')}`;
}
