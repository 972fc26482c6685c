// The logged-in admin's role and permissions (GET /_super/admin/v1/me): what the dashboard offers.
export const me = $state<{ userId: string; role: string; rank: number; permissions: string[] }>({ userId: '', role: '', rank: 0, permissions: [] });

export function can(permission: string): boolean {
  return me.permissions.includes(permission);
}

/** Toasts: a short line after each action. */
export const toasts = $state<{ list: Array<{ id: number; text: string; kind: 'ok' | 'error' }> }>({ list: [] });
let nextToast = 1;
export function toast(text: string, kind: 'ok' | 'error' = 'ok'): void {
  const id = nextToast++;
  toasts.list.push({ id, text, kind });
  setTimeout(() => dismiss(id), kind === 'error' ? 8000 : 4000);
}

export function dismiss(id: number): void {
  toasts.list = toasts.list.filter((t) => t.id !== id);
}
