/** What of an event the full-text search indexes (spec: search keys content.body, content.name, content.topic). */
export function searchableText(draft: { type: string; content: Record<string, unknown> }): { key: string; value: string } | undefined {
  const c = draft.content;
  if (draft.type === 'm.room.message' && typeof c.body === 'string') return { key: 'content.body', value: c.body };
  if (draft.type === 'm.room.name' && typeof c.name === 'string') return { key: 'content.name', value: c.name };
  if (draft.type === 'm.room.topic') {
    // The plain-text topic of m.topic counts too (spec: search keys).
    const mText = (c['m.topic'] as { 'm.text'?: unknown } | null | undefined)?.['m.text'];
    const blocks = (Array.isArray(mText) ? mText : []) as Array<{ body?: unknown; mimetype?: unknown } | null>;
    const texts = [c.topic, ...blocks.filter((t) => t && (t.mimetype === undefined || t.mimetype === 'text/plain')).map((t) => t!.body)];
    const unique = [...new Set(texts.filter((t): t is string => typeof t === 'string' && t !== ''))];
    if (unique.length) return { key: 'content.topic', value: unique.join('\n') };
  }
  return undefined;
}
