// kvm_create_max_vcpus_test: a VM takes KVM_CAP_MAX_VCPUS vCPUs and not one more, vCPU ids go up to
// KVM_CAP_MAX_VCPU_ID - 1, and an id can be used once (after kvm_create_max_vcpus.c). The errnos are
// those of kvm_vm_ioctl_create_vcpu, measured on a real x86 /dev/kvm: a full VM is EINVAL even for an
// id that exists (the count is checked first), a taken id EEXIST, an id >= KVM_MAX_VCPU_IDS EINVAL.

import * as fs from 'fs';
import { EEXIST, EINVAL, errnoName } from '../../proto/errno';
import { KVM_CAP_MAX_VCPU_ID, KVM_CAP_MAX_VCPUS, KVM_GET_REGS, KVM_MAX_VCPU_IDS, KVM_MAX_VCPUS } from '../../proto/kvm-uapi';
import { ASSERT_EQ, EXPECT, EXPECT_EQ, FIXTURE, TEST, TEST_F, test_harness_run, TH_LOG } from '../kselftest_harness';
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

// The names use the x86 values; every test checks the kernel-model reports the same.
const maxVcpuId = KVM_MAX_VCPU_IDS;
const maxVcpus = KVM_MAX_VCPUS;

function checkCaps(): void {
  TEST_ASSERT(kvm_check_cap(KVM_CAP_MAX_VCPU_ID) === maxVcpuId && kvm_check_cap(KVM_CAP_MAX_VCPUS) === maxVcpus,
    `KVM_CAP_MAX_VCPU_ID ${kvm_check_cap(KVM_CAP_MAX_VCPU_ID)} and KVM_CAP_MAX_VCPUS ${kvm_check_cap(KVM_CAP_MAX_VCPUS)}, expected ${maxVcpuId} and ${maxVcpus}`);
}

TEST(`KVM_CAP_MAX_VCPU_ID (${maxVcpuId}) >= KVM_CAP_MAX_VCPUS (${maxVcpus}) > 0`, () => {
  pr_info(`KVM_CAP_MAX_VCPU_ID: ${kvm_check_cap(KVM_CAP_MAX_VCPU_ID)}`);
  pr_info(`KVM_CAP_MAX_VCPUS: ${kvm_check_cap(KVM_CAP_MAX_VCPUS)}`);
  checkCaps();
  EXPECT(maxVcpus > 0 && maxVcpuId >= maxVcpus, 'KVM_CAP_MAX_VCPU_ID >= KVM_CAP_MAX_VCPUS > 0');
});

/** A VM filled to KVM_CAP_MAX_VCPUS. */
const full = FIXTURE('full_vm', () => {
  checkCaps();
  const vm = vm_create_barebones();
  const t0 = process.hrtime.bigint();
  const made = test_vcpu_creation(vm, 0, maxVcpus);
  pr_info(`created ${made.count} vCPUs in ${Number((process.hrtime.bigint() - t0) / 1000000n)} ms ${made.failure}`);
  return { vm, made };
}, ({ vm }) => kvm_vm_free(vm));

TEST_F(full, `KVM_CREATE_VCPU succeeds for ids 0..${maxVcpus - 1} in one VM`, ({ made }) => void EXPECT_EQ(made.count, maxVcpus, 'vCPUs created'));
TEST_F(full, `vCPU number ${maxVcpus + 1} (id ${maxVcpus}) fails with EINVAL`, ({ vm, made }) => {
  ASSERT_EQ(made.count, maxVcpus, 'vCPUs created');
  const r = __vm_vcpu_add(vm, maxVcpus);
  TH_LOG(outcome(r));
  EXPECT(!created(r) && r.errno === EINVAL, 'EINVAL');
});
TEST_F(full, 'an existing id in a full VM fails with EINVAL, not EEXIST', ({ vm, made }) => {
  ASSERT_EQ(made.count, maxVcpus, 'vCPUs created');
  const r = __vm_vcpu_add(vm, 0);
  TH_LOG(outcome(r));
  EXPECT(!created(r) && r.errno === EINVAL, 'EINVAL');
});
TEST_F(full, `the last vCPU (id ${maxVcpus - 1}) answers KVM_GET_REGS`, ({ vm, made }) => {
  ASSERT_EQ(made.count, maxVcpus, 'vCPUs created');
  const last = vm.vcpus[vm.vcpus.length - 1];
  const regs = __vcpu_ioctl(last, KVM_GET_REGS);
  EXPECT(last.id === maxVcpus - 1 && regs.ret === 0 && regs.data.length === 144, 'a 144-byte struct kvm_regs');
});

/** A fresh VM with vCPU 0. */
const fresh = FIXTURE('fresh_vm', () => {
  checkCaps();
  const vm = vm_create_barebones();
  TEST_ASSERT(created(__vm_vcpu_add(vm, 0)), 'vCPU 0 of a fresh VM');
  return vm;
}, kvm_vm_free);

for (const [name, id, errno] of [
  ['a second vCPU with id 0 fails with EEXIST', 0, EEXIST],
  [`id KVM_CAP_MAX_VCPU_ID (${maxVcpuId}) fails with EINVAL`, maxVcpuId, EINVAL],
  ['id 2^32 fails with EINVAL (the id is an unsigned long, never truncated)', 1n << 32n, EINVAL],
  [`id KVM_CAP_MAX_VCPU_ID - 1 (${maxVcpuId - 1}) succeeds`, maxVcpuId - 1, 0],
] as const) {
  TEST_F(fresh, name, (vm) => {
    const r = __vm_vcpu_add(vm, id);
    TH_LOG(outcome(r));
    EXPECT(errno === 0 ? created(r) : !created(r) && r.errno === errno, errno === 0 ? 'success' : errnoName(errno));
  });
}

// The highest ids, as the kernel test does when KVM_CAP_MAX_VCPU_ID > KVM_CAP_MAX_VCPUS.
TEST(`KVM_CREATE_VCPU succeeds for ids ${maxVcpuId - maxVcpus}..${maxVcpuId - 1}`, () => {
  checkCaps();
  const vm = vm_create_barebones();
  const high = test_vcpu_creation(vm, maxVcpuId - maxVcpus, maxVcpus);
  kvm_vm_free(vm);
  if (high.failure) TH_LOG(high.failure);
  EXPECT_EQ(high.count, maxVcpus, 'vCPUs created');
});

if (require.main === module) {
  const wanted = maxVcpus * FDS_PER_VCPU + 100;
  __TEST_REQUIRE(open_files_limit() >= wanted, `RLIMIT_NOFILE is too low (${open_files_limit()}, wanted ${wanted})`);
  void test_harness_run();
}
