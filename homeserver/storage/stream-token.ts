import { MatrixError } from '../http/errors.ts';

/**
 * Stream tokens. `s<pos>` is a position in the persistent event stream; a sync token carries one
 * part per stream after it, in the order of STREAMS: `s<events>_<receipts>_<typing>_…`.
 * /messages and /relations take any of them and read only the event position.
 */
export interface StreamToken {
  pos: number;
  parts: number[];
}

/** The streams of a sync token, in token order. Each wakes only the waiters its keys name. */
export const STREAMS = ['events', 'receipts', 'typing', 'presence', 'toDevice', 'deviceLists', 'accountData'] as const;
export type StreamName = (typeof STREAMS)[number];

/** A position in every stream: what a /sync has delivered up to. */
export type SyncToken = Record<StreamName, number>;

export function parseToken(raw: unknown, name = 'token'): StreamToken {
  if (typeof raw !== 'string') throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}`);
  // A topological token (/messages, /context) read as a stream position: its stream part.
  const topo = TOPO.exec(raw);
  if (topo) return { pos: Math.max(0, checkedTopo(topo, name).stream), parts: [] };
  const m = /^s(\d+)((?:_\d+)*)$/.exec(raw);
  if (!m) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: ${raw}`);
  const parts = m[2] ? m[2].slice(1).split('_').map(Number) : [];
  const pos = Number(m[1]);
  // Positions are BIGINT columns read as numbers: past 2^53−1 no position exists or compares right.
  if (!Number.isSafeInteger(pos) || !parts.every(Number.isSafeInteger)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: out of range`);
  return { pos, parts };
}

/**
 * A /sync `since`. A token with fewer parts (an older server's, or a /messages token) gives the
 * missing streams position 0: their whole recent state is sent again, nothing is skipped.
 */
export function parseSyncToken(raw: unknown, name = 'since'): SyncToken {
  const t = parseToken(raw, name);
  if (t.parts.length > STREAMS.length - 1) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: too many parts`);
  const out = { events: t.pos } as SyncToken;
  STREAMS.slice(1).forEach((s, i) => (out[s] = t.parts[i] ?? 0));
  return out;
}

export function formatSyncToken(t: SyncToken): string {
  return `s${t.events}${STREAMS.slice(1).map((s) => `_${t[s]}`).join('')}`;
}

export function formatToken(t: StreamToken): string {
  return `s${t.pos}${t.parts.map((p) => `_${p}`).join('')}`;
}

export function posToken(pos: number): string {
  return `s${Math.max(0, pos)}`;
}

/**
 * A place in a room's topological order (/messages, /context): between the event at (depth,
 * stream) and the next one. `t<depth>-<stream>` as Synapse writes them; the stream part is negative
 * for history inserted later (backfill), which sorts by depth where it belongs.
 */
export interface TopoPosition {
  depth: number;
  stream: number;
}

const TOPO = /^t(\d+)-(-?\d+)$/;

function checkedTopo(m: RegExpExecArray, name: string): TopoPosition {
  const depth = Number(m[1]);
  const stream = Number(m[2]);
  if (!Number.isSafeInteger(depth) || !Number.isSafeInteger(stream)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid ${name}: out of range`);
  return { depth, stream };
}

/** A pagination token: a stream position (`s…`, what /sync hands out) or a topological one (`t…`). */
export type PaginationToken = { stream: number; depth?: undefined } | TopoPosition;

export function parsePaginationToken(raw: unknown, name = 'token'): PaginationToken {
  if (typeof raw === 'string') {
    const m = TOPO.exec(raw);
    if (m) return checkedTopo(m, name);
  }
  return { stream: parseToken(raw, name).pos };
}

export function topoToken(p: TopoPosition): string {
  return `t${Math.max(0, p.depth)}-${p.stream}`;
}
