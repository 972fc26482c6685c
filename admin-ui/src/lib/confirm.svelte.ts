// The confirmation asked before anything destructive (Confirm.svelte shows it).
/** What an operator gives when restricting a user (issue 12): a reason and how long. */
export interface RestrictionInput { reason: string; durationMs: number | null }
export interface Ask { title: string; text: string; action: string; typed?: string; restriction?: boolean; reason?: string; resolve: (ok: boolean, input?: RestrictionInput) => void }
export const asking = $state<{ current: Ask | null }>({ current: null });

/** Resolves true when the operator confirms; `typed`: a word they must type first (the most destructive actions). */
export function confirmAction(title: string, text: string, action: string, typed?: string): Promise<boolean> {
  return new Promise((resolve) => { asking.current = { title, text, action, typed, resolve }; });
}

/** Asks for a reason and a duration besides the confirmation; null when cancelled. */
export function confirmRestriction(title: string, text: string, action: string, reason?: string): Promise<RestrictionInput | null> {
  return new Promise((resolve) => {
    asking.current = { title, text, action, restriction: true, reason, resolve: (ok, input) => resolve(ok && input ? input : null) };
  });
}
