import { encodeBase64 } from '../protocol/base64.ts';
import { generateSigningKey, signingKeyFromSeed, type SigningKey } from '../protocol/signing.ts';
import type { ServerStore } from './store.ts';

/** The server's ed25519 signing key: made on first start, kept in the database for every worker. */
export async function loadOrCreateSigningKey(store: ServerStore): Promise<SigningKey> {
  let made: SigningKey | undefined;
  const stored = await store.newestSigningKeyOr(() => {
    made = generateSigningKey();
    return { keyId: made.keyId, seed: encodeBase64(made.seed) };
  });
  return made ?? signingKeyFromSeed(stored.keyId, stored.seed);
}
