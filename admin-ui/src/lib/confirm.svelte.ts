// The confirmation asked before anything destructive (Confirm.svelte shows it).
export interface Ask { title: string; text: string; action: string; typed?: string; resolve: (ok: boolean) => void }
export const asking = $state<{ current: Ask | null }>({ current: null });

/** Resolves true when the operator confirms; `typed`: a word they must type first (the most destructive actions). */
export function confirmAction(title: string, text: string, action: string, typed?: string): Promise<boolean> {
  return new Promise((resolve) => { asking.current = { title, text, action, typed, resolve }; });
}
