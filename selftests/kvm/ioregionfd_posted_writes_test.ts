// ioregionfd_posted_writes_test: KVM_IOREGION_POSTED_WRITES (docs/ioregionfd.md §4.6; must-test
// items 15, 31): a posted write resumes the guest as soon as the command is written; posted writes
// and later accesses on the same fd reach the device in program order, which a real device task then
// shows through its state.

import { KVM_CAP_IOREGIONFD, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { closeQuietly, socketpair } from '../../proto/os';
import { EXPECT_EQ, FIXTURE, TEST_F, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { DeviceTask, spawn_device_task } from './lib/device_task';
import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC, readl, readq, writel, writeq } from './lib/guest';
import { vm_ioregion_stats, vm_set_ioregion } from './lib/ioregionfd';
import { kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, vcpu_run, vm_create_with_one_vcpu } from './lib/kvm_util';
import { runServing } from './lib/raw_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const POSTED = 0xd0000000n;
const NORMAL = 0xd0000100n;
const WRITES = 1000;

export function guest_order(): void {
  writel(POSTED, 1n);
  writel(POSTED + 4n, 2n);
  writel(POSTED, 3n);
  readl(NORMAL);
  writel(POSTED, 4n);
  GUEST_DONE();
}

export function guest_through_device(): void {
  // The testdev echo device holds one value: each posted write replaces it, so a read on the
  // non-posted region (same channel) sees the last posted write only if order was kept.
  for (let i = 1; i <= WRITES; i++) {
    writeq(POSTED, BigInt(i));
    if (i % 100 === 0) GUEST_ASSERT_EQ(readq(NORMAL), BigInt(i), `value after ${i} posted writes`);
  }
  // The device's value once the guest is done: the last posted write, read back by the host's check.
  GUEST_SYNC(readq(NORMAL));
  GUEST_DONE();
}

/** guest_order with the test as the device of a posted and a non-posted region on one socket. */
const raw = FIXTURE('raw_device', () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_order);
  const [a, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: POSTED, memory_size: 8n, read_fd: a, write_fd: a, flags: KVM_IOREGION_POSTED_WRITES });
  vm_set_ioregion(vm, { guest_paddr: NORMAL, memory_size: 8n, read_fd: a, write_fd: a });
  const { commands } = runServing(vcpu, [{ cmdFd: dev, respFd: dev }], (c) => (c.cmd.resp ? 0n : undefined));
  TEST_ASSERT(get_ucall(vcpu).cmd === UCALL_DONE, 'guest_order did not finish');
  return { vm, fds: [a, dev], commands };
}, ({ vm, fds }) => {
  kvm_vm_free(vm);
  fds.forEach(closeQuietly);
});

TEST_F(raw, 'posted writes and a read on the same fd arrive in program order', ({ commands }) => {
  const seen = commands.map((c) => `${c.cmd.cmd ? 'W' : 'R'}${c.cmd.resp ? '' : 'p'}${c.cmd.data}`).join(' ');
  EXPECT_EQ(seen, 'Wp1 Wp2 Wp3 R0 Wp4', 'the commands in arrival order (p: posted)');
});

TEST_F(raw, 'only the read waited for a response', ({ commands }) => {
  EXPECT_EQ(commands.filter((c) => !c.cmd.resp).length, 4, 'commands without resp');
});

interface Rig {
  vm: KvmVm;
  vcpu: KvmVcpu;
  dev: DeviceTask;
}

/** guest_through_device with a testdev task serving a posted and a non-posted region on one channel. */
const throughDevice = FIXTURE('testdev', (): Rig => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_through_device);
  const dev = spawn_device_task({
    device: 'testdev', vm,
    regions: [{ guest_paddr: POSTED, memory_size: 8n, flags: KVM_IOREGION_POSTED_WRITES }, { guest_paddr: NORMAL, memory_size: 8n }],
  });
  dev.closeChannelFds();
  return { vm, vcpu, dev };
}, async ({ vm, dev }) => {
  kvm_vm_free(vm);
  await dev.stop();
});

TEST_STEPS(throughDevice, [
  [`${WRITES} posted writes interleaved with reads on one channel: the device always saw them in order`, ({ vcpu }) => {
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    // Every in-guest check passed (a failed one is an ABORT, reported above) and the guest reached its
    // GUEST_SYNC, where the device still held the value of the last of the WRITES posted writes.
    return uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(WRITES);
  }],
  [`stats count ${WRITES} posted writes, 0 waited writes, ${WRITES / 100 + 1} reads`, ({ vm }) => {
    const stats = vm_ioregion_stats(vm);
    TH_LOG(`${stats[0].postedWrites} posted writes, ${stats[0].writes} waited writes, ${stats[1].reads} reads`);
    return stats[0].postedWrites === BigInt(WRITES) && stats[0].writes === 0n && stats[1].reads === BigInt(WRITES / 100 + 1);
  }],
  ['the device task exits 0 after the VM is gone', async ({ vm, vcpu, dev }) => {
    vcpu_run(vcpu);
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
