// kvm_create_max_vcpus_test: a VM takes KVM_CAP_MAX_VCPUS vCPUs and not one more, vCPU ids go up to
// KVM_CAP_MAX_VCPU_ID - 1, and an id can be used once (after kvm_create_max_vcpus.c). The errnos are
// those of kvm_vm_ioctl_create_vcpu, measured on a real x86 /dev/kvm: a full VM is EINVAL even for an
// id that exists (the count is checked first), a taken id EEXIST, an id >= KVM_MAX_VCPU_IDS EINVAL.

import * as fs from 'fs';
import { EEXIST, EINVAL, errnoName } from '../../proto/errno';
import { KVM_CAP_MAX_VCPU_ID, KVM_CAP_MAX_VCPUS, KVM_GET_REGS } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_set_plan, ksft_test_result } from '../kselftest';
import { __vcpu_ioctl, __vm_vcpu_add, kvm_check_cap, KvmVcpu, KvmVm, kvm_vm_free, vm_create_barebones } from './lib/kvm_util';
import { IoctlResult } from '../../proto/control';
import { __TEST_REQUIRE, pr_info, TEST_ASSERT } from './lib/test_util';

/** fds this process holds per vCPU: the vCPU socket, the kvm_run memfd, the kick eventfd. */
const FDS_PER_VCPU = 3;

/** The soft RLIMIT_NOFILE, from /proc/self/limits (Node has no getrlimit). */
function open_files_limit(): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
}

function created(v: KvmVcpu | IoctlResult): v is KvmVcpu {
  return 'vm' in v;
}

function outcome(v: KvmVcpu | IoctlResult): string {
  return created(v) ? 'success' : `${errnoName(v.errno)} (${v.detail})`;
}

/** __vm_vcpu_add for ids first..first+n-1; returns how many succeeded before the first failure. */
function test_vcpu_creation(vm: KvmVm, first: number, n: number): { count: number; failure: string } {
  pr_info(`Testing creating ${n} vCPUs, with IDs ${first}...${first + n - 1}.`);
  for (let i = first; i < first + n; i++) {
    const v = __vm_vcpu_add(vm, i);
    if (!created(v)) return { count: i - first, failure: `id ${i}: ${outcome(v)}` };
  }
  return { count: n, failure: '' };
}

function main(): void {
  ksft_print_header();
  const maxVcpuId = kvm_check_cap(KVM_CAP_MAX_VCPU_ID);
  const maxVcpus = kvm_check_cap(KVM_CAP_MAX_VCPUS);
  pr_info(`KVM_CAP_MAX_VCPU_ID: ${maxVcpuId}`);
  pr_info(`KVM_CAP_MAX_VCPUS: ${maxVcpus}`);
  const wanted = maxVcpus * FDS_PER_VCPU + 100;
  __TEST_REQUIRE(open_files_limit() >= wanted, `RLIMIT_NOFILE is too low (${open_files_limit()}, wanted ${wanted})`);
  ksft_set_plan(10);

  ksft_test_result(maxVcpus > 0 && maxVcpuId >= maxVcpus, `KVM_CAP_MAX_VCPU_ID (${maxVcpuId}) >= KVM_CAP_MAX_VCPUS (${maxVcpus}) > 0`);

  // A VM filled to KVM_CAP_MAX_VCPUS.
  let vm = vm_create_barebones();
  const t0 = process.hrtime.bigint();
  const full = test_vcpu_creation(vm, 0, maxVcpus);
  pr_info(`created ${full.count} vCPUs in ${Number((process.hrtime.bigint() - t0) / 1000000n)} ms`);
  ksft_test_result(full.count === maxVcpus, `KVM_CREATE_VCPU succeeds for ids 0..${maxVcpus - 1} in one VM ${full.failure}`);
  TEST_ASSERT(full.count === maxVcpus, `only ${full.count} of ${maxVcpus} vCPUs were created: ${full.failure}`);
  let r = __vm_vcpu_add(vm, maxVcpus);
  ksft_test_result(!created(r) && r.errno === EINVAL, `vCPU number ${maxVcpus + 1} (id ${maxVcpus}) fails with EINVAL: ${outcome(r)}`);
  r = __vm_vcpu_add(vm, 0);
  ksft_test_result(!created(r) && r.errno === EINVAL, `an existing id in a full VM fails with EINVAL, not EEXIST: ${outcome(r)}`);
  const last = vm.vcpus[vm.vcpus.length - 1];
  const regs = __vcpu_ioctl(last, KVM_GET_REGS);
  ksft_test_result(regs.ret === 0 && regs.data.length === 144, `the last vCPU (id ${last.id}) answers KVM_GET_REGS`);
  kvm_vm_free(vm);

  // Ids in a fresh VM.
  vm = vm_create_barebones();
  TEST_ASSERT(created(__vm_vcpu_add(vm, 0)), 'vCPU 0 of a fresh VM');
  r = __vm_vcpu_add(vm, 0);
  ksft_test_result(!created(r) && r.errno === EEXIST, `a second vCPU with id 0 fails with EEXIST: ${outcome(r)}`);
  r = __vm_vcpu_add(vm, maxVcpuId);
  ksft_test_result(!created(r) && r.errno === EINVAL, `id KVM_CAP_MAX_VCPU_ID (${maxVcpuId}) fails with EINVAL: ${outcome(r)}`);
  r = __vm_vcpu_add(vm, 1n << 32n);
  ksft_test_result(!created(r) && r.errno === EINVAL, `id 2^32 fails with EINVAL (the id is an unsigned long, never truncated): ${outcome(r)}`);
  r = __vm_vcpu_add(vm, maxVcpuId - 1);
  ksft_test_result(created(r), `id KVM_CAP_MAX_VCPU_ID - 1 (${maxVcpuId - 1}) succeeds: ${outcome(r)}`);
  kvm_vm_free(vm);

  // The highest ids, as the kernel test does when KVM_CAP_MAX_VCPU_ID > KVM_CAP_MAX_VCPUS.
  vm = vm_create_barebones();
  const high = test_vcpu_creation(vm, maxVcpuId - maxVcpus, maxVcpus);
  ksft_test_result(high.count === maxVcpus, `KVM_CREATE_VCPU succeeds for ids ${maxVcpuId - maxVcpus}..${maxVcpuId - 1} ${high.failure}`);
  kvm_vm_free(vm);
  ksft_finished();
}

if (require.main === module) main();
