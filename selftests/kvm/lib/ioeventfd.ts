// KVM_IOEVENTFD from the VMM side: struct kvm_ioeventfd and the __vm_ioeventfd / vm_ioeventfd pair
// (api.rst 4.59), plus the eventfd checks the ioeventfd and irqfd selftests share.

import * as fs from 'fs';
import { IoctlResult } from '../../../proto/control';
import { errnoName } from '../../../proto/errno';
import { KVM_IOEVENTFD, KVM_IOEVENTFD_FLAG_DEASSIGN } from '../../../proto/kvm-uapi';
import type { Ioeventfd } from '../../../vmm';
import { kvmIoeventfd } from '../../../vmm/structs';
import { eventfdRead, PollSet, POLLIN } from '../../../proto/os';
import { __vm_ioctl, kvm_dev_pid, KvmVm, kvm_vm_free, open_kvm_dev_path, vm_create_barebones } from './kvm_util';
import { msleep, TEST_ASSERT } from './test_util';

export type IoeventfdArgs = Ioeventfd;

/** struct kvm_ioeventfd (64 bytes; the pad stays zero). */
export const kvm_ioeventfd = kvmIoeventfd;

/** KVM_IOEVENTFD, raw: {ret, errno}. */
export function __vm_ioeventfd(vm: KvmVm, a: IoeventfdArgs): IoctlResult {
  return __vm_ioctl(vm, KVM_IOEVENTFD, kvm_ioeventfd(a));
}

/** KVM_IOEVENTFD that must succeed. */
export function vm_ioeventfd(vm: KvmVm, a: IoeventfdArgs): void {
  const r = __vm_ioeventfd(vm, a);
  TEST_ASSERT(r.ret === 0, `KVM_IOEVENTFD addr 0x${a.addr.toString(16)} len ${a.len} flags 0x${(a.flags ?? 0).toString(16)} failed: errno ${r.errno} (${errnoName(r.errno)}): ${r.detail}`, r.errno);
}

/** KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN added to `flags`, raw. */
export function __vm_ioeventfd_deassign(vm: KvmVm, a: IoeventfdArgs): IoctlResult {
  return __vm_ioeventfd(vm, { ...a, flags: (a.flags ?? 0) | KVM_IOEVENTFD_FLAG_DEASSIGN });
}

const pollOne = new PollSet(1);

/** Whether an fd polls readable within timeoutMs (0: right now). */
export function fd_readable(fd: number, timeoutMs = 0): boolean {
  pollOne.set(0, fd, POLLIN);
  return pollOne.wait(1, timeoutMs) > 0 && (pollOne.revents(0) & POLLIN) !== 0;
}

/** Read and reset a non-blocking eventfd's counter: 0n when it is zero. */
export function eventfd_take(fd: number): bigint {
  return eventfdRead(fd) ?? 0n;
}

/** Wait until someone else (the kernel-model) has consumed an eventfd's counter; false on timeout. */
export function eventfd_wait_consumed(fd: number, timeoutMs = 2000): boolean {
  for (let waited = 0; fd_readable(fd); waited++) {
    if (waited >= timeoutMs) return false;
    msleep(1);
  }
  return true;
}

// ---- counting the kernel-model's eventfd references ----------------------------------------------

/** How many eventfds a process holds open. */
export function eventfds_of(pid: number): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[eventfd]') n++;
    } catch {
      // Closed meanwhile.
    }
  }
  return n;
}

/** A process's eventfd count once it reaches `target` or stops changing for 100 ms (3 s at most). */
export function eventfds_settled(pid: number, target: number): number {
  let n = eventfds_of(pid);
  for (let waited = 0, stable = 0; n !== target && stable < 100 && waited < 3000; waited += 10) {
    msleep(10);
    const m = eventfds_of(pid);
    stable = m === n ? stable + 10 : 0;
    n = m;
  }
  return n;
}

/**
 * A kernel-model of its own (so other VMs, destroyed asynchronously, do not blur the count), warmed
 * up (process start, lazily created event-loop eventfds), with its baseline eventfd count. Close it
 * with close_kvm_dev(kvm).
 */
export function open_counted_kernel_model(): { kvm: number; pid: number; before: number } {
  const kvm = open_kvm_dev_path();
  kvm_vm_free(vm_create_barebones(kvm));
  // Ask kvm_util which process serves this fd: a process listing could pick up anyone's kernel-model.
  const pid = kvm_dev_pid(kvm);
  TEST_ASSERT(pid !== undefined, 'cannot find the new kernel-model process');
  return { kvm, pid, before: eventfds_settled(pid, -1) };
}
