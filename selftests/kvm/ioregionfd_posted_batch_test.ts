// ioregionfd_posted_batch_test: the bound on when posted writes reach their device. A vCPU sends
// consecutive posted writes to one region several per system call (docs/ioregionfd.md §5.2), and
// every one of them is in the device's fd, in program order, before the vCPU's next operation of any
// other kind: a load, a store to RAM, port I/O, an access to another region, hlt, or an exit to the
// VMM, the end of the guest code included. A write that cannot be sent becomes its own exit, in order. And a doorbell followed by the
// guest polling RAM makes progress: the device sees the doorbell while the guest polls.

import { KVM_CAP_IOREGIONFD, KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { closeQuietly, socketpair } from '../../proto/os';
import { ASSERT, ASSERT_EQ, EXPECT, EXPECT_EQ, FIXTURE, TEST, TEST_F, test_harness_run, TH_LOG } from '../kselftest_harness';
import { CONTROL_DMA, REGFILE_ID } from '../../device-task/devices/regfile';
import { spawn_device_task } from './lib/device_task';
import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_FAIL, GUEST_SYNC, hlt, readl, readq, writel, writeq } from './lib/guest';
import { vm_set_ioregion } from './lib/ioregionfd';
import {
  exit_reason, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, le_value, run_mmio, vcpu_args_set, vcpu_run, vm_alloc,
  vm_create_with_one_vcpu,
} from './lib/kvm_util';
import { drainCommands, writeAnswer } from './lib/raw_device';
import { get_ucall, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_REQUIRE } from './lib/test_util';

const POSTED = 0xd0000000n;
const SYNC_REGION = 0xd0001000n;
/** More than one batch (16) of writes in a row. */
const MANY = 40;

export function guest_then_sync(n: bigint): void {
  for (let i = 0n; i < n; i++) writel(POSTED + 4n * (i % 4n), i);
  GUEST_SYNC(1);
  GUEST_DONE();
}

/** Posted writes, then the guest code returns (KVM_EXIT_SHUTDOWN) with them still held. */
export function guest_then_return(n: bigint): void {
  for (let i = 0n; i < n; i++) writel(POSTED, i);
}

export function guest_then_hlt(): void {
  for (let i = 0n; i < 5n; i++) writel(POSTED, i);
  hlt();
  GUEST_DONE();
}

export function guest_then_read(): void {
  writel(POSTED, 1n);
  writel(POSTED, 2n);
  readl(SYNC_REGION);
  writel(POSTED, 3n);
  GUEST_DONE();
}

/** Posted writes program regfile's DMA engine; the guest then polls RAM until the copy is there. */
export function guest_doorbell_poll(regs: bigint, src: bigint, dst: bigint): void {
  // A read first, so the device task is up and serving before the polling starts to count.
  GUEST_ASSERT_EQ(readl(regs), REGFILE_ID);
  writeq(src, 0x600dcafe_f00dn);
  writeq(regs + 0x20n, src);
  writeq(regs + 0x28n, dst);
  writel(regs + 0x30n, 8n);
  writel(regs + 0x1cn, CONTROL_DMA);
  for (let i = 0; i < 10_000_000; i++) {
    if (readq(dst) === 0x600dcafe_f00dn) {
      GUEST_SYNC(i);
      return GUEST_DONE();
    }
  }
  GUEST_FAIL('the DMA the posted writes started never arrived');
}

interface RawRig {
  vm: KvmVm;
  vcpu: KvmVcpu;
  kvmEnd: number;
  dev: number;
}

function rawRig(code: (...a: bigint[]) => void): RawRig {
  const [vm, vcpu] = vm_create_with_one_vcpu(code);
  const [kvmEnd, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: POSTED, memory_size: 0x10n, read_fd: kvmEnd, write_fd: kvmEnd, flags: KVM_IOREGION_POSTED_WRITES });
  return { vm, vcpu, kvmEnd, dev };
}

const raw = FIXTURE('raw_device', () => rawRig(guest_then_sync), (r) => {
  kvm_vm_free(r.vm);
  [r.kvmEnd, r.dev].forEach(closeQuietly);
});

for (const n of [3, MANY]) {
  TEST_F(raw, `${n} posted writes are all in the device's fd, in order, when the next ucall exits to the VMM`, (r) => {
    vcpu_args_set(r.vcpu, BigInt(n));
    vcpu_run(r.vcpu);
    ASSERT(get_ucall(r.vcpu).cmd === UCALL_SYNC, 'the guest stopped at its GUEST_SYNC');
    const cmds = drainCommands(r.dev);
    TH_LOG(`${cmds.length} commands waiting at the exit`);
    ASSERT_EQ(cmds.length, n, 'every write before the exit');
    EXPECT(cmds.every((c, i) => c.cmd.data === BigInt(i) && c.cmd.offset === 4n * BigInt(i % 4) && !c.cmd.resp), 'program order, offsets and data');
  });
}

