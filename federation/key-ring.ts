// Keys (server-server API "Retrieving server keys"): our own key response, signed; other servers'
// keys fetched directly from them, else through the notaries of TRUSTED_KEY_SERVERS, verified,
// and cached with their validity; the notary side (/_matrix/key/v2/query) served from that cache.
import type { Logger } from 'pino';
import { canonicalJson } from '../homeserver/protocol/canonical-json.ts';
import { signJson, verifyJsonSignature } from '../homeserver/protocol/signing.ts';
import type { ServerKeys } from '../homeserver/server/keys.ts';
import type { FederationClient } from './client.ts';
import type { ServerKeyStore, StoredServerKey } from './key-store.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A server whose keys could not be fetched is not asked again for this long (no amplification by forged key ids). */
const REFETCH_AFTER_FAILURE_MS = 10_000;
/** Key lookups for a request wait this long at most. */
const FETCH_TIMEOUT_MS = 10_000;

export type KeyCriteria = Record<string, Record<string, { minimum_valid_until_ts?: number }>>;

export class KeyRing {
  private fetching = new Map<string, Promise<void>>();
  private lastFetch = new Map<string, number>();

  constructor(
    private store: ServerKeyStore,
    private client: FederationClient,
    private serverName: string,
    private keys: ServerKeys,
    private validityMs: number,
    private notaries: string[],
    private log: Logger,
  ) {}

  /** GET /_matrix/key/v2/server: our keys, valid for FEDERATION_KEY_VALIDITY_MS, self-signed. */
  ownKeys(now = Date.now()): Json {
    const old: Json = {};
    for (const k of this.keys.old) old[k.keyId] = { key: k.publicKey, expired_ts: k.expiredTs };
    return signJson({
      server_name: this.serverName,
      valid_until_ts: now + this.validityMs,
      verify_keys: { [this.keys.current.keyId]: { key: this.keys.current.publicKey } },
      old_verify_keys: old,
    }, this.serverName, this.keys.current);
  }

  /**
   * The public key `keyId` of `server` if it may verify something signed at `atTs`: a current key
   * valid until then, or an old key that expired after it. Fetched when not cached (or stale).
   * 'expired' when the server says the key stopped before `atTs`.
   */
  async publicKey(server: string, keyId: string, atTs = Date.now()): Promise<string | 'expired' | undefined> {
    if (server === this.serverName) {
      if (keyId === this.keys.current.keyId) return this.keys.current.publicKey;
      const old = this.keys.old.find((k) => k.keyId === keyId);
      return old ? (old.expiredTs > atTs ? old.publicKey : 'expired') : undefined;
    }
    const usable = (k: StoredServerKey | undefined) => k && (k.expiredTs === null ? k.validUntilTs >= atTs : k.expiredTs > atTs);
    let k = await this.store.get(server, keyId);
    if (usable(k)) return k!.publicKey;
    if (k?.expiredTs !== null && k?.expiredTs !== undefined) return 'expired';
    await this.refresh(server, atTs);
    k = await this.store.get(server, keyId);
    if (usable(k)) return k!.publicKey;
    if (k && k.expiredTs !== null) return 'expired';
    return undefined;
  }

  /** Fetches the server's keys (once at a time per server; not again soon after a failure). */
  private async refresh(server: string, _minimumValidUntil: number): Promise<void> {
    const running = this.fetching.get(server);
    if (running) return running;
    const last = this.lastFetch.get(server);
    if (last !== undefined && Date.now() - last < REFETCH_AFTER_FAILURE_MS) return;
    const p = this.fetchKeys(server).finally(() => { this.fetching.delete(server); });
    this.fetching.set(server, p);
    return p;
  }

