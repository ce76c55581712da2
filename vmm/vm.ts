// Vm: a VM fd and what a VMM builds on it: guest memory (memfd-backed slots mapped here too), vCPUs,
// ioregions (KVM_SET_IOREGION), ioeventfds, the irqchip and irqfds (api.rst section 4: VM ioctls).
// Every method throws KvmError with the kernel's errno when its ioctl fails; ioctl() is the raw call.

import { IoctlResult, IoregionStatsListType } from '../proto/control';
import { ioctlRaw } from '../proto/control';
import {
  KVM_CHECK_EXTENSION, KVM_CREATE_IRQCHIP, KVM_CREATE_VCPU, KVM_EMU_GET_IOREGION_STATS, KVM_ENABLE_CAP, KVM_IOEVENTFD,
  KVM_IOREGION_DEASSIGN, KVM_IOREGION_PIO, KVM_IRQ_LINE, KVM_IRQFD, KVM_SET_USER_MEMORY_REGION, PAGE_SIZE,
} from '../proto/kvm-uapi';
import { closeQuietly, mapShared, Mapping, memfd, unmapWhenUnreachable } from '../proto/os';
import { check, Kvm } from './kvm';
import {
  Ioeventfd, Ioregion, Irqfd, kvmEnableCap, kvmIoeventfd, kvmIoregion, kvmIrqfd, kvmIrqLevel, kvmUserspaceMemoryRegion,
  UserMemoryRegion,
} from './structs';
import { Vcpu } from './vcpu';

/** A memory slot this VM created from a memfd of its own, mapped here too. */
export interface MemoryRegion {
  slot: number;
  flags: number;
  gpa: bigint;
  size: number;
  /** The memfd behind the slot (give it to device tasks for DMA). */
  fd: number;
  offset: number;
  mapping: Mapping;
  /** The VMM's view of the slot's memory. */
  bytes: Uint8Array;
}

/** Per-region counters the kernel-model keeps (KVM_EMU_GET_IOREGION_STATS). */
export interface IoregionStats {
  guestPaddr: bigint;
  memorySize: bigint;
  pio: boolean;
  userData: bigint;
  reads: bigint;
  writes: bigint;
  postedWrites: bigint;
  failures: bigint;
  lastErrno: number;
  interrupted: bigint;
}

export class Vm {
  /** Memory slots created with addMemory(), by slot id. */
  readonly regions = new Map<number, MemoryRegion>();
  readonly vcpus: Vcpu[] = [];
  /** close() ran: the fds are closed and memory is no longer reachable through this object. */
  freed = false;

  constructor(readonly kvm: Kvm, readonly fd: number) {}

  /** The raw ioctl on the VM fd (fds named by the struct, plus `extraFds`, travel with it). */
  ioctl(request: number, arg: bigint | number | Uint8Array = 0n, extraFds?: number[]): IoctlResult {
    return ioctlRaw(this.fd, request, arg, extraFds);
  }

  /** KVM_CHECK_EXTENSION on the VM fd. */
  checkExtension(cap: number): number {
    return check(this.ioctl(KVM_CHECK_EXTENSION, cap), 'KVM_CHECK_EXTENSION').ret;
  }

  /** KVM_ENABLE_CAP (the VM's, e.g. KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT). */
  enableCap(cap: number, args: bigint[] = []): void {
    check(this.ioctl(KVM_ENABLE_CAP, kvmEnableCap(cap, args)), 'KVM_ENABLE_CAP');
  }

  /** KVM_SET_USER_MEMORY_REGION with a memfd (-1: none, e.g. to delete a slot). */
  setUserMemoryRegion(r: UserMemoryRegion, memFd: number): void {
    check(this.ioctl(KVM_SET_USER_MEMORY_REGION, kvmUserspaceMemoryRegion(r), memFd >= 0 ? [memFd] : []), 'KVM_SET_USER_MEMORY_REGION');
  }

