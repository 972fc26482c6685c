// POST /_synapse/admin/v1/send_server_notice[/{txnId}]   { user_id, content, type?, state_key? } → { event_id }
// POST /_super/admin/v1/commands/message_user            { user_id, message } → { event_id, room_id } (the original design's command)
// Permission notices.send; one audit entry per notice.
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { body } from '../http/body.ts';
import { invalidParam } from '../http/errors.ts';
import { requirePermission } from '../admin/guard.ts';
import { audited } from '../admin/audit.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { ServerNotices } from './notices.ts';

const noticeSchema = z.object({
  user_id: z.string(),
  content: z.record(z.string(), z.unknown()),
  type: z.string().min(1).max(255).optional(),
  state_key: z.string().max(255).optional(),
});

const messageSchema = z.object({ user_id: z.string(), message: z.string().min(1).max(65_536) });

/** Retries of a txnId (PUT send_server_notice/{txnId}) answer the first event (kept in memory, bounded). */
const MAX_TXNS = 10_000;

export function noticeRoutes(r: Routes, notices: ServerNotices): void {
  const txns = new Map<string, { event_id: string }>();
  const send = async (ctx: Parameters<Parameters<Routes['raw']>[2]>[0]) => {
    const actor = await requirePermission(ctx, 'notices.send');
    const b = body(ctx, noticeSchema);
    if (!isValidUserId(b.user_id)) throw invalidParam(`user_id: ${b.user_id} is not a valid user ID`);
    const txnKey = ctx.params.txnId ? `${actor.userId}|${ctx.params.txnId}` : undefined;
    const seen = txnKey ? txns.get(txnKey) : undefined;
    if (seen) return seen;
    const { event_id } = await audited(ctx, actor, 'notice.send', b.user_id, () => notices.send(b.user_id, b.content, b.type ?? 'm.room.message', b.state_key),
      { type: b.type ?? 'm.room.message' });
    if (txnKey) {
      if (txns.size >= MAX_TXNS) txns.delete(txns.keys().next().value!);
      txns.set(txnKey, { event_id });
    }
    return { event_id };
  };
  r.raw('post', '/_synapse/admin/v1/send_server_notice', send, { auth: true });
  r.raw('put', '/_synapse/admin/v1/send_server_notice/:txnId', send, { auth: true });

  r.raw('post', '/_super/admin/v1/commands/message_user', async (ctx) => {
    const actor = await requirePermission(ctx, 'notices.send');
    const b = body(ctx, messageSchema);
    if (!isValidUserId(b.user_id)) throw invalidParam(`user_id: ${b.user_id} is not a valid user ID`);
    return audited(ctx, actor, 'command.message_user', b.user_id,
      () => notices.send(b.user_id, { msgtype: 'm.server_notice', server_notice_type: 'm.server_notice.message', body: b.message }));
  }, { auth: true });
}
