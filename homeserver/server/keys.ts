import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { encodeBase64 } from '../protocol/base64.ts';
import { generateSigningKey, signingKeyFromSeed, type SigningKey } from '../protocol/signing.ts';
import { StartupError } from '../startup-error.ts';
import type { ServerStore } from './store.ts';

/** Our keys: the one that signs, and the ones it replaced (published as old_verify_keys). */
export interface ServerKeys {
  current: SigningKey;
  old: Array<{ keyId: string; publicKey: string; expiredTs: number }>;
}

/**
 * Synapse's signing key file: one key a line, `ed25519 <version> <unpadded base64 seed>`; the
 * first line is the key that signs. Undefined for text that holds no such line.
 */
export function parseSigningKeyFile(text: string): SigningKey | undefined {
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length === 1 && parts[0] === '') continue;
    if (parts.length !== 3 || parts[0] !== 'ed25519' || !/^[A-Za-z0-9_]+$/.test(parts[1]!)) return undefined;
    try { return signingKeyFromSeed(`ed25519:${parts[1]}`, parts[2]!); } catch { return undefined; }
  }
  return undefined;
}

export function formatSigningKeyFile(key: SigningKey): string {
  return `ed25519 ${key.keyId.slice('ed25519:'.length)} ${encodeBase64(key.seed)}\n`;
}

/**
 * The server's ed25519 signing key. The key file (SIGNING_KEY_PATH, else DATA_DIR/signing.key) is
 * the source of truth when it exists: its key is imported into the database, where every worker
 * finds it, and any other key there becomes an old key. A configured file that cannot be read or
 * parsed stops the start (a new key would silently change the server's identity). With no file,
 * the database's key (made on first start) is written to DATA_DIR/signing.key.
 */
export interface SigningKeyFile {
  file: string;
  /** The file's key; undefined when there is no file yet (DATA_DIR/signing.key on a first start). */
  key: SigningKey | undefined;
}

/**
 * Reads the key file before anything else starts: a configured file that cannot be read or
 * parsed stops the start at once, with a message saying why.
 */
export function readSigningKeyFile(opts: { dataDir: string; configuredPath: string | undefined }): SigningKeyFile {
  const file = opts.configuredPath ?? path.join(opts.dataDir, 'signing.key');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // No file in DATA_DIR yet (or no DATA_DIR: its own check says why, next).
    if (!opts.configuredPath && (code === 'ENOENT' || code === 'ENOTDIR')) return { file, key: undefined };
    throw new StartupError(`${opts.configuredPath ? 'SIGNING_KEY_PATH' : 'the signing key file'} ${file} cannot be read (${code ?? (err as Error).message}): it must name a readable signing key file ("ed25519 <version> <seed>", as Synapse writes it); the server will not make a new key in its place`);
  }
  const key = parseSigningKeyFile(text);
  if (!key) throw new StartupError(`the signing key file ${file} holds no key of the form "ed25519 <version> <unpadded base64 seed>"`);
  return { file, key };
}

export async function loadSigningKeys(store: ServerStore, keyFile: SigningKeyFile, log: Logger): Promise<ServerKeys> {
  const { file } = keyFile;
  const opts = { log };
  let current: SigningKey;
  if (keyFile.key) {
    const key = keyFile.key;
    const outcome = await store.importSigningKey({ keyId: key.keyId, seed: encodeBase64(key.seed) });
    if (outcome === 'conflict') throw new StartupError(`the signing key file ${file} holds ${key.keyId}, which the database knows with another seed: restore the right file`);
    if (outcome === 'imported') opts.log.warn({ keyId: key.keyId, file }, 'signing key imported from its file; earlier keys are now old_verify_keys');
    current = key;
  } else {
    let made: SigningKey | undefined;
    const stored = await store.newestSigningKeyOr(() => {
      made = generateSigningKey();
      return { keyId: made.keyId, seed: encodeBase64(made.seed) };
    });
    current = made ?? signingKeyFromSeed(stored.keyId, stored.seed);
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      // Written whole or not at all; readable by this user only.
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, formatSigningKeyFile(current), { mode: 0o600 });
      fs.renameSync(tmp, file);
      opts.log.info({ keyId: current.keyId, file }, made ? 'signing key made and saved' : 'signing key saved to its file');
    } catch (err) {
      opts.log.warn({ err, file }, 'the signing key could not be saved to its file (it stays in the database)');
    }
  }
  const old = (await store.expiredSigningKeys()).filter((k) => k.keyId !== current.keyId)
    .map((k) => ({ keyId: k.keyId, publicKey: signingKeyFromSeed(k.keyId, k.seed).publicKey, expiredTs: k.expiredTs }));
  return { current, old };
}
