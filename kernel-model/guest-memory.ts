// A vCPU thread's view of guest RAM: its own MAP_SHARED mapping of every memslot, looked up by GPA.

import { closeQuietly, mapShared, Mapping, PROT_READ, PROT_WRITE, unmap } from '../proto/os';

/** One memslot as a vCPU sees it. */
export interface SlotView {
  key: number;
  gpa: bigint;
  end: bigint;
  readonly: boolean;
  mapping: Mapping;
  view: DataView;
  bytes: Uint8Array;
}

/** A memslot as the VM describes it to its vCPUs; `fd` comes only with slots new to this thread. */
export interface MemslotDesc {
  key: number;
  gpa: bigint;
  size: number;
  offset: bigint;
  readonly: boolean;
}

export class GuestMemory {
  private slots: SlotView[] = [];
  private last: SlotView | undefined;

  /**
   * Replace the slot list. Slots keep their mapping while their key is unchanged; new keys are mapped
   * from the fd the VM dup'ed for this thread (closed here once mapped), dropped keys are unmapped.
   */
  update(descs: MemslotDesc[], fds: Map<number, number>): void {
    const old = new Map(this.slots.map((s) => [s.key, s]));
    const next: SlotView[] = [];
    for (const d of descs) {
      let s = old.get(d.key);
      if (s) {
        old.delete(d.key);
      } else {
        const fd = fds.get(d.key);
        if (fd === undefined) continue;
        fds.delete(d.key);
        let mapping: Mapping;
        try {
          // A read-only slot may be backed by a read-only memfd: never map more than it allows.
          mapping = mapShared(fd, d.size, d.offset, d.readonly ? PROT_READ : PROT_READ | PROT_WRITE);
        } catch (e) {
          // The VM probed this mapping at registration, so this is an exhausted address space: the
          // slot stays absent for this vCPU (its accesses exit to the VMM) rather than killing it.
          process.stderr.write(`kernel-model: cannot map memslot at 0x${d.gpa.toString(16)}: ${(e as Error).message}\n`);
          continue;
        } finally {
          closeQuietly(fd);
        }
        s = {
          key: d.key, gpa: d.gpa, end: d.gpa + BigInt(d.size), readonly: d.readonly, mapping,
          view: new DataView(mapping.buffer), bytes: new Uint8Array(mapping.buffer),
        };
      }
      next.push(s);
    }
    for (const s of old.values()) unmap(s.mapping);
    for (const fd of fds.values()) closeQuietly(fd);
    next.sort((a, b) => (a.gpa < b.gpa ? -1 : a.gpa > b.gpa ? 1 : 0));
    this.slots = next;
    this.last = undefined;
  }

  /** The slot holding all of [gpa, gpa+len), if any. */
  find(gpa: bigint, len: number): SlotView | undefined {
    const l = this.last;
    if (l && gpa >= l.gpa && gpa + BigInt(len) <= l.end) return l;
    let lo = 0;
    let hi = this.slots.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.slots[mid].end <= gpa) lo = mid + 1;
      else hi = mid;
    }
    const s = this.slots[lo];
    if (s && gpa >= s.gpa && gpa + BigInt(len) <= s.end) {
      this.last = s;
      return s;
    }
    return undefined;
  }

  /** Unmap everything (vCPU thread exit). */
  clear(): void {
    for (const s of this.slots) unmap(s.mapping);
    this.slots = [];
    this.last = undefined;
  }
}

/** Load `size` little-endian bytes at byte offset `off` of a DataView. */
export function loadLE(v: DataView, off: number, size: number): bigint {
  switch (size) {
    case 1: return BigInt(v.getUint8(off));
    case 2: return BigInt(v.getUint16(off, true));
    case 4: return BigInt(v.getUint32(off, true));
    case 8: return v.getBigUint64(off, true);
    default: {
      let x = 0n;
      for (let i = size - 1; i >= 0; i--) x = (x << 8n) | BigInt(v.getUint8(off + i));
      return x;
    }
  }
}

/** Store the low `size` bytes of value, little-endian. */
export function storeLE(v: DataView, off: number, size: number, value: bigint): void {
  switch (size) {
    case 1: v.setUint8(off, Number(value & 0xffn)); return;
    case 2: v.setUint16(off, Number(value & 0xffffn), true); return;
    case 4: v.setUint32(off, Number(value & 0xffffffffn), true); return;
    case 8: v.setBigUint64(off, BigInt.asUintN(64, value), true); return;
    default:
      for (let i = 0; i < size; i++) v.setUint8(off + i, Number((value >> BigInt(8 * i)) & 0xffn));
  }
}
