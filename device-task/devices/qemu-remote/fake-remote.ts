// An in-memory stand-in for a remote QEMU PCI device, for the bridge's unit tests and its in-memory
// conformance run: a config space whose BAR registers behave like real ones (size masks, type bits,
// 64-bit pairs), COMMAND-gated decoding, plain memory behind each BAR, and the remote's rule that an
// access to an address no BAR decodes is fatal (QEMU's remote reports it and exits).

import { RemoteFailure, RemoteLink, SysmemFd } from './link';
import { PCI_CONFIG_SPACE_SIZE } from './wire';

export interface FakeBar {
  index: number;
  pio: boolean;
  size: bigint;
  is64?: boolean;
}

export interface FakeDevice {
  vendor: number;
  device: number;
  classRevision: number;
  interruptPin: number;
  bars: FakeBar[];
}

/** Something like pci-testdev's shape: 4 KiB of memory at BAR0, 256 I/O ports at BAR1, plus a 64-bit BAR2. */
export const FAKE_TESTDEV: FakeDevice = {
  vendor: 0x1b36, device: 0x0005, classRevision: 0x00ff0000, interruptPin: 1,
  bars: [{ index: 0, pio: false, size: 0x1000n }, { index: 1, pio: true, size: 0x100n }, { index: 2, pio: false, size: 0x4000n, is64: true }],
};

interface Reg {
  /** Bits the guest can change; the rest read as `fixed`. */
  wmask: number;
  fixed: number;
}

export class FakePciRemote implements RemoteLink {
  readonly config = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Every call, in order, e.g. "cfgwrite 0x10 0xffffffff/4", "barread 0xd0000000/4 mem". */
  readonly calls: string[] = [];
  sysmem: SysmemFd[] | undefined;
  irqfds: [number, number] | undefined;
  resets = 0;
  private dead = false;
  private readonly regs = new Map<number, Reg>();
  private readonly storage = new Map<number, Uint8Array>();
  private readonly view: DataView;

  constructor(readonly dev: FakeDevice = FAKE_TESTDEV) {
    this.view = new DataView(this.config.buffer);
    this.view.setUint16(0x00, dev.vendor, true);
    this.view.setUint16(0x02, dev.device, true);
    this.view.setUint32(0x08, dev.classRevision, true);
    this.config[0x3d] = dev.interruptPin;
    this.regs.set(0x04, { wmask: 0x0407, fixed: 0 });
    for (const b of dev.bars) {
      const reg = 0x10 + 4 * b.index;
      const low = BigInt.asUintN(32, ~(b.size - 1n));
      if (b.pio) this.regs.set(reg, { wmask: Number(low) & ~0x3, fixed: 0x1 });
      else this.regs.set(reg, { wmask: Number(low) & ~0xf, fixed: b.is64 ? 0x4 : 0 });
      if (b.is64) this.regs.set(reg + 4, { wmask: Number(BigInt.asUintN(32, ~(b.size - 1n) >> 32n)), fixed: 0 });
      this.storage.set(b.index, new Uint8Array(Number(b.size)));
    }
    for (const [off, r] of this.regs) this.view.setUint32(off, r.fixed, true);
  }

  /** From now on every call fails as if the remote had exited. */
  kill(): void {
    this.dead = true;
  }

  private check(): void {
    if (this.dead) throw new RemoteFailure('the fake remote is gone', 'EOF');
  }

  configRead(addr: number, len: number): number {
    this.check();
    this.calls.push(`cfgread 0x${addr.toString(16)}/${len}`);
    let v = 0;
    for (let i = len - 1; i >= 0; i--) v = (v * 256) + this.config[addr + i];
    return v;
  }

  configWrite(addr: number, val: number, len: number): void {
    this.check();
    this.calls.push(`cfgwrite 0x${addr.toString(16)} 0x${(val >>> 0).toString(16)}/${len}`);
    for (let i = 0; i < len; i++) {
      const at = addr + i;
      const reg = this.regs.get(at & ~3);
      if (!reg) continue;
      const shift = 8 * (at & 3);
      const m = (reg.wmask >>> shift) & 0xff;
      const byte = (val >>> (8 * i)) & 0xff;
      this.config[at] = (this.config[at] & ~m) | (byte & m) | ((reg.fixed >>> shift) & 0xff & ~m);
    }
  }

  /** Where BAR `index` decodes now, or undefined (decoding off, or still at 0). */
  private baseOf(b: FakeBar): bigint | undefined {
    const command = this.view.getUint16(0x04, true);
    if (!(command & (b.pio ? 0x1 : 0x2))) return undefined;
    const reg = 0x10 + 4 * b.index;
    let base = BigInt(this.view.getUint32(reg, true) & (b.pio ? ~0x3 : ~0xf)) & 0xffff_ffffn;
    if (b.is64) base |= BigInt(this.view.getUint32(reg + 4, true)) << 32n;
    return base === 0n ? undefined : base;
  }

  private find(addr: bigint, size: number, memory: boolean): { bytes: Uint8Array; off: number } {
    for (const b of this.dev.bars) {
      const base = this.baseOf(b);
      if (base !== undefined && b.pio !== memory && addr >= base && addr + BigInt(size) <= base + b.size) {
        return { bytes: this.storage.get(b.index)!, off: Number(addr - base) };
      }
    }
    this.dead = true;
    throw new RemoteFailure(`bad address 0x${addr.toString(16)} for a ${memory ? 'memory' : 'I/O'} access: the remote exits`, 'EOF');
  }

  barRead(addr: bigint, size: number, memory: boolean): bigint {
    this.check();
    this.calls.push(`barread 0x${addr.toString(16)}/${size} ${memory ? 'mem' : 'io'}`);
    const { bytes, off } = this.find(addr, size, memory);
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[off + i]);
    return v;
  }

  barWrite(addr: bigint, size: number, memory: boolean, val: bigint): void {
    this.check();
    this.calls.push(`barwrite 0x${addr.toString(16)}/${size} ${memory ? 'mem' : 'io'} 0x${val.toString(16)}`);
    const { bytes, off } = this.find(addr, size, memory);
    for (let i = 0; i < size; i++) bytes[off + i] = Number((val >> BigInt(8 * i)) & 0xffn);
  }

  syncSysmem(regions: readonly SysmemFd[]): void {
    this.check();
    this.calls.push(`sync_sysmem ${regions.length}`);
    this.sysmem = [...regions];
  }

  setIrqfd(intxFd: number, resampleFd: number): void {
    this.check();
    this.calls.push(`set_irqfd ${intxFd} ${resampleFd}`);
    this.irqfds = [intxFd, resampleFd];
  }

  deviceReset(): void {
    this.check();
    this.calls.push('device_reset');
    this.resets++;
    for (const s of this.storage.values()) s.fill(0);
  }
}
