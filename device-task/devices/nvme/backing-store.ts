// Where a namespace's blocks live: a raw disk image file (positioned readv/writev straight between the
// file and guest memory, fdatasync for Flush, hole punching for deallocate), or RAM for unit tests and
// for a model created without an image. I/O errors are reported as false, never thrown.

import * as fs from 'fs';
import { punchHole } from '../../../proto/os';

export interface BackingStore {
  /** Bytes. */
  readonly size: number;
  readonly description: string;
  /** Fill `bufs` in order from byte `pos`; bytes past the end of the store read as zeros. */
  read(pos: number, bufs: Uint8Array[]): boolean;
  /** Write `bufs` in order at byte `pos`. */
  write(pos: number, bufs: Uint8Array[]): boolean;
  /** Make [pos, pos + len) read as zeros; `deallocate` lets the store give the space back. */
  zero(pos: number, len: number, deallocate: boolean): boolean;
  /** Make every completed write durable (fdatasync). */
  flush(): boolean;
  close(): void;
  /** Flushes done so far (for tests and statistics). */
  readonly flushes: number;
}

const ZERO_CHUNK = 1 << 20;

/** A raw image file. */
export class FileStore implements BackingStore {
  readonly size: number;
  flushes = 0;
  private fd: number;
  private zeros: Uint8Array | undefined;

  private constructor(readonly description: string, fd: number) {
    this.fd = fd;
    this.size = fs.fstatSync(fd).size;
  }

  /**
   * Open an image read-write. With `createSize`, a missing file is created as a sparse file of that
   * many bytes; an existing file keeps its size. Throws (a configuration error) if it cannot be opened.
   */
  static open(path: string, createSize?: number): FileStore {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || createSize === undefined) throw e;
      fd = fs.openSync(path, 'wx+');
      fs.ftruncateSync(fd, createSize);
    }
    return new FileStore(path, fd);
  }

  read(pos: number, bufs: Uint8Array[]): boolean {
    try {
      let want = 0;
      for (const b of bufs) want += b.length;
      const got = bufs.length === 1 ? fs.readSync(this.fd, bufs[0], 0, want, pos) : fs.readvSync(this.fd, bufs, pos);
      if (got < want) this.zeroTail(bufs, got);
      return true;
    } catch {
      return false;
    }
  }

  /** A short read means end of file: what was not read is zeros. */
  private zeroTail(bufs: Uint8Array[], got: number): void {
    for (const b of bufs) {
      if (got >= b.length) {
        got -= b.length;
        continue;
      }
      b.fill(0, got);
      got = 0;
    }
  }

  write(pos: number, bufs: Uint8Array[]): boolean {
    try {
      let rest = bufs;
      while (rest.length) {
        let n = rest.length === 1 ? fs.writeSync(this.fd, rest[0], 0, rest[0].length, pos) : fs.writevSync(this.fd, rest, pos);
        if (n <= 0) return false;
        pos += n;
        const left: Uint8Array[] = [];
        for (const b of rest) {
          if (n >= b.length) n -= b.length;
          else {
            left.push(b.subarray(n));
            n = 0;
          }
        }
        rest = left;
      }
      return true;
    } catch {
      return false;
    }
  }

  zero(pos: number, len: number, deallocate: boolean): boolean {
    if (len <= 0) return true;
    // A punched hole reads as zeros; without deallocation, or where the file system cannot punch, write them.
    if (deallocate && punchHole(this.fd, pos, len) === 0) return true;
    this.zeros ??= new Uint8Array(ZERO_CHUNK);
    for (let done = 0; done < len;) {
      const n = Math.min(ZERO_CHUNK, len - done);
      if (!this.write(pos + done, [this.zeros.subarray(0, n)])) return false;
      done += n;
    }
    return true;
  }

  flush(): boolean {
    try {
      fs.fdatasyncSync(this.fd);
      this.flushes++;
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      // Already gone.
    }
    this.fd = -1;
  }
}

/** Blocks in memory: what unit tests and a model without an image use. */
export class MemoryStore implements BackingStore {
  readonly bytes: Uint8Array;
  readonly description: string;
  flushes = 0;

  constructor(readonly size: number) {
    this.bytes = new Uint8Array(size);
    this.description = `${size} bytes of RAM`;
  }

  read(pos: number, bufs: Uint8Array[]): boolean {
    for (const b of bufs) {
      const n = Math.max(0, Math.min(b.length, this.size - pos));
      b.set(this.bytes.subarray(pos, pos + n));
      b.fill(0, n);
      pos += b.length;
    }
    return true;
  }

  write(pos: number, bufs: Uint8Array[]): boolean {
    for (const b of bufs) {
      if (pos + b.length > this.size) return false;
      this.bytes.set(b, pos);
      pos += b.length;
    }
    return true;
  }

  zero(pos: number, len: number): boolean {
    if (pos + len > this.size) return false;
    this.bytes.fill(0, pos, pos + len);
    return true;
  }

  flush(): boolean {
    this.flushes++;
    return true;
  }

  close(): void {
    // Nothing to release.
  }
}
