// A register file for device models: registers at offsets with sizes, reset values, writable masks,
// write-1-to-clear bits and side effects, decoded so that odd offsets and sizes stay defined.

export interface RegisterDef {
  name: string;
  offset: number;
  size: 1 | 2 | 4 | 8;
  reset?: bigint;
  /** Bits a guest write may change (default: all). */
  writable?: bigint;
  /** Bits a guest clears by writing 1 (status registers). */
  w1c?: bigint;
  /** Called after a guest write, with the register's new value. */
  onWrite?(value: bigint): void;
  /** Computes the value of a guest read (e.g. a live counter); the stored value is used otherwise. */
  onRead?(): bigint;
}

import { sizeMask as mask } from '../../proto/ioregionfd-wire';

export class RegisterSpace {
  private readonly defs: RegisterDef[];
  private readonly values = new Map<string, bigint>();
  /** Guest accesses that hit no register or straddled two: read as 0 / ignored, and counted. */
  unclaimed = 0;

  constructor(defs: RegisterDef[]) {
    this.defs = [...defs].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < this.defs.length; i++) {
      const p = this.defs[i - 1];
      if (p.offset + p.size > this.defs[i].offset) throw new Error(`registers ${p.name} and ${this.defs[i].name} overlap`);
    }
    this.reset();
  }

  reset(): void {
    for (const d of this.defs) this.values.set(d.name, (d.reset ?? 0n) & mask(d.size));
  }

  /** The register wholly containing [offset, offset+size), if any. */
  private find(offset: bigint, size: number): RegisterDef | undefined {
    if (offset < 0n || offset > 0xffffffffn) return undefined;
    const o = Number(offset);
    return this.defs.find((d) => o >= d.offset && o + size <= d.offset + d.size);
  }

  /** A guest read: the addressed bytes of one register, or 0 for anything else. */
  read(offset: bigint, size: number): bigint {
    const d = this.find(offset, size);
    if (!d) {
      this.unclaimed++;
      return 0n;
    }
    const v = d.onRead ? d.onRead() & mask(d.size) : this.values.get(d.name)!;
    return (v >> BigInt(8 * (Number(offset) - d.offset))) & mask(size);
  }

  /** A guest write of some or all bytes of one register, honouring writable and w1c bits. */
  write(offset: bigint, size: number, value: bigint): void {
    const d = this.find(offset, size);
    if (!d) {
      this.unclaimed++;
      return;
    }
    const shift = BigInt(8 * (Number(offset) - d.offset));
    const lanes = mask(size) << shift;
    const incoming = (value & mask(size)) << shift;
    const old = this.values.get(d.name)!;
    const writable = (d.writable ?? mask(d.size)) & lanes & ~(d.w1c ?? 0n);
    let next = (old & ~writable) | (incoming & writable);
    next &= ~(incoming & (d.w1c ?? 0n) & lanes);
    this.values.set(d.name, next & mask(d.size));
    d.onWrite?.(next & mask(d.size));
  }

  /** The device's own view of a register (no masks, no side effects). */
  get(name: string): bigint {
    const v = this.values.get(name);
    if (v === undefined) throw new Error(`no register ${name}`);
    return v;
  }

  /** Set a register from the device side (e.g. raise status bits). */
  set(name: string, value: bigint): void {
    const d = this.defs.find((x) => x.name === name);
    if (!d) throw new Error(`no register ${name}`);
    this.values.set(name, value & mask(d.size));
  }
}
