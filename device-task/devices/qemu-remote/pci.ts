// PCI config space work the bridge does once the remote runs, in the order a firmware would: read
// the identity, size every BAR (write all-ones, read back, restore), program the BARs the config maps
// at their guest addresses, then turn on decoding and bus mastering in COMMAND.

import type { BarMapping } from './config';
import { IO_SPACE_SIZE, PCI_NUM_BARS } from './config';
import type { RemoteLink } from './link';

export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_CLASS_REVISION = 0x08;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_INTERRUPT_PIN = 0x3d;
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
const BAR_SPACE_IO = 0x1;
const BAR_MEM_TYPE_MASK = 0x6;
const BAR_MEM_TYPE_64 = 0x4;
const BAR_MEM_PREFETCH = 0x8;

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** What config space says about the device. */
export interface PciIdentity {
  vendor: number;
  device: number;
  /** Class code (base, sub, prog-if) << 8 | revision. */
  classRevision: number;
  /** 0 = no interrupt pin; 1..4 = INTA..INTD. */
  interruptPin: number;
}

/** One implemented BAR, as sizing found it. */
export interface BarInfo {
  index: number;
  pio: boolean;
  /** A 64-bit memory BAR (it also takes the next BAR register). */
  is64: boolean;
  prefetchable: boolean;
  size: bigint;
}

/** A BAR the guest reaches: where it was programmed and how big it is. */
export interface MappedBar {
  index: number;
  pio: boolean;
  base: bigint;
  size: bigint;
}

export function readIdentity(link: RemoteLink): PciIdentity {
  return {
    vendor: link.configRead(PCI_VENDOR_ID, 2),
    device: link.configRead(PCI_DEVICE_ID, 2),
    classRevision: link.configRead(PCI_CLASS_REVISION, 4),
    interruptPin: link.configRead(PCI_INTERRUPT_PIN, 1),
  };
}

const barReg = (i: number) => PCI_BASE_ADDRESS_0 + 4 * i;

/** Write all-ones to a BAR register, read what sticks, put the old value back. */
function probe(link: RemoteLink, reg: number): { orig: number; mask: number } {
  const orig = link.configRead(reg, 4);
  link.configWrite(reg, 0xffff_ffff, 4);
  const mask = link.configRead(reg, 4);
  link.configWrite(reg, orig, 4);
  return { orig, mask };
}

/** Size every BAR of the device (decoding must still be off, as it is after reset). */
export function sizeBars(link: RemoteLink): BarInfo[] {
  const out: BarInfo[] = [];
  for (let i = 0; i < PCI_NUM_BARS; i++) {
    const lo = probe(link, barReg(i));
    if (lo.mask === 0) continue;
    if (lo.orig & BAR_SPACE_IO) {
      // The upper 16 bits of an I/O BAR may be hardwired to zero (x86 ports are 16-bit): size over 16 bits then.
      const mask = BigInt(lo.mask & ~0x3);
      const bits = mask & 0xffff_0000n ? 32n : 16n;
      out.push({ index: i, pio: true, is64: false, prefetchable: false, size: (BigInt.asUintN(Number(bits), ~mask) + 1n) });
      continue;
    }
    const is64 = (lo.orig & BAR_MEM_TYPE_MASK) === BAR_MEM_TYPE_64 && i + 1 < PCI_NUM_BARS;
    let mask = BigInt(lo.mask & ~0xf) | 0xffff_ffff_0000_0000n;
    if (is64) mask = (BigInt(probe(link, barReg(i + 1)).mask) << 32n) | BigInt(lo.mask & ~0xf);
    out.push({ index: i, pio: false, is64, prefetchable: (lo.orig & BAR_MEM_PREFETCH) !== 0, size: BigInt.asUintN(64, ~mask) + 1n });
    if (is64) i++;
  }
  return out;
}

const describe = (b: BarInfo) => `BAR${b.index} is ${b.pio ? 'I/O ports' : `${b.is64 ? '64' : '32'}-bit memory`} of ${hex(b.size)} bytes`;

/**
 * Check the config's BAR mappings against what the device has, and against each other and guest RAM;
 * returns where each mapped BAR goes. Throws an Error saying what does not fit.
 */
export function planBars(device: string, bars: readonly BarInfo[], wanted: readonly BarMapping[], ram: readonly { gpa: bigint; size: bigint }[]): MappedBar[] {
  const out: MappedBar[] = [];
  for (const w of wanted) {
    const b = bars.find((x) => x.index === w.index);
    if (!b) {
      const upper = bars.find((x) => x.is64 && x.index + 1 === w.index);
      const has = bars.map(describe).join('; ') || 'no BARs';
      throw new Error(`config.bars.${w.index}: ${device} has no BAR${w.index}${upper ? ` (it is the upper half of 64-bit BAR${upper.index})` : ''}; ${has}`);
    }
    if (w.pio !== undefined && w.pio !== b.pio) throw new Error(`config.bars.${w.index}.pio is ${w.pio}, but ${device}'s ${describe(b)}`);
    if (w.size !== undefined && w.size !== b.size) throw new Error(`config.bars.${w.index}.size is ${hex(w.size)}, but ${device}'s ${describe(b)}`);
    if (w.gpa % b.size !== 0n) throw new Error(`config.bars.${w.index}.gpa ${hex(w.gpa)} is not aligned to the BAR's size ${hex(b.size)}`);
    const limit = b.pio ? IO_SPACE_SIZE : b.is64 ? 1n << 64n : 1n << 32n;
    if (w.gpa + b.size > limit) throw new Error(`config.bars.${w.index}.gpa ${hex(w.gpa)}: ${describe(b)} does not fit below ${hex(limit)}`);
    out.push({ index: b.index, pio: b.pio, base: w.gpa, size: b.size });
  }
  // The remote has one memory space, holding guest RAM (SYNC_SYSMEM) and the BARs alike.
  for (const m of out) {
    const clash = out.find((o) => o !== m && o.pio === m.pio && o.base < m.base + m.size && m.base < o.base + o.size);
    if (clash) throw new Error(`config.bars: BAR${m.index} and BAR${clash.index} overlap`);
    const r = m.pio ? undefined : ram.find((x) => x.gpa < m.base + m.size && m.base < x.gpa + x.size);
    if (r) throw new Error(`config.bars.${m.index}.gpa ${hex(m.base)}: the BAR overlaps guest RAM at ${hex(r.gpa)}..${hex(r.gpa + r.size)}`);
  }
  return out;
}

/** Program each mapped BAR's base, then enable I/O and memory decoding as needed, and bus mastering. */
export function programBars(link: RemoteLink, mapped: readonly MappedBar[], bars: readonly BarInfo[]): void {
  for (const m of mapped) {
    const info = bars.find((b) => b.index === m.index)!;
    link.configWrite(barReg(m.index), Number(m.base & 0xffff_ffffn), 4);
    if (info.is64) link.configWrite(barReg(m.index + 1), Number(m.base >> 32n), 4);
  }
  let command = link.configRead(PCI_COMMAND, 2) | PCI_COMMAND_MASTER;
  if (mapped.some((m) => m.pio)) command |= PCI_COMMAND_IO;
  if (mapped.some((m) => !m.pio)) command |= PCI_COMMAND_MEMORY;
  link.configWrite(PCI_COMMAND, command, 2);
}
