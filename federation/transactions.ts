// PUT /_matrix/federation/v1/send/{txnId}: a transaction of PDUs and EDUs from one server,
// applied once per (origin, txnId): a retry is answered as the first time.
import type { Logger } from 'pino';
import { MatrixError } from '../homeserver/http/errors.ts';
import type { EduHandler } from './edus.ts';
import type { OutboundQueueStore } from './queue-store.ts';
import type { PduResults, RemotePduIntake } from './remote-pdus.ts';
import { MAX_EDUS_PER_TXN, MAX_PDUS_PER_TXN } from './sender.ts';

export class InboundTransactions {
  private inFlight = new Map<string, Promise<{ pdus: PduResults }>>();

  constructor(private store: OutboundQueueStore, private edus: EduHandler, private pdus: RemotePduIntake, private log: Logger) {}

  async receive(origin: string, txnId: string, body: Record<string, unknown>): Promise<{ pdus: PduResults }> {
    const pdus = body.pdus;
    const edus = body.edus ?? [];
    if (!Array.isArray(pdus)) throw new MatrixError(400, 'M_BAD_JSON', 'pdus must be a list');
    if (!Array.isArray(edus)) throw new MatrixError(400, 'M_BAD_JSON', 'edus must be a list');
    if (pdus.length > MAX_PDUS_PER_TXN || edus.length > MAX_EDUS_PER_TXN) {
      throw new MatrixError(400, 'M_BAD_JSON', `A transaction holds at most ${MAX_PDUS_PER_TXN} PDUs and ${MAX_EDUS_PER_TXN} EDUs`);
    }
    if (body.origin !== undefined && body.origin !== origin) throw new MatrixError(400, 'M_INVALID_PARAM', 'origin does not match the signed origin');
    const key = `${origin}\n${txnId}`;
    const running = this.inFlight.get(key);
    if (running) return running; // the same transaction retried while it is being applied
    const p = this.apply(origin, txnId, pdus, edus).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private async apply(origin: string, txnId: string, pdus: unknown[], edus: unknown[]): Promise<{ pdus: PduResults }> {
    const before = await this.store.inboundAnswer(origin, txnId);
    if (before) return before as { pdus: PduResults };
    const results = await this.pdus.receiveRemotePdus(origin, pdus);
    const applied = await this.edus.applyAll(origin, edus);
    this.log.debug({ origin, txnId, pdus: pdus.length, edus: edus.length, applied }, 'transaction received');
    const answer = { pdus: results };
    await this.store.rememberInbound(origin, txnId, answer);
    return answer;
  }
}
