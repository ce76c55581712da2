// KVM_SET_IOREGION (a.k.a. KVM_SET_IOREGIONFD) from a selftest: struct kvm_ioregion and the
// __vm_set_ioregion / vm_set_ioregion pair over the VMM library, plus the statistics.

import { IoctlResult } from '../../../proto/control';
import { KVM_IOREGION_DEASSIGN } from '../../../proto/kvm-uapi';
import type { Ioregion, IoregionStats } from '../../../vmm';
import { kvmIoregion } from '../../../vmm/structs';
import { KvmVm } from './kvm_util';
import { TEST_ASSERT } from './test_util';

export type { IoregionStats };
export type IoregionArgs = Ioregion;

/** struct kvm_ioregion (64 bytes, RFC v3 field names). */
export const kvm_ioregion = kvmIoregion;

/** KVM_SET_IOREGION, raw (under the number the VM's kernel-model uses for it): {ret, errno}. */
export function __vm_set_ioregion(vm: KvmVm, a: IoregionArgs): IoctlResult {
  return vm.ioctl(vm.kvm.setIoregionIoctl, kvmIoregion(a));
}

export function vm_set_ioregion(vm: KvmVm, a: IoregionArgs): void {
  const r = __vm_set_ioregion(vm, a);
  TEST_ASSERT(r.ret === 0, `KVM_SET_IOREGION [0x${a.guest_paddr.toString(16)}, +0x${a.memory_size.toString(16)}) failed: ${r.detail}`, r.errno);
}

/** Deassign by exact (guest_paddr, memory_size, bus); fds are ignored (v3). */
export function __vm_deassign_ioregion(vm: KvmVm, guest_paddr: bigint, memory_size: bigint, flags = 0): IoctlResult {
  return __vm_set_ioregion(vm, { guest_paddr, memory_size, read_fd: -1, write_fd: -1, flags: flags | KVM_IOREGION_DEASSIGN });
}

/** KVM_EMU_GET_IOREGION_STATS: per-region counters (accesses, failures and the last failure's errno). */
export function vm_ioregion_stats(vm: KvmVm): IoregionStats[] {
  return vm.ioregionStats();
}