  /** Directly from the server, else through each notary in turn; every answer verified before it is stored. */
  private async fetchKeys(server: string): Promise<void> {
    this.lastFetch.set(server, Date.now());
    if (this.lastFetch.size > 10_000) this.lastFetch.delete(this.lastFetch.keys().next().value!);
    try {
      const res = await this.client.request(server, 'GET', '/_matrix/key/v2/server', undefined, FETCH_TIMEOUT_MS);
      if (await this.storeResponse(server, res, undefined)) return;
    } catch (err) {
      this.log.info({ server, err: (err as Error).message }, 'keys not fetched directly; asking notaries');
    }
    for (const notary of this.notaries) {
      if (notary === server || notary === this.serverName) continue;
      try {
        const res = await this.client.request<{ server_keys?: unknown }>(notary, 'POST', '/_matrix/key/v2/query',
          { server_keys: { [server]: {} } }, FETCH_TIMEOUT_MS);
        let stored = false;
        for (const r of Array.isArray(res.server_keys) ? res.server_keys : []) {
          if (isObject(r) && r.server_name === server && (await this.storeResponse(server, r, notary))) stored = true;
        }
        if (stored) return;
      } catch (err) {
        this.log.info({ server, notary, err: (err as Error).message }, 'notary did not give the keys');
      }
    }
  }

  /**
   * Verifies a key response (right server, self-signed by each of its verify_keys, and by the
   * notary that relayed it) and stores its keys. False when it does not verify.
   */
  private async storeResponse(server: string, res: Json, notary: string | undefined): Promise<boolean> {
    if (res.server_name !== server || typeof res.valid_until_ts !== 'number' || !isObject(res.verify_keys)) return false;
    const verify = Object.entries(res.verify_keys).filter(([id, v]) => id.startsWith('ed25519:') && isObject(v) && typeof v.key === 'string');
    if (!verify.length) return false;
    for (const [id, v] of verify) {
      if (!verifyJsonSignature(res, server, id, (v as { key: string }).key)) {
        this.log.warn({ server, keyId: id, notary }, 'key response not signed by its own key: ignored');
        return false;
      }
    }
    if (notary) {
      const sigs = isObject(res.signatures) && isObject(res.signatures[notary]) ? Object.keys(res.signatures[notary]) : [];
      let ok = false;
      for (const id of sigs) {
        const key = await this.publicKey(notary, id);
        if (typeof key === 'string' && verifyJsonSignature(res, notary, id, key)) { ok = true; break; }
      }
      if (!ok) { this.log.warn({ server, notary }, 'key response not signed by the notary: ignored'); return false; }
    }
    const text = canonicalJson(res);
    const rows: StoredServerKey[] = verify.map(([keyId, v]) => ({ serverName: server, keyId, publicKey: (v as { key: string }).key, validUntilTs: res.valid_until_ts as number, expiredTs: null, responseJson: text }));
    if (isObject(res.old_verify_keys)) {
      for (const [keyId, v] of Object.entries(res.old_verify_keys)) {
        if (!isObject(v) || typeof v.key !== 'string' || typeof v.expired_ts !== 'number' || verify.some(([id]) => id === keyId)) continue;
        rows.push({ serverName: server, keyId, publicKey: v.key, validUntilTs: res.valid_until_ts as number, expiredTs: v.expired_ts, responseJson: text });
      }
    }
    await this.store.put(rows, Date.now());
    return true;
  }

  /**
   * The notary: for each server asked about, the key responses we hold (fetched now if none is
   * valid until the asked minimum), each with our signature added.
   */
  async query(criteria: KeyCriteria, minimumValidUntil = 0): Promise<{ server_keys: Json[] }> {
    const out: Json[] = [];
    await Promise.all(Object.entries(criteria).map(async ([server, wanted]) => {
      if (server === this.serverName) { out.push(this.ownKeys()); return; }
      const minimum = Math.max(minimumValidUntil, ...Object.values(wanted).map((c) => (typeof c?.minimum_valid_until_ts === 'number' ? c.minimum_valid_until_ts : 0)));
      const fresh = (rows: StoredServerKey[]) => rows.some((r) => r.expiredTs === null && r.validUntilTs >= Math.max(minimum, Date.now()) && (Object.keys(wanted).length === 0 || r.keyId in wanted));
      let rows = await this.store.ofServer(server);
      if (!fresh(rows) && this.client.allows(server)) {
        await this.refresh(server, minimum).catch(() => {});
        rows = await this.store.ofServer(server);
      }
      for (const text of new Set(rows.map((r) => r.responseJson))) {
        out.push(signJson(JSON.parse(text) as Json, this.serverName, this.keys.current));
      }
    }));
    return { server_keys: out };
  }
}
