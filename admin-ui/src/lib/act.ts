// Runs one admin action: asks first when it is destructive, reports the outcome as a toast.
import { errorText } from './api.ts';
import { confirmAction } from './confirm.svelte.ts';
import { toast } from './state.svelte.ts';

export async function act(done: string, run: () => Promise<unknown>, ask?: { title: string; text: string; action: string; typed?: string }): Promise<boolean> {
  if (ask && !(await confirmAction(ask.title, ask.text, ask.action, ask.typed))) return false;
  try {
    await run();
    toast(done);
    return true;
  } catch (err) {
    toast(errorText(err), 'error');
    return false;
  }
}
