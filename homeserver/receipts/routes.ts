// POST /rooms/{roomId}/receipt/{receiptType}/{eventId}   a receipt (m.read, m.read.private, m.fully_read; thread_id)
// POST /rooms/{roomId}/read_markers                      m.fully_read, m.read and m.read.private at once
import { z } from 'zod';
import type { Routes } from '../http/app.ts';
import { optionalBody, validate } from '../http/body.ts';
import { requester } from '../http/context.ts';
import { invalidParam } from '../http/errors.ts';
import type { ReceiptService } from './service.ts';

const markersSchema = z.object({
  'm.fully_read': z.string().optional(),
  'm.read': z.string().optional(),
  'm.read.private': z.string().optional(),
}).passthrough();

export function receiptRoutes(r: Routes, receipts: ReceiptService): void {
  r.client('post', '/rooms/:roomId/receipt/:receiptType/:eventId', async (ctx) => {
    const raw = optionalBody(ctx);
    const threadId = raw.thread_id;
    if (threadId !== undefined && (typeof threadId !== 'string' || threadId === '')) throw invalidParam('thread_id field must be a non-empty string');
    await receipts.receipt(requester(ctx), ctx.params.roomId!, ctx.params.receiptType!, ctx.params.eventId!, threadId);
    return {};
  }, { auth: true });

  r.client('post', '/rooms/:roomId/read_markers', async (ctx) => {
    const b = validate(markersSchema, optionalBody(ctx));
    await receipts.readMarkers(requester(ctx), ctx.params.roomId!, { fullyRead: b['m.fully_read'], read: b['m.read'], readPrivate: b['m.read.private'] });
    return {};
  }, { auth: true });
}
