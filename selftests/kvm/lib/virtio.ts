// Guest-side virtio (the virtio 1.x spec's split virtqueue, and the legacy virtio-pci transport):
// what a driver in guest code needs to talk to a virtio device. SplitVirtqueue knows nothing of the
// transport, so a modern (MMIO-BAR) transport or another device class can reuse it as it is.
//
// All of this runs inside a vCPU thread, as guest code: ring memory is reached through a view of
// guest RAM (lib/guest.ts guest_ram), registers through port I/O. The device sees the rings in the
// same guest RAM (a shared memfd), so every field is written little-endian at its spec offset.

import { guest_ram, inb, inl, inw, outb, outl, outw } from './guest';

// ---- device status (virtio 1.x §2.1) and descriptor flags (§2.7.5) -------------------------------

export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
/** avail->flags: the driver does not want interrupts for this queue. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

// ---- the split virtqueue layout (§2.7) -------------------------------------------------------------

const DESC_SIZE = 16;
const USED_ELEM_SIZE = 8;

const alignUp = (v: number, a: number) => Math.ceil(v / a) * a;

/** Where the parts of a split virtqueue of `num` entries start, relative to the ring's base. */
export function vring_layout(num: number, align: number): { desc: number; avail: number; used: number; size: number } {
  const avail = DESC_SIZE * num;
  // flags, idx, ring[num], used_event
  const used = alignUp(avail + 2 * (3 + num), align);
  // flags, idx, ring[num] of {id, len}, avail_event
  return { desc: 0, avail, used, size: used + 2 * 3 + USED_ELEM_SIZE * num };
}

/** One buffer of a request: guest-physical address, length, and whether the device writes it. */
export interface VirtqBuffer {
  gpa: bigint;
  len: number;
  /** Device-writable (VRING_DESC_F_WRITE): the device fills it (read data, a status byte). */
  write: boolean;
}

/** A completed chain from the used ring: its head descriptor and the bytes the device wrote. */
export interface VirtqUsed {
  id: number;
  len: number;
}

/**
 * The driver's side of a split virtqueue in guest RAM: descriptors from a free list, chains made
 * available, completions taken from the used ring in order. Interrupts and notifications belong to the
 * transport. Not thread-safe: one vCPU drives a queue.
 */
export class SplitVirtqueue {
  readonly layout: ReturnType<typeof vring_layout>;
  private readonly v: DataView;
  /** Next free descriptor (chained through desc.next), and how many are free. */
  private freeHead = 0;
  private numFree: number;
  /** Descriptors of each chain in flight, by head. */
  private readonly chains = new Map<number, number>();
  private availIdx = 0;
  private lastUsedIdx = 0;

  /** A queue of `num` (a power of two) entries at `gpa`, `align` between the available and used rings. */
  constructor(readonly gpa: bigint, readonly num: number, align: number) {
    if (!(num > 0 && (num & (num - 1)) === 0 && num <= 32768)) throw new RangeError(`virtqueue size ${num} is not a power of two up to 32768`);
    this.layout = vring_layout(num, align);
    const mem = guest_ram(gpa, this.layout.size);
    mem.fill(0);
    this.v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    for (let i = 0; i < num; i++) this.v.setUint16(this.layout.desc + DESC_SIZE * i + 14, (i + 1) % num, true);
    this.numFree = num;
  }

  /** Free descriptors. */
  get free(): number {
    return this.numFree;
  }

