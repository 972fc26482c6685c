/** The parts of an EventFilter (client-server spec, filtering) that apply to typing and presence. */
export interface EphemeralFilter {
  limit?: number;
  types?: string[];
  not_types?: string[];
  senders?: string[];
  not_senders?: string[];
  rooms?: string[];
  not_rooms?: string[];
}

/** `*` matches any run of characters (`m.room.*`), as in the spec's filters. */
function matches(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return re.test(value);
}

/** Whether an event of this type (and sender, when it has one) passes the filter. */
export function eventAllowed(f: EphemeralFilter | undefined, type: string, sender?: string): boolean {
  if (!f) return true;
  if (f.not_types?.some((p) => matches(p, type))) return false;
  if (f.types && !f.types.some((p) => matches(p, type))) return false;
  if (sender !== undefined) {
    if (f.not_senders?.includes(sender)) return false;
    if (f.senders && !f.senders.includes(sender)) return false;
  }
  return true;
}

/** Whether a room passes the filter's rooms / not_rooms. */
export function roomPasses(f: EphemeralFilter | undefined, roomId: string): boolean {
  if (!f) return true;
  if (f.not_rooms?.includes(roomId)) return false;
  return !f.rooms || f.rooms.includes(roomId);
}

/** The filter's limit applied to a list (a limit below 1 is ignored, as Synapse does for 0). */
export function limited<T>(f: EphemeralFilter | undefined, list: T[]): T[] {
  return f?.limit !== undefined && f.limit > 0 ? list.slice(0, f.limit) : list;
}
