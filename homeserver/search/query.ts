// Turns a user's search term into a PostgreSQL tsquery for the `simple` configuration the
// event_search vectors are built with, in the syntax Synapse accepts: words (matched as prefixes),
// "quoted phrases", `or` between terms, and `-word` to exclude. Pure: no I/O.

/** Words as PostgreSQL's parser splits plain text (letters and digits; the rest separates). */
const WORD = /[\p{L}\p{N}]+/gu;
/** Lexemes longer than this are cut (PostgreSQL refuses lexemes over 2047 bytes). */
const MAX_WORD = 200;
const MAX_TERMS = 64;

export interface ParsedSearch {
  /** The tsquery text for to_tsquery('simple', …); null when the term has nothing to search for. */
  tsquery: string | null;
  /** Words that count as a hit (for highlights): prefixes and exact phrase words. */
  prefixes: string[];
  exact: string[];
}

function words(s: string): string[] {
  return (s.toLowerCase().match(WORD) ?? []).map((w) => w.slice(0, MAX_WORD));
}

const lexeme = (w: string) => `'${w}'`;

export function parseSearchTerm(term: string): ParsedSearch {
  const items: string[] = [];
  const ops: Array<'&' | '|'> = [];
  const prefixes: string[] = [];
  const exact: string[] = [];
  let pendingOr = false;
  let count = 0;
  const push = (item: string) => {
    if (items.length) ops.push(pendingOr ? '|' : '&');
    items.push(item);
    pendingOr = false;
  };

  for (const m of term.matchAll(/(-?)"([^"]*)"?|(\S+)/g)) {
    if (count >= MAX_TERMS) break;
    const negated = m[1] === '-';
    if (m[2] !== undefined) {
      const ws = words(m[2]);
      if (!ws.length) continue;
      count += ws.length;
      const phrase = ws.length === 1 ? lexeme(ws[0]!) : `(${ws.map(lexeme).join(' <-> ')})`;
      if (!negated) exact.push(...ws);
      push(negated ? `!${phrase}` : phrase);
      continue;
    }
    let raw = m[3]!;
    if (raw.toLowerCase() === 'or') {
      if (items.length) pendingOr = true;
      continue;
    }
    const neg = raw.length > 1 && raw.startsWith('-');
    if (neg) raw = raw.slice(1);
    const ws = words(raw);
    if (!ws.length) continue;
    count += ws.length;
    const parts = ws.map((w) => `${lexeme(w)}:*`);
    const item = parts.length === 1 ? parts[0]! : `(${parts.join(' & ')})`;
    if (!neg) prefixes.push(...ws);
    push(neg ? `!${item}` : item);
  }
  if (!items.length) return { tsquery: null, prefixes, exact };
  let q = items[0]!;
  for (let i = 1; i < items.length; i++) q += ` ${ops[i - 1]} ${items[i]}`;
  return { tsquery: q, prefixes, exact };
}

/** The words of `text` that the search matched, as they appear in it. */
export function highlightsIn(text: string, parsed: ParsedSearch): string[] {
  const out: string[] = [];
  for (const w of text.match(WORD) ?? []) {
    const lw = w.toLowerCase();
    if (parsed.exact.includes(lw) || parsed.prefixes.some((p) => lw.startsWith(p))) out.push(w);
  }
  return out;
}
