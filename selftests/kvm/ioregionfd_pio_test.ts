// ioregionfd_pio_test: the kvm-unit-tests "ioregionfd fast PIO" scenario end to end. A PIO region at
// port 0x1234, size 8, served by the testdev echo device in its own process: out of 0x11223344 at
// 0x1234, then in at 0x1238 with 1, 2 and 4 bytes reads back 0x44, 0x3344 and 0x11223344 — no exit to
// the VMM for any of it. Then string PIO: one command per element.

import { KVM_CAP_IOREGIONFD, KVM_IOREGION_PIO } from '../../proto/kvm-uapi';
import { FIXTURE, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC, inb, inl, inw, outb, outl, outs, outw } from './lib/guest';
import { DeviceTask, spawn_device_task } from './lib/device_task';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, vcpu_run, vm_alloc, vm_create_with_one_vcpu, vcpu_args_set, addr_gpa2hva } from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const PORT = 0x1234;

export function guest_code(buf: bigint): void {
  outb(PORT, 0x11223344 & 0xff);
  GUEST_ASSERT_EQ(inb(PORT + 4), 0x44, 'inb');
  outw(PORT, 0x3344);
  GUEST_ASSERT_EQ(inw(PORT + 4), 0x3344, 'inw');
  outl(PORT, 0x11223344);
  GUEST_ASSERT_EQ(inl(PORT + 4), 0x11223344, 'inl');
  GUEST_SYNC(1);
  // rep outsb of 5 bytes: five 1-byte commands, the last one wins in the echo device.
  outs(PORT, 1, buf, 5);
  GUEST_ASSERT_EQ(inb(PORT), 0x55, 'after rep outsb');
  GUEST_DONE();
}

interface Rig {
  vm: KvmVm;
  vcpu: KvmVcpu;
  dev: DeviceTask;
}

/** guest_code with a testdev task behind the 8 ports at PORT. */
const testdev = FIXTURE('testdev', (): Rig => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  const buf = vm_alloc(vm, 8);
  addr_gpa2hva(vm, buf, 5).set([0x11, 0x22, 0x33, 0x44, 0x55]);
  vcpu_args_set(vcpu, buf);
  const dev = spawn_device_task({ device: 'testdev', vm, regions: [{ guest_paddr: BigInt(PORT), memory_size: 8n, flags: KVM_IOREGION_PIO, user_data: 0x1234n }] });
  dev.closeChannelFds();
  return { vm, vcpu, dev };
}, async ({ vm, dev }) => {
  kvm_vm_free(vm);
  await dev.stop();
});

TEST_STEPS(testdev, [
  ['out 0x1234 / in 0x1238 echo 0x44, 0x3344, 0x11223344 without a PIO exit', ({ vcpu }) => {
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    return uc.cmd === UCALL_SYNC;
  }],
  ['the region counted 3 writes and 3 reads', ({ vm }) => {
    const s = vm_ioregion_stats(vm)[0];
    TH_LOG(`${s.writes}/${s.reads}`);
    return s.writes === 3n && s.reads === 3n && s.failures === 0n;
  }],
  ['rep outsb of 5 elements sent 5 commands', ({ vm, vcpu }) => {
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    TEST_ASSERT(uc.cmd === UCALL_DONE, `expected UCALL_DONE, got ${uc.cmd}`);
    const s = vm_ioregion_stats(vm)[0];
    TH_LOG(`writes ${s.writes}`);
    return s.writes === 8n;
  }],
  ['the device task exits 0 once the VM is gone', async ({ vm, dev }) => {
    kvm_vm_free(vm);
    const status = await dev.stop();
    TH_LOG(JSON.stringify(status));
    return status.code === 0;
  }],
]);

if (require.main === module) {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
