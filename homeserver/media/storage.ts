// Where media bytes live. The service hands storage a finished, fsynced temp file (see spool.ts) and
// a key; an S3-compatible implementation can follow behind the same interface.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';

export interface MediaStorage {
  /**
   * Stores the temp file's bytes under `key`, atomically: a reader sees the whole file or none.
   * The temp file is consumed (moved or removed). Storing a key that exists keeps the existing
   * bytes (keys are content hashes, so they are the same bytes).
   */
  putFromTempFile(key: string, tempPath: string): Promise<void>;
  /** The bytes of `key`, or undefined when there are none. */
  open(key: string): Promise<Readable | undefined>;
  /** A local path of the bytes when the storage has one (sharp reads it directly), else undefined. */
  localPath(key: string): Promise<string | undefined>;
  exists(key: string): Promise<boolean>;
  delete(key: string): Promise<void>;
}

/** Keys are made by the media service from hex digests and numbers; anything else is a bug. */
const SAFE_KEY = /^[a-z]+(\/[A-Za-z0-9_.-]+)+$/;

/**
 * Files under DATA_DIR/media/<key>. The temp files (spool.ts) are in DATA_DIR/media/tmp, on the same
 * file system, so a rename moves them into place atomically.
 */
export class FileSystemMediaStorage implements MediaStorage {
  constructor(private readonly root: string) {}

  private file(key: string): string {
    if (!SAFE_KEY.test(key) || key.includes('..')) throw new Error(`bad media storage key ${key}`);
    return path.join(this.root, key);
  }

  async putFromTempFile(key: string, tempPath: string): Promise<void> {
    const target = this.file(key);
    if (await this.exists(key)) {
      await fsp.rm(tempPath, { force: true });
      return;
    }
    const dir = path.dirname(target);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    // The temp file was fsynced by the spool; the rename is made durable by syncing the directory.
    await fsp.rename(tempPath, target);
    await syncDirectory(dir);
  }

  async open(key: string): Promise<Readable | undefined> {
    const file = this.file(key);
    try {
      const handle = await fsp.open(file, 'r');
      return handle.createReadStream();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async localPath(key: string): Promise<string | undefined> {
    const file = this.file(key);
    return (await this.exists(key)) ? file : undefined;
  }

  async exists(key: string): Promise<boolean> {
    try { return (await fsp.stat(this.file(key))).isFile(); } catch { return false; }
  }

  async delete(key: string): Promise<void> {
    await fsp.rm(this.file(key), { force: true });
  }
}

export async function syncDirectory(dir: string): Promise<void> {
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    await handle.sync();
  } catch { /* some file systems refuse to fsync a directory; the rename itself still happened */ } finally {
    await handle?.close();
  }
}