TEST('posted writes are all sent before hlt exits (KVM_EXIT_HLT, no irqchip)', () => {
  const r = rawRig(guest_then_hlt);
  try {
    vcpu_run(r.vcpu);
    ASSERT_EQ(exit_reason(r.vcpu), KVM_EXIT_HLT);
    EXPECT_EQ(drainCommands(r.dev).length, 5, 'writes waiting at the hlt exit');
  } finally {
    kvm_vm_free(r.vm);
    [r.kvmEnd, r.dev].forEach(closeQuietly);
  }
});

TEST('posted writes are all sent when the guest code returns, before KVM_EXIT_SHUTDOWN', () => {
  const r = rawRig(guest_then_return);
  try {
    vcpu_args_set(r.vcpu, 5n);
    vcpu_run(r.vcpu);
    ASSERT_EQ(exit_reason(r.vcpu), KVM_EXIT_SHUTDOWN);
    EXPECT_EQ(drainCommands(r.dev).map((c) => c.cmd.data).join(), '0,1,2,3,4', 'writes waiting at the shutdown exit');
  } finally {
    kvm_vm_free(r.vm);
    [r.kvmEnd, r.dev].forEach(closeQuietly);
  }
});

TEST('posted writes held when the guest code returns and the device is gone each exit before KVM_EXIT_SHUTDOWN', () => {
  const r = rawRig(guest_then_return);
  try {
    closeQuietly(r.dev);
    vcpu_args_set(r.vcpu, 3n);
    const seen: bigint[] = [];
    for (vcpu_run(r.vcpu); exit_reason(r.vcpu) === KVM_EXIT_MMIO; vcpu_run(r.vcpu)) seen.push(le_value(run_mmio(r.vcpu).data, 4));
    EXPECT_EQ(seen.join(), '0,1,2', 'the writes came back as exits');
    EXPECT_EQ(exit_reason(r.vcpu), KVM_EXIT_SHUTDOWN);
  } finally {
    kvm_vm_free(r.vm);
    closeQuietly(r.kvmEnd);
  }
});

TEST('posted writes reach the fd before a later read of another region sharing it', () => {
  const r = rawRig(guest_then_read);
  try {
    vm_set_ioregion(r.vm, { guest_paddr: SYNC_REGION, memory_size: 8n, read_fd: r.kvmEnd, write_fd: r.kvmEnd });
    // The read's reply: the device answers only once it has seen the read.
    let cmds: ReturnType<typeof drainCommands> = [];
    r.vcpu.runStart();
    for (let i = 0; i < 1000 && !cmds.some((c) => c.cmd.resp); i++) {
      cmds = cmds.concat(drainCommands(r.dev));
      if (!cmds.some((c) => c.cmd.resp)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
    ASSERT(cmds.some((c) => c.cmd.resp), 'the read arrived');
    const order = cmds.map((c) => (c.cmd.resp ? 'R' : `W${c.cmd.data}`)).join(' ');
    TH_LOG(`order: ${order}`);
    EXPECT(order === 'W1 W2 R', `order seen by the device (${order})`);
    writeAnswer(r.dev, 7n);
    ASSERT(r.vcpu.runWait().ret === 0 && get_ucall(r.vcpu).cmd === UCALL_DONE, 'the guest finished');
    EXPECT(drainCommands(r.dev).map((c) => c.cmd.data).join() === '3', 'the last write before GUEST_DONE');
  } finally {
    kvm_vm_free(r.vm);
    [r.kvmEnd, r.dev].forEach(closeQuietly);
  }
});

TEST('posted writes the device can no longer take each exit to the VMM, in program order, with their data', () => {
  const r = rawRig(guest_then_sync);
  try {
    closeQuietly(r.dev);
    vcpu_args_set(r.vcpu, 3n);
    const seen: bigint[] = [];
    for (;;) {
      vcpu_run(r.vcpu);
      if (exit_reason(r.vcpu) !== KVM_EXIT_MMIO) break;
      const m = run_mmio(r.vcpu);
      ASSERT(m.isWrite && m.len === 4 && m.physAddr === POSTED + 4n * BigInt(seen.length), `exit ${seen.length}: a 4-byte write at its address`);
      seen.push(le_value(m.data, 4));
    }
    EXPECT(seen.join() === '0,1,2', `the writes came back as exits: ${seen.join()}`);
    EXPECT(get_ucall(r.vcpu).cmd === UCALL_SYNC, 'then the guest went on to its GUEST_SYNC');
  } finally {
    kvm_vm_free(r.vm);
    closeQuietly(r.kvmEnd);
  }
});

TEST('a doorbell made of posted writes, then the guest polling RAM: the device acts while the guest polls', async () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_doorbell_poll);
  const regs = 0xd0002000n;
  const dev = spawn_device_task({ device: 'regfile', vm, memory: vm, regions: [{ guest_paddr: regs, memory_size: 0x40n, flags: KVM_IOREGION_POSTED_WRITES }] });
  dev.closeChannelFds();
  try {
    vcpu_args_set(vcpu, regs, vm_alloc(vm, 8), vm_alloc(vm, 8));
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    ASSERT(uc.cmd === UCALL_SYNC, `the guest saw the DMA (ucall ${uc.cmd}: ${uc.buffer})`);
    TH_LOG(`the copy was there after ${uc.args[1]} polls`);
  } finally {
    kvm_vm_free(vm);
    await dev.stop();
  }
});

if (require.main === module) {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
