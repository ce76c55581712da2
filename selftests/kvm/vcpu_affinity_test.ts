// vcpu_affinity_test: KVM_EMU_SET_VCPU_AFFINITY, the model's way for a VMM to place a vCPU thread
// (a real VMM pins its own vCPU threads; here they live in the kernel-model). The pinned thread runs
// only on the CPUs of the mask, a bad mask is EINVAL, and when the vCPU ends its thread goes back to
// the kernel-model's pool with the CPUs it had before, so the next vCPU on it is not pinned.

import * as fs from 'fs';
import { EINVAL } from '../../proto/errno';
import { KvmError } from '../../proto/errors';
import { KVM_EMU_SET_VCPU_AFFINITY } from '../../proto/kvm-uapi';
import { getAffinity } from '../../proto/os';
import { EXPECT, EXPECT_EQ, EXPECT_ERRNO, SKIP, TEST, test_harness_run } from '../kselftest_harness';
import { GUEST_DONE } from './lib/guest';
import { __vcpu_ioctl, kvm_vm_free, vm_create_with_one_vcpu } from './lib/kvm_util';

export function guest_done(): void {
  GUEST_DONE();
}

/** Cpus_allowed_list of every thread of a process, by tid. */
function threadCpus(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      if (m) out.set(Number(tid), m[1]);
    } catch {
      // The thread ended while we looked.
    }
  }
  return out;
}

TEST('a pinned vCPU thread runs only on its CPU, and goes back to the pool unpinned', () => {
  const mine = getAffinity(0);
  if (mine.length < 2) SKIP(`this process may use ${mine.length} CPU: a pinned thread cannot be told apart`);
  const cpu = mine[mine.length - 1];
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_done);
  const pid = vm.kvm.pid;
  const pinnedBefore = [...threadCpus(pid).values()].filter((l) => l === String(cpu)).length;
  vcpu.setAffinity([cpu]);
  const pinned = [...threadCpus(pid).entries()].filter(([, l]) => l === String(cpu));
  EXPECT_EQ(pinned.length, pinnedBefore + 1, `kernel-model threads on CPU ${cpu} alone after the ioctl`);
  vcpu.close();
  kvm_vm_free(vm);
  // The thread shuts the vCPU down asynchronously after its fd closes: give it a moment.
  let left = -1;
  for (let i = 0; i < 200 && left !== pinnedBefore; i++) {
    left = [...threadCpus(pid).values()].filter((l) => l === String(cpu)).length;
    if (left !== pinnedBefore) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
  EXPECT_EQ(left, pinnedBefore, 'threads pinned to that CPU after the vCPU ended');
});

TEST('bad masks are EINVAL and leave the thread as it was', () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_done);
  try {
    EXPECT_ERRNO(__vcpu_ioctl(vcpu, KVM_EMU_SET_VCPU_AFFINITY, new Uint8Array(8)), EINVAL, 'an empty mask');
    EXPECT_ERRNO(__vcpu_ioctl(vcpu, KVM_EMU_SET_VCPU_AFFINITY, new Uint8Array(129).fill(1)), EINVAL, 'a mask over 128 bytes');
    const offline = new Uint8Array(128);
    offline[127] = 0x80; // CPU 1023 alone: no machine here has it
    EXPECT_ERRNO(__vcpu_ioctl(vcpu, KVM_EMU_SET_VCPU_AFFINITY, offline), EINVAL, 'a mask of no online CPU');
    let err: unknown;
    try {
      vcpu.setAffinity([-1]);
    } catch (e) {
      err = e;
    }
    EXPECT(err instanceof KvmError && err.errno === EINVAL, `Vcpu.setAffinity([-1]) throws KvmError EINVAL (${String(err)})`);
  } finally {
    kvm_vm_free(vm);
  }
});

if (require.main === module) void test_harness_run();
