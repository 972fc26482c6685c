// An upload's bytes go to a temp file while they are hashed, one chunk at a time: the server's
// memory does not grow with the file. Temp files live in DATA_DIR/media/tmp, outside the stored
// tree, and carry the pid of the process writing them, so a restarted worker removes what a
// crashed one left without touching a live sibling's uploads.
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { MatrixError } from '../http/errors.ts';

export interface SpooledFile {
  path: string;
  size: number;
  sha256: string;
}

export interface SpoolLimits {
  /** Bytes past this are refused with `tooLarge()` (413 M_TOO_LARGE). */
  maxBytes: number;
  /** Called with the running size; throws to refuse the upload (e.g. a quota). */
  check?: (size: number) => void;
}

export class UploadSpool {
  readonly dir: string;

  constructor(mediaRoot: string) {
    this.dir = path.join(mediaRoot, 'tmp');
  }

  async prepare(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    // What a crashed process left: never visible (never renamed into the stored tree), now gone.
    for (const name of await fsp.readdir(this.dir)) {
      const pid = Number(name.split('-')[0]);
      if (pid === process.pid || alive(pid)) continue;
      await fsp.rm(path.join(this.dir, name), { force: true, recursive: true });
    }
  }

  newTempPath(): string {
    return path.join(this.dir, `${process.pid}-${randomBytes(12).toString('hex')}`);
  }

  /**
   * Writes the request body to a new temp file, fsynced, and returns it. On any failure (too large,
   * refused by `check`, the client went away) the temp file is removed and the error thrown; the rest
   * of an over-limit body is read and dropped so that the error can still be answered.
   */
  async receive(req: IncomingMessage, limits: SpoolLimits): Promise<SpooledFile> {
    const file = this.newTempPath();
    const handle = await fsp.open(file, 'wx', 0o600);
    const hash = createHash('sha256');
    let size = 0;
    try {
      await new Promise<void>((resolve, reject) => {
        let writing = Promise.resolve();
        let failed = false;
        const cleanup = () => {
          req.off('data', onData);
          req.off('end', onEnd);
          req.off('error', onAbort);
          req.off('close', onClose);
        };
        const fail = (err: unknown, drain: boolean) => {
          if (failed) return;
          failed = true;
          cleanup();
          if (drain) req.resume();
          reject(err);
        };
        const onData = (chunk: Buffer) => {
          size += chunk.length;
          try {
            if (size > limits.maxBytes) throw tooLarge(limits.maxBytes);
            limits.check?.(size);
          } catch (err) { fail(err, true); return; }
          hash.update(chunk);
          // One chunk in flight at a time: the socket is paused until it is written.
          req.pause();
          writing = writing.then(() => handle.write(chunk)).then(() => { if (!failed) req.resume(); }, (err) => fail(err, true));
        };
        const onEnd = () => {
          cleanup();
          writing.then(() => { if (!failed) resolve(); });
        };
        const onAbort = () => fail(new MatrixError(400, 'M_UNKNOWN', 'The client aborted the upload'), false);
        const onClose = () => { if (!req.readableEnded) onAbort(); };
        if (req.readableEnded) { onEnd(); return; }
        if (req.destroyed) { onAbort(); return; }
        req.on('data', onData);
        req.once('end', onEnd);
        req.once('error', onAbort);
        req.once('close', onClose);
      });
      await handle.sync();
      await handle.close();
      return { path: file, size, sha256: hash.digest('hex') };
    } catch (err) {
      await handle.close().catch(() => {});
      await fsp.rm(file, { force: true });
      throw err;
    }
  }
}

export function tooLarge(maxBytes: number): MatrixError {
  return new MatrixError(413, 'M_TOO_LARGE', `Uploads are limited to ${maxBytes} bytes`);
}

function alive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}
