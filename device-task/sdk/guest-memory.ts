// Guest memory as a device task sees it: the VM's memfds mapped MAP_SHARED, addressed by GPA and
// bounds-checked. A DMA outside guest RAM is reported (false / undefined), never thrown.

import type { MemorySpec } from '../../proto/device-task-manifest';
import { mapShared } from '../../proto/os';

interface Region {
  gpa: bigint;
  end: bigint;
  bytes: Uint8Array;
}

export class GuestMemoryDma {
  private readonly regions: Region[];

  /** Regions over any byte arrays (a real mapping, or plain memory in unit tests). */
  constructor(regions: { gpa: bigint; bytes: Uint8Array }[]) {
    this.regions = regions.map((r) => ({ gpa: r.gpa, end: r.gpa + BigInt(r.bytes.length), bytes: r.bytes }));
  }

  /** Map the memory the manifest hands over. */
  static map(specs: MemorySpec[]): GuestMemoryDma {
    return new GuestMemoryDma(specs.map((s) => ({ gpa: s.gpa, bytes: new Uint8Array(mapShared(s.fd, Number(s.size), s.offset).buffer) })));
  }

  /** A live view of [gpa, gpa+len) if one region holds all of it; undefined for anything else. */
  view(gpa: bigint, len: number): Uint8Array | undefined {
    // Guest-derived values: anything that is not a u64 address and a whole length is simply outside.
    if (typeof gpa !== 'bigint' || !Number.isSafeInteger(len) || len < 0) return undefined;
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + BigInt(len) <= r.end) {
        const off = Number(gpa - r.gpa);
        return r.bytes.subarray(off, off + len);
      }
    }
    return undefined;
  }

  /** Copy guest memory into `out`; false if any byte lies outside guest RAM (then nothing is copied). */
  read(gpa: bigint, out: Uint8Array): boolean {
    const v = this.view(gpa, out.length);
    if (!v) return false;
    out.set(v);
    return true;
  }

  /** Copy `data` into guest memory; false (and no write) if it does not fit in guest RAM. */
  write(gpa: bigint, data: Uint8Array): boolean {
    const v = this.view(gpa, data.length);
    if (!v) return false;
    v.set(data);
    return true;
  }

  readU64(gpa: bigint): bigint | undefined {
    const v = this.view(gpa, 8);
    return v ? new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true) : undefined;
  }

  writeU64(gpa: bigint, value: bigint): boolean {
    const v = this.view(gpa, 8);
    if (!v) return false;
    new DataView(v.buffer, v.byteOffset, 8).setBigUint64(0, BigInt.asUintN(64, value), true);
    return true;
  }

  readU32(gpa: bigint): number | undefined {
    const v = this.view(gpa, 4);
    return v ? new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true) : undefined;
  }

  writeU32(gpa: bigint, value: number): boolean {
    const v = this.view(gpa, 4);
    if (!v) return false;
    new DataView(v.buffer, v.byteOffset, 4).setUint32(0, value >>> 0, true);
    return true;
  }
}
