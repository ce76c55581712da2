// vm_lifetime_test: a destroyed VM leaves nothing in the kernel-model. After kvm_vm_free, the
// kernel-model's own counts (KVM_EMU_GET_OBJECT_COUNTS) drop back: no VM, no vCPU of it, and its vCPU
// threads are back in the pool, where the next VM's vCPUs reuse them instead of starting more (each
// thread is a JS isolate of several MB: a pool that grew with every VM was issue 10's defect 7).

import { Kvm, type ObjectCounts, type Vm } from '../../vmm';
import { cpu } from '../../proto/guest-cpu';
import { EXPECT_EQ, TEST, test_harness_run, TH_LOG } from '../kselftest_harness';
import { msleep, TEST_ASSERT } from './lib/test_util';

const VCPUS = 3;
const RAM_BYTES = 64 * 1024;
/** A hang guard for the asynchronous destruction, not a timing requirement. */
const DESTROY_BOUND_MS = 10_000;

/** Guest code: write and read back 8 bytes of its own in RAM, then return (KVM_EXIT_SHUTDOWN). */
export function lifetime_guest(): void {
  const c = cpu();
  const gpa = 8n * BigInt(c.vcpuId);
  c.write(gpa, 8, 0x1234n + gpa);
  if (c.read(gpa, 8) !== 0x1234n + gpa) throw new Error('RAM did not keep a write');
}

/** A VM with memory and VCPUS vCPUs that each ran the guest to its end. */
function vm_with_vcpus_run(kvm: Kvm): Vm {
  const vm = kvm.createVm();
  vm.addMemory(0, 0n, RAM_BYTES);
  for (let id = 0; id < VCPUS; id++) {
    const v = vm.createVcpu(id);
    v.setEntry(lifetime_guest);
    const exit = v.run();
    TEST_ASSERT(exit.reason === 'shutdown', `vCPU ${id} ended with ${exit.reason}: ${v.exitDetail}`);
  }
  return vm;
}

/** The counts once every freed VM is destroyed (the kernel-model destroys a VM after its fd closes). */
function counts_after_destruction(kvm: Kvm): ObjectCounts {
  let c = kvm.objectCounts();
  for (let waited = 0; c.vms > 0 && waited < DESTROY_BOUND_MS; waited += 10) {
    msleep(10);
    c = kvm.objectCounts();
  }
  TH_LOG(`kernel-model holds ${JSON.stringify(c)}`);
  return c;
}

TEST('a freed VM leaves no VM and no vCPU in the kernel-model', () => {
  const kvm = Kvm.open();
  try {
    const vm = vm_with_vcpus_run(kvm);
    // vCPUs that never ran have no thread, but are objects of the VM all the same.
    vm.createVcpu(VCPUS);
    EXPECT_EQ(kvm.objectCounts().vcpus, VCPUS + 1, 'vCPUs while the VM lives');
    vm.close();
    const c = counts_after_destruction(kvm);
    EXPECT_EQ(c.vms, 0, 'VMs after the VM was freed');
    EXPECT_EQ(c.vcpus, 0, 'vCPUs after the VM was freed');
    EXPECT_EQ(c.idleVcpuThreads, c.vcpuThreads, 'vCPU threads not back in the pool');
  } finally {
    kvm.close();
  }
});

TEST('VMs freed and created back to back reuse the vCPU threads of the VM before', () => {
  const kvm = Kvm.open();
  try {
    vm_with_vcpus_run(kvm).close();
    const first = counts_after_destruction(kvm);
    EXPECT_EQ(first.vcpuThreads, VCPUS, 'vCPU threads after one VM');
    // The next VM's vCPUs start while the freed VM's threads are still unwinding.
    for (let i = 0; i < 5; i++) vm_with_vcpus_run(kvm).close();
    const last = counts_after_destruction(kvm);
    EXPECT_EQ(last.vms, 0, 'VMs after the last was freed');
    EXPECT_EQ(last.vcpus, 0, 'vCPUs after the last VM was freed');
    EXPECT_EQ(last.vcpuThreads, VCPUS, 'vCPU threads after six VMs');
  } finally {
    kvm.close();
  }
});

if (require.main === module) void test_harness_run();
