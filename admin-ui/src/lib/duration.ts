// How long a restriction lasts (issue 12): the presets an operator picks from, and a countdown.
export interface Preset { label: string; ms: number | null }

/** null: until lifted by hand. */
export const PRESETS: Preset[] = [
  { label: '1 hour', ms: 3_600_000 },
  { label: '1 day', ms: 86_400_000 },
  { label: '7 days', ms: 7 * 86_400_000 },
  { label: '30 days', ms: 30 * 86_400_000 },
  { label: 'until lifted', ms: null },
];

export const UNITS: Array<{ label: string; ms: number }> = [
  { label: 'minutes', ms: 60_000 },
  { label: 'hours', ms: 3_600_000 },
  { label: 'days', ms: 86_400_000 },
];

/** "in 2 d 3 h", "in 4 min 10 s"; "ended" once past. */
export function countdown(until: number, now: number): string {
  let s = Math.floor((until - now) / 1000);
  if (s <= 0) return 'ended';
  const d = Math.floor(s / 86_400); s -= d * 86_400;
  const h = Math.floor(s / 3_600); s -= h * 3_600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `in ${d} d${h ? ` ${h} h` : ''}`;
  if (h) return `in ${h} h${m ? ` ${m} min` : ''}`;
  if (m) return `in ${m} min${s ? ` ${s} s` : ''}`;
  return `in ${s} s`;
}

/** "for 7 days" / "until lifted", for a confirmation's text. */
export function describeDuration(ms: number | null): string {
  if (ms === null) return 'until lifted';
  const preset = PRESETS.find((p) => p.ms === ms);
  if (preset) return `for ${preset.label}`;
  for (const u of [...UNITS].reverse()) if (ms % u.ms === 0) return `for ${ms / u.ms} ${u.label}`;
  return `for ${Math.round(ms / 60_000)} minutes`;
}