  /** A new memfd-backed slot of `bytes` (page multiple) at gpa, mapped here too. */
  addMemory(slot: number, gpa: bigint, bytes: number, flags = 0): MemoryRegion {
    if (bytes <= 0 || bytes % PAGE_SIZE) throw new RangeError(`addMemory: ${bytes} bytes is not a positive multiple of ${PAGE_SIZE}`);
    const fd = memfd(`guest-slot-${slot}`, bytes);
    try {
      this.setUserMemoryRegion({ slot, flags, guestPhysAddr: gpa, memorySize: BigInt(bytes), offset: 0n }, fd);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    const mapping = mapShared(fd, bytes);
    const region = { slot, flags, gpa, size: bytes, fd, offset: 0, mapping, bytes: new Uint8Array(mapping.buffer) };
    this.regions.set(slot, region);
    return region;
  }

  private region(slot: number): MemoryRegion {
    const r = this.regions.get(slot);
    if (!r) throw new RangeError(`no memory slot ${slot} was created with addMemory()`);
    return r;
  }

  /** Move a slot to another guest physical address. */
  moveMemory(slot: number, gpa: bigint): void {
    const r = this.region(slot);
    this.setUserMemoryRegion({ slot, flags: r.flags, guestPhysAddr: gpa, memorySize: BigInt(r.size), offset: BigInt(r.offset) }, r.fd);
    r.gpa = gpa;
  }

  /** Change a slot's flags (KVM_MEM_LOG_DIRTY_PAGES). */
  setMemoryFlags(slot: number, flags: number): void {
    const r = this.region(slot);
    this.setUserMemoryRegion({ slot, flags, guestPhysAddr: r.gpa, memorySize: BigInt(r.size), offset: BigInt(r.offset) }, r.fd);
    r.flags = flags;
  }

  /** Delete a slot and release its memory here. */
  removeMemory(slot: number): void {
    const r = this.region(slot);
    this.setUserMemoryRegion({ slot, flags: 0, guestPhysAddr: 0n, memorySize: 0n, offset: 0n }, -1);
    unmapWhenUnreachable(r.mapping);
    closeQuietly(r.fd);
    this.regions.delete(slot);
  }

  /** Our view of guest memory [gpa, gpa + len): it must lie inside one slot of addMemory(). */
  memory(gpa: bigint, len = 1): Uint8Array {
    if (this.freed) throw new Error(`guest memory at 0x${gpa.toString(16)}: the VM was closed`);
    for (const r of this.regions.values()) {
      if (gpa >= r.gpa && gpa + BigInt(len) <= r.gpa + BigInt(r.size)) {
        const off = Number(gpa - r.gpa);
        return r.bytes.subarray(off, off + len);
      }
    }
    throw new RangeError(`guest memory [0x${gpa.toString(16)}, +${len}) is not inside one memory slot`);
  }

  /** KVM_CREATE_VCPU, with its kvm_run page mapped. */
  createVcpu(id: number | bigint): Vcpu {
    const r = check(this.ioctl(KVM_CREATE_VCPU, BigInt(id)), 'KVM_CREATE_VCPU');
    const v = new Vcpu(this, Number(id), r.fds);
    this.vcpus.push(v);
    return v;
  }

  /** KVM_SET_IOREGION (under this kernel-model's number for it). */
  setIoregion(a: Ioregion): void {
    check(this.ioctl(this.kvm.setIoregionIoctl, kvmIoregion(a)), 'KVM_SET_IOREGION');
  }

  /** KVM_SET_IOREGION with KVM_IOREGION_DEASSIGN: by exact (guest_paddr, memory_size) on the bus. */
  deassignIoregion(guestPaddr: bigint, memorySize: bigint, pio = false): void {
    const flags = KVM_IOREGION_DEASSIGN | (pio ? KVM_IOREGION_PIO : 0);
    this.setIoregion({ guest_paddr: guestPaddr, memory_size: memorySize, read_fd: -1, write_fd: -1, flags });
  }

  /** KVM_EMU_GET_IOREGION_STATS: every region's counters, in registration order. */
  ioregionStats(): IoregionStats[] {
    const r = check(this.ioctl(KVM_EMU_GET_IOREGION_STATS), 'KVM_EMU_GET_IOREGION_STATS');
    const list = IoregionStatsListType.toObject(IoregionStatsListType.decode(r.data), { longs: String, defaults: true }) as {
      regions: Record<string, string | number | boolean>[];
    };
    const big = (v: string | number | boolean) => BigInt(v as string);
    return list.regions.map((s) => ({
      guestPaddr: big(s.guestPaddr), memorySize: big(s.memorySize), pio: Boolean(s.pio), userData: big(s.userData),
      reads: big(s.reads), writes: big(s.writes), postedWrites: big(s.postedWrites), failures: big(s.failures),
      lastErrno: Number(s.lastErrno), interrupted: big(s.interrupted),
    }));
  }

  /** KVM_IOEVENTFD (assign, or deassign with KVM_IOEVENTFD_FLAG_DEASSIGN in flags). */
  ioeventfd(a: Ioeventfd): void {
    check(this.ioctl(KVM_IOEVENTFD, kvmIoeventfd(a)), 'KVM_IOEVENTFD');
  }

  /** KVM_CREATE_IRQCHIP (before any vCPU). */
  createIrqchip(): void {
    check(this.ioctl(KVM_CREATE_IRQCHIP), 'KVM_CREATE_IRQCHIP');
  }

  /** KVM_IRQ_LINE: drive a GSI (level 1 asserted, 0 deasserted). */
  irqLine(gsi: number, level: number): void {
    check(this.ioctl(KVM_IRQ_LINE, kvmIrqLevel(gsi, level)), 'KVM_IRQ_LINE');
  }

  /** KVM_IRQFD: writes to `fd` raise `gsi` (assign, resample or deassign by flags). */
  irqfd(a: Irqfd): void {
    check(this.ioctl(KVM_IRQFD, kvmIrqfd(a)), 'KVM_IRQFD');
  }

  /**
   * Close the VM fd (the kernel-model destroys the VM) and everything this object holds. Views of
   * guest memory a caller still has stay readable (stale) until they are garbage, never a crash.
   */
  close(): void {
    // Idempotent: a second close must not close an fd number that has been reused since.
    if (this.freed) return;
    for (const v of this.vcpus) v.close();
    this.vcpus.length = 0;
    for (const r of this.regions.values()) {
      unmapWhenUnreachable(r.mapping);
      closeQuietly(r.fd);
    }
    this.regions.clear();
    closeQuietly(this.fd);
    this.freed = true;
  }
}