  /** Put `bufs` in one descriptor chain and make it available; returns the head (the id the used ring reports). */
  add(bufs: readonly VirtqBuffer[]): number {
    if (bufs.length === 0 || bufs.length > this.numFree) throw new RangeError(`a chain of ${bufs.length} buffers does not fit (${this.numFree} free)`);
    const head = this.freeHead;
    let d = head;
    for (let i = 0; i < bufs.length; i++) {
      const at = this.layout.desc + DESC_SIZE * d;
      const last = i === bufs.length - 1;
      this.v.setBigUint64(at, bufs[i].gpa, true);
      this.v.setUint32(at + 8, bufs[i].len, true);
      this.v.setUint16(at + 12, (bufs[i].write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT), true);
      const next = this.v.getUint16(at + 14, true);
      if (last) this.freeHead = next;
      else d = next;
    }
    this.numFree -= bufs.length;
    this.chains.set(head, bufs.length);
    // The entry first, then the index that publishes it (§2.7.13.2): the device reads idx, then the entry.
    const a = this.layout.avail;
    this.v.setUint16(a + 4 + 2 * (this.availIdx % this.num), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.v.setUint16(a + 2, this.availIdx, true);
    return head;
  }

  /** The used ring's idx as the device last wrote it. */
  usedIdx(): number {
    return this.v.getUint16(this.layout.used + 2, true);
  }

  /** True when the device has completed a chain we have not taken yet. */
  hasUsed(): boolean {
    return this.usedIdx() !== this.lastUsedIdx;
  }

  /** Take the next completed chain (and free its descriptors), or undefined if none. */
  used(): VirtqUsed | undefined {
    if (!this.hasUsed()) return undefined;
    const at = this.layout.used + 4 + USED_ELEM_SIZE * (this.lastUsedIdx % this.num);
    const id = this.v.getUint32(at, true);
    const len = this.v.getUint32(at + 4, true);
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    const count = this.chains.get(id);
    if (count === undefined) throw new Error(`the device completed descriptor ${id}, which heads no chain in flight`);
    this.chains.delete(id);
    // Walk the chain to its tail and hand the whole chain back to the free list.
    let tail = id;
    for (let i = 1; i < count; i++) tail = this.v.getUint16(this.layout.desc + DESC_SIZE * tail + 14, true);
    this.v.setUint16(this.layout.desc + DESC_SIZE * tail + 14, this.freeHead, true);
    this.freeHead = id;
    this.numFree += count;
    return { id, len };
  }

  /** Ask the device not to interrupt for this queue (or to again). */
  setNoInterrupt(on: boolean): void {
    this.v.setUint16(this.layout.avail, on ? VRING_AVAIL_F_NO_INTERRUPT : 0, true);
  }
}

// ---- the legacy virtio-pci transport (virtio 1.x §4.1.4.8), an I/O-port BAR ----------------------

export const VIRTIO_PCI_HOST_FEATURES = 0x00;
export const VIRTIO_PCI_GUEST_FEATURES = 0x04;
export const VIRTIO_PCI_QUEUE_PFN = 0x08;
export const VIRTIO_PCI_QUEUE_NUM = 0x0c;
export const VIRTIO_PCI_QUEUE_SEL = 0x0e;
export const VIRTIO_PCI_QUEUE_NOTIFY = 0x10;
export const VIRTIO_PCI_STATUS = 0x12;
export const VIRTIO_PCI_ISR = 0x13;
/** Device-specific config, when MSI-X is off (it is: the remote has INTx only). */
export const VIRTIO_PCI_CONFIG = 0x14;
/** The queue address register takes a page frame number. */
export const VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12;
/** Legacy rings put the used ring at the next 4 KiB boundary. */
export const VIRTIO_PCI_VRING_ALIGN = 4096;
/** ISR bit 0: a virtqueue interrupt; bit 1: a configuration change. */
export const VIRTIO_PCI_ISR_QUEUE = 1;

/** A legacy virtio-pci device at I/O port `port` (its BAR0), driven from guest code. */
export class VirtioLegacyPci {
  constructor(readonly port: number) {}

  reset(): void {
    outb(this.port + VIRTIO_PCI_STATUS, 0);
  }

  status(): number {
    return inb(this.port + VIRTIO_PCI_STATUS);
  }

  /** Add status bits (ACKNOWLEDGE, DRIVER, DRIVER_OK...) to what the device has. */
  addStatus(bits: number): void {
    outb(this.port + VIRTIO_PCI_STATUS, this.status() | bits);
  }

  hostFeatures(): number {
    return inl(this.port + VIRTIO_PCI_HOST_FEATURES) >>> 0;
  }

  setGuestFeatures(features: number): void {
    outl(this.port + VIRTIO_PCI_GUEST_FEATURES, features >>> 0);
  }

  /** Select queue `index`, read its size, and place a fresh split virtqueue at `gpa` (4 KiB aligned). */
  setupQueue(index: number, gpa: bigint): SplitVirtqueue {
    if (gpa & BigInt(VIRTIO_PCI_VRING_ALIGN - 1)) throw new RangeError('a legacy virtqueue must start on a 4 KiB boundary');
    outw(this.port + VIRTIO_PCI_QUEUE_SEL, index);
    const num = inw(this.port + VIRTIO_PCI_QUEUE_NUM);
    if (num === 0) throw new Error(`virtqueue ${index} does not exist`);
    const vq = new SplitVirtqueue(gpa, num, VIRTIO_PCI_VRING_ALIGN);
    outl(this.port + VIRTIO_PCI_QUEUE_PFN, Number(gpa >> BigInt(VIRTIO_PCI_QUEUE_ADDR_SHIFT)));
    return vq;
  }

  notify(index: number): void {
    outw(this.port + VIRTIO_PCI_QUEUE_NOTIFY, index);
  }

  /** Read (and so clear) the ISR: the device lowers its interrupt line. */
  isr(): number {
    return inb(this.port + VIRTIO_PCI_ISR);
  }

  config8(off: number): number {
    return inb(this.port + VIRTIO_PCI_CONFIG + off);
  }

  config32(off: number): number {
    return inl(this.port + VIRTIO_PCI_CONFIG + off) >>> 0;
  }

  config64(off: number): bigint {
    return BigInt(this.config32(off)) | (BigInt(this.config32(off + 4)) << 32n);
  }
}

// ---- virtio-blk (§5.2) -------------------------------------------------------------------------------

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTIO_BLK_F_FLUSH = 1 << 9;
/** struct virtio_blk_req's header: type u32, reserved u32, sector u64. */
export const VIRTIO_BLK_REQ_HDR_SIZE = 16;
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** Config offset of capacity (u64, in 512-byte sectors). */
export const VIRTIO_BLK_CONFIG_CAPACITY = 0;

/** Fill a request header in guest RAM at `gpa`. */
export function virtio_blk_header(gpa: bigint, type: number, sector: bigint): void {
  const h = guest_ram(gpa, VIRTIO_BLK_REQ_HDR_SIZE);
  const v = new DataView(h.buffer, h.byteOffset, VIRTIO_BLK_REQ_HDR_SIZE);
  v.setUint32(0, type, true);
  v.setUint32(4, 0, true);
  v.setBigUint64(8, sector, true);
}
