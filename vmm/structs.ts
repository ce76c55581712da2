// The argument structs of the KVM ioctls this library issues, encoded byte for byte in the kernel's
// x86-64 layout (the offsets are in proto/kvm-uapi.ts). Every u64 is written as a bigint; fds are the
// caller's numbers, which the control plane attaches as SCM_RIGHTS.

import {
  ENABLE_CAP, IOEVENTFD, IOREGION, IRQ_LEVEL, IRQFD, MEMREGION,
} from '../proto/kvm-uapi';

const u64 = (v: bigint) => BigInt.asUintN(64, v);

/** struct kvm_userspace_memory_region; userspace_addr is the offset into the memfd sent beside it. */
export interface UserMemoryRegion {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  /** Offset of the slot's memory in its memfd (the model's userspace_addr). */
  offset: bigint;
}

export function kvmUserspaceMemoryRegion(r: UserMemoryRegion): Buffer {
  const b = Buffer.alloc(MEMREGION.SIZE);
  b.writeUInt32LE(r.slot >>> 0, MEMREGION.slot);
  b.writeUInt32LE(r.flags >>> 0, MEMREGION.flags);
  b.writeBigUInt64LE(u64(r.guestPhysAddr), MEMREGION.guest_phys_addr);
  b.writeBigUInt64LE(u64(r.memorySize), MEMREGION.memory_size);
  b.writeBigUInt64LE(u64(r.offset), MEMREGION.userspace_addr);
  return b;
}

/** struct kvm_ioregion (64 bytes, RFC v3 field names). */
export interface Ioregion {
  guest_paddr: bigint;
  memory_size: bigint;
  user_data?: bigint;
  /** KVM reads responses here; -1 for a size-0 (doorbell) region. */
  read_fd: number;
  /** KVM writes commands here. */
  write_fd: number;
  /** KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES, KVM_IOREGION_DEASSIGN. */
  flags?: number;
}

export function kvmIoregion(a: Ioregion): Buffer {
  const b = Buffer.alloc(IOREGION.SIZE);
  b.writeBigUInt64LE(u64(a.guest_paddr), IOREGION.guest_paddr);
  b.writeBigUInt64LE(u64(a.memory_size), IOREGION.memory_size);
  b.writeBigUInt64LE(u64(a.user_data ?? 0n), IOREGION.user_data);
  b.writeInt32LE(a.read_fd, IOREGION.read_fd);
  b.writeInt32LE(a.write_fd, IOREGION.write_fd);
  b.writeUInt32LE((a.flags ?? 0) >>> 0, IOREGION.flags);
  return b;
}

/** struct kvm_ioeventfd (64 bytes; the pad stays zero). */
export interface Ioeventfd {
  datamatch?: bigint;
  /** Guest physical address, or the port with KVM_IOEVENTFD_FLAG_PIO. */
  addr: bigint;
  /** 0 (any length), 1, 2, 4 or 8. */
  len: number;
  fd: number;
  /** KVM_IOEVENTFD_FLAG_DATAMATCH, _PIO, _DEASSIGN. */
  flags?: number;
}

export function kvmIoeventfd(a: Ioeventfd): Buffer {
  const b = Buffer.alloc(IOEVENTFD.SIZE);
  b.writeBigUInt64LE(u64(a.datamatch ?? 0n), IOEVENTFD.datamatch);
  b.writeBigUInt64LE(u64(a.addr), IOEVENTFD.addr);
  b.writeUInt32LE(a.len >>> 0, IOEVENTFD.len);
  b.writeInt32LE(a.fd, IOEVENTFD.fd);
  b.writeUInt32LE((a.flags ?? 0) >>> 0, IOEVENTFD.flags);
  return b;
}

/** struct kvm_irqfd (32 bytes). */
export interface Irqfd {
  gsi: number;
  fd: number;
  /** KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE. */
  flags?: number;
  resamplefd?: number;
}

export function kvmIrqfd(a: Irqfd): Buffer {
  const b = Buffer.alloc(IRQFD.SIZE);
  b.writeInt32LE(a.fd, IRQFD.fd);
  b.writeUInt32LE(a.gsi >>> 0, IRQFD.gsi);
  b.writeUInt32LE((a.flags ?? 0) >>> 0, IRQFD.flags);
  b.writeInt32LE(a.resamplefd ?? 0, IRQFD.resamplefd);
  return b;
}

/** struct kvm_irq_level. */
export function kvmIrqLevel(irq: number, level: number): Buffer {
  const b = Buffer.alloc(IRQ_LEVEL.SIZE);
  b.writeUInt32LE(irq >>> 0, IRQ_LEVEL.irq);
  b.writeUInt32LE(level >>> 0, IRQ_LEVEL.level);
  return b;
}

/** struct kvm_enable_cap. */
export function kvmEnableCap(cap: number, args: bigint[] = [], flags = 0): Buffer {
  const b = Buffer.alloc(ENABLE_CAP.SIZE);
  b.writeUInt32LE(cap >>> 0, ENABLE_CAP.cap);
  b.writeUInt32LE(flags >>> 0, ENABLE_CAP.flags);
  args.forEach((a, i) => b.writeBigUInt64LE(u64(a), ENABLE_CAP.args + 8 * i));
  return b;
}
