// The MMIO / PIO bus: devices on sorted address ranges, matched and tried in order the way
// virt/kvm/kvm_main.c's kvm_io_bus does it (kvm_io_bus_cmp, bsearch, first device that handles wins).

import { ENOSPC, EOPNOTSUPP } from '../proto/errno';
import { NR_IOBUS_DEVS } from '../proto/kvm-uapi';

/** The buses a device can sit on: x86's MMIO and PIO buses, and KVM_FAST_MMIO_BUS (exact-address writes). */
export type BusName = 'mmio' | 'pio' | 'fast_mmio';

/** Result slot for reads, reused so the hot path allocates nothing. */
export interface ReadResult {
  value: bigint;
}

/** What a device reports about an access it failed (KVM_EXIT_IOREGIONFD_FAILURE carries it). */
export interface IoFailure {
  errno: number;
  addr: bigint;
  len: number;
  isWrite: boolean;
  isPio: boolean;
  /** The write's data (0 for reads). */
  data: bigint;
  userData: bigint;
}

/**
 * The outcome of one access offered to a device: 0 handled, EOPNOTSUPP not this device's (the bus
 * tries the next one), DEVICE_GONE, or a failure: the bus stops there (RFC v2+ behaviour) and the
 * CPU falls back to an exit, or reports the failure (a bare errno when a device has no detail).
 */
export type AccessResult = number | IoFailure;

/** A device on the bus; see AccessResult. Guest-facing: never throws. */
export interface IoDevice {
  write(addr: bigint, len: number, value: bigint): AccessResult;
  read(addr: bigint, len: number, out: ReadResult): AccessResult;
}

/**
 * Returned by a device whose registration went away while a vCPU was interrupted inside one of its
 * accesses: the rest of that access becomes an ordinary KVM_EXIT_MMIO / KVM_EXIT_IO (RFC v3).
 */
export const DEVICE_GONE = -1;

export interface IoRange<D> {
  addr: bigint;
  /** 0n = matches only accesses starting exactly at addr (len-0 ioeventfd, size-0 ioregion). u64. */
  len: bigint;
  dev: D;
  /** ioeventfds do not count toward NR_IOBUS_DEVS. */
  ioeventfd: boolean;
}

/** kvm_io_bus_cmp(r1, r2): r1 is an access (or a new range), r2 a registered range. */
export function ioBusCmp(addr1: bigint, len1: number | bigint, addr2: bigint, len2: bigint): number {
  if (addr1 < addr2) return -1;
  if (len2) {
    addr1 += BigInt(len1);
    addr2 += len2;
  }
  if (addr1 > addr2) return 1;
  return 0;
}

export class IoBus<D> {
  /** Changed only through register() and unregister() (they keep the lookup cache right). */
  readonly ranges: IoRange<D>[] = [];
  private ioeventfdCount = 0;
  /**
   * The last lookup and its answer, until the bus changes: a guest hits the same register again and
   * again, and the search costs about 1 µs on a full bus (BigInt compares) against a polled round
   * trip of 15-20. Same access, same ranges: same answer, so nothing the kernel does changes.
   */
  private lastAddr = 0n;
  private lastLen = -1;
  private lastIndex = -1;

  get devCount(): number {
    return this.ranges.length;
  }

  /** The bus-full check of kvm_io_bus_register_dev: ENOSPC, or 0 when there is room. */
  roomCheck(): number {
    return this.ranges.length - this.ioeventfdCount > NR_IOBUS_DEVS - 1 ? ENOSPC : 0;
  }

  /** Insert before the first range that compares greater, so equal ranges keep registration order. */
  register(addr: bigint, len: number | bigint, dev: D, ioeventfd = false): number {
    const room = this.roomCheck();
    if (room) return room;
    const size = BigInt(len);
    let i = 0;
    while (i < this.ranges.length && ioBusCmp(this.ranges[i].addr, this.ranges[i].len, addr, size) <= 0) i++;
    this.ranges.splice(i, 0, { addr, len: size, dev, ioeventfd });
    if (ioeventfd) this.ioeventfdCount++;
    this.lastLen = -1;
    return 0;
  }

  unregister(dev: D): boolean {
    const i = this.ranges.findIndex((r) => r.dev === dev);
    if (i < 0) return false;
    if (this.ranges[i].ioeventfd) this.ioeventfdCount--;
    this.ranges.splice(i, 1);
    this.lastLen = -1;
    return true;
  }

  /** kvm_io_bus_get_first_dev: the kernel's bsearch, then back to the first matching range; -1 if none. */
  firstIndex(addr: bigint, len: number): number {
    if (len === this.lastLen && addr === this.lastAddr) return this.lastIndex;
    const found = this.search(addr, len);
    this.lastAddr = addr;
    this.lastLen = len;
    this.lastIndex = found;
    return found;
  }

  private search(addr: bigint, len: number): number {
    const r = this.ranges;
    let base = 0;
    let num = r.length;
    let found = -1;
    while (num > 0) {
      const pivot = base + (num >> 1);
      const c = ioBusCmp(addr, len, r[pivot].addr, r[pivot].len);
      if (c === 0) {
        found = pivot;
        break;
      }
      if (c > 0) {
        base = pivot + 1;
        num--;
      }
      num >>= 1;
    }
    if (found < 0) return -1;
    while (found > 0 && ioBusCmp(addr, len, r[found - 1].addr, r[found - 1].len) === 0) found--;
    return found;
  }
}

/** Offer a write to every matching device in order: 0 handled, EOPNOTSUPP nobody took it, else that outcome. */
export function busWrite(bus: IoBus<IoDevice>, addr: bigint, len: number, value: bigint): AccessResult {
  const r = bus.ranges;
  for (let i = bus.firstIndex(addr, len); i >= 0 && i < r.length && ioBusCmp(addr, len, r[i].addr, r[i].len) === 0; i++) {
    const e = r[i].dev.write(addr, len, value);
    if (e !== EOPNOTSUPP) return e;
  }
  return EOPNOTSUPP;
}

/** As busWrite, for reads; the value lands in `out`. */
export function busRead(bus: IoBus<IoDevice>, addr: bigint, len: number, out: ReadResult): AccessResult {
  const r = bus.ranges;
  for (let i = bus.firstIndex(addr, len); i >= 0 && i < r.length && ioBusCmp(addr, len, r[i].addr, r[i].len) === 0; i++) {
    const e = r[i].dev.read(addr, len, out);
    if (e !== EOPNOTSUPP) return e;
  }
  return EOPNOTSUPP;
}
