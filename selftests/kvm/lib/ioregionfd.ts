// KVM_SET_IOREGION (a.k.a. KVM_SET_IOREGIONFD) from the VMM side: struct kvm_ioregion and the
// __vm_set_ioregion / vm_set_ioregion pair, plus the private ioregionfd capabilities and statistics.

import { declareFdFields, IoregionStatsListType, IoctlResult } from '../../../proto/control';
import { errnoName } from '../../../proto/errno';
import {
  IOREGION, KVM_EMU_GET_IOREGION_STATS, KVM_IOREGION_DEASSIGN, KVM_SET_IOREGION,
} from '../../../proto/kvm-uapi';
import { __vm_ioctl, KvmVm, vm_ioctl } from './kvm_util';
import { TEST_ASSERT } from './test_util';

export interface IoregionArgs {
  guest_paddr: bigint;
  memory_size: bigint;
  user_data?: bigint;
  read_fd: number;
  write_fd: number;
  flags?: number;
}

/** struct kvm_ioregion (64 bytes, RFC v3 field names). */
export function kvm_ioregion(a: IoregionArgs): Buffer {
  const b = Buffer.alloc(IOREGION.SIZE);
  b.writeBigUInt64LE(BigInt.asUintN(64, a.guest_paddr), IOREGION.guest_paddr);
  b.writeBigUInt64LE(BigInt.asUintN(64, a.memory_size), IOREGION.memory_size);
  b.writeBigUInt64LE(BigInt.asUintN(64, a.user_data ?? 0n), IOREGION.user_data);
  b.writeInt32LE(a.read_fd, IOREGION.read_fd);
  b.writeInt32LE(a.write_fd, IOREGION.write_fd);
  b.writeUInt32LE((a.flags ?? 0) >>> 0, IOREGION.flags);
  return b;
}

/** The ioctl number in use (a VM of a kernel-model started with --set-ioregion-ioctl may differ). */
let setIoregionIoctl = KVM_SET_IOREGION;
export function use_set_ioregion_ioctl(request: number): void {
  setIoregionIoctl = request >>> 0;
  // The client must know which struct fields carry fds to attach them under the new number too.
  declareFdFields(setIoregionIoctl, [IOREGION.read_fd, IOREGION.write_fd]);
}

/** KVM_SET_IOREGION, raw: {ret, errno}. */
export function __vm_set_ioregion(vm: KvmVm, a: IoregionArgs): IoctlResult {
  return __vm_ioctl(vm, setIoregionIoctl, kvm_ioregion(a));
}

export function vm_set_ioregion(vm: KvmVm, a: IoregionArgs): void {
  const r = __vm_set_ioregion(vm, a);
  TEST_ASSERT(r.ret === 0, `KVM_SET_IOREGION [0x${a.guest_paddr.toString(16)}, +0x${a.memory_size.toString(16)}) failed: errno ${r.errno} (${errnoName(r.errno)}): ${r.detail}`, r.errno);
}

/** Deassign by exact (guest_paddr, memory_size, bus); fds are ignored (v3). */
export function __vm_deassign_ioregion(vm: KvmVm, guest_paddr: bigint, memory_size: bigint, flags = 0): IoctlResult {
  return __vm_set_ioregion(vm, { guest_paddr, memory_size, read_fd: -1, write_fd: -1, flags: flags | KVM_IOREGION_DEASSIGN });
}

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

/** KVM_EMU_GET_IOREGION_STATS: per-region counters (accesses, failures and the last failure's errno). */
export function vm_ioregion_stats(vm: KvmVm): IoregionStats[] {
  const r = vm_ioctl(vm, KVM_EMU_GET_IOREGION_STATS, 0, 'KVM_EMU_GET_IOREGION_STATS');
  const list = IoregionStatsListType.toObject(IoregionStatsListType.decode(r.data), { longs: String, defaults: true }) as {
    regions: Record<string, string | number | boolean>[];
  };
  return list.regions.map((s) => ({
    guestPaddr: BigInt(s.guestPaddr as string), memorySize: BigInt(s.memorySize as string), pio: Boolean(s.pio),
    userData: BigInt(s.userData as string), reads: BigInt(s.reads as string), writes: BigInt(s.writes as string),
    postedWrites: BigInt(s.postedWrites as string), failures: BigInt(s.failures as string),
    lastErrno: Number(s.lastErrno), interrupted: BigInt(s.interrupted as string),
  }));
}
