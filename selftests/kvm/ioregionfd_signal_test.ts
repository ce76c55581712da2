// ioregionfd_signal_test: a signal (kick) while a vCPU is blocked in an ioregionfd access returns
// KVM_RUN with EINTR / KVM_EXIT_INTR, and the next KVM_RUN resumes the access where it stopped
// (docs/ioregionfd.md §5.3, §5.5, §5.6; must-test items 38-42). The same holds while the vCPU is
// still spinning for the reply (--ioregionfd-poll-ns), and a memslot change does not wait for a spin.

import { EINTR, errnoName } from '../../proto/errno';
import { KVM_CAP_IOREGIONFD, KVM_EXIT_INTR, KVM_EXIT_MMIO, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { closeQuietly, PollSet, POLLIN, socketpair } from '../../proto/os';
import { FIXTURE, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_DONE, GUEST_SYNC_ARGS, readq, vcpu_id, writeq } from './lib/guest';
import { __vm_deassign_ioregion, vm_ioregion_stats, vm_set_ioregion } from './lib/ioregionfd';
import {
  __vcpu_run_start, __vcpu_run_wait, close_kvm_dev, exit_reason, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, le_store, open_kvm_dev_path,
  kvm_of, run_mmio, vcpu_kick, vcpu_run, vm_create_with_vcpus, vm_userspace_mem_region_add,
} from './lib/kvm_util';
import { drainCommands, readCommand, runServing, writeAnswer } from './lib/raw_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const R = 0xd0000000n;
const POSTED_COUNT = 20000;

export function guest_read(): void {
  const v = readq(R + 8n * BigInt(vcpu_id()));
  GUEST_SYNC_ARGS(1, v);
  GUEST_DONE();
}

/** Reads A, then B: two regions that share one socket. */
export function guest_two_regions(): void {
  GUEST_SYNC_ARGS(1, readq(R));
  GUEST_SYNC_ARGS(2, readq(R + 0x1000n));
  GUEST_DONE();
}

/** Two reads of its own 8 bytes. */
export function guest_read_twice(): void {
  const a = R + 8n * BigInt(vcpu_id());
  GUEST_SYNC_ARGS(1, readq(a));
  GUEST_SYNC_ARGS(2, readq(a));
  GUEST_DONE();
}

export function guest_posted_flood(): void {
  for (let i = 0; i < POSTED_COUNT; i++) writeq(R, BigInt(i));
  GUEST_DONE();
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** True if the vCPU's KVM_RUN has answered (its socket is readable). */
function returned(vcpu: KvmVcpu, waitMs = 0): boolean {
  const p = new PollSet(1);
  p.set(0, vcpu.fd, POLLIN);
  return p.wait(1, waitMs) > 0;
}

/** The vCPU stopped at GUEST_SYNC with `value`; what it got instead is logged. */
function synced(vcpu: KvmVcpu, value: bigint): boolean {
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  TH_LOG(`got ${uc.cmd === UCALL_SYNC ? `0x${uc.args[2].toString(16)}` : `ucall ${uc.cmd}`}`);
  return uc.cmd === UCALL_SYNC && uc.args[2] === value;
}

/** VM, vCPUs and one socket whose device end (`dev`) the test plays. */
interface Rig {
  vm: KvmVm;
  vcpus: KvmVcpu[];
  kvmEnd: number;
  dev: number;
  /** The rig's own kernel-model, if it has one. */
  kvmFd?: number;
}

/**
 * A rig whose vCPUs run `guest`, with regions (address, size, flags) all on the one socket. With
 * pollNs, on a kernel-model of its own started with that --ioregionfd-poll-ns.
 */
function rig(name: string, guest: () => void, vcpus: number, regions: [bigint, bigint, number][], transport: 'seqpacket' | 'stream' = 'seqpacket', pollNs?: number) {
  return FIXTURE(name, (): Rig => {
    const kvmFd = pollNs === undefined ? undefined : open_kvm_dev_path({ ioregionfdPollNs: pollNs });
    const [vm, all] = vm_create_with_vcpus(vcpus, guest, kvmFd);
    const [kvmEnd, dev] = socketpair(transport);
    for (const [paddr, size, flags] of regions) vm_set_ioregion(vm, { guest_paddr: paddr, memory_size: size, read_fd: kvmEnd, write_fd: kvmEnd, flags });
    return { vm, vcpus: all, kvmEnd, dev, kvmFd };
  }, (s) => {
    // The device end first: a vCPU still waiting for an answer sees EOF, not a freed VM.
    closeQuietly(s.dev);
    kvm_vm_free(s.vm);
    closeQuietly(s.kvmEnd);
    if (s.kvmFd !== undefined) close_kvm_dev(s.kvmFd);
  });
}

/** A spin window far longer than any step here: a spin that ends by itself would time the test out. */
const ENDLESS_SPIN_NS = 60e9;

// Spinning for a minute, or not at all (--ioregionfd-poll-ns 0): a kick and a memslot change get through alike.
for (const [name, pollNs] of [['reply_spin', ENDLESS_SPIN_NS], ['reply_no_poll', 0]] as const) TEST_STEPS(rig(name, guest_read_twice, 1, [[R, 8n, 0]], 'seqpacket', pollNs), [
  [`kick while ${pollNs ? 'spinning' : 'blocked'} waiting for the reply: KVM_RUN -1/EINTR with KVM_EXIT_INTR, at once`, ({ vcpus: [vcpu], dev }) => {
    __vcpu_run_start(vcpu);
    const cmd = readCommand(dev);
    TEST_ASSERT(cmd !== undefined && cmd.cmd.cmd === 0, 'expected the READ command');
    vcpu_kick(vcpu);
    // Seconds, not the spin's minute: the kick must end the spin itself.
    TEST_ASSERT(returned(vcpu, 5000), 'KVM_RUN did not return within 5 s of the kick');
    const r = __vcpu_run_wait(vcpu);
    TH_LOG(`ret ${r.ret}, ${errnoName(r.errno)}, exit ${exit_reason(vcpu)}`);
    return r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR;
  }],
  ['the next KVM_RUN takes the reply without resending the command', ({ vcpus: [vcpu], dev }) => {
    writeAnswer(dev, 0x5151n);
    vcpu_run(vcpu);
    return synced(vcpu, 0x5151n) && drainCommands(dev).length === 0;
  }],
  [`a memslot change completes while the vCPU ${pollNs ? 'spins' : 'blocks'} for a reply`, ({ vm, vcpus: [vcpu], dev }) => {
    __vcpu_run_start(vcpu);
    const cmd = readCommand(dev);
    TEST_ASSERT(cmd !== undefined && cmd.cmd.cmd === 0, 'expected the second READ command');
    const t0 = Date.now();
    vm_userspace_mem_region_add(vm, 0x4000_0000n, 7, 1, 0);
    const ms = Date.now() - t0;
    TH_LOG(`KVM_SET_USER_MEMORY_REGION took ${ms} ms`);
    writeAnswer(dev, 0x5252n);
    TEST_ASSERT(__vcpu_run_wait(vcpu).ret === 0, 'KVM_RUN after the answer');
    return ms < 5000 && synced(vcpu, 0x5252n);
  }],
]);

TEST_STEPS(rig('destroy_spin', guest_read, 1, [[R, 8n, 0]], 'seqpacket', ENDLESS_SPIN_NS), [
  ['destroying the VM while its vCPU spins for a reply ends the spin: no vCPU or busy thread is left', ({ vm, vcpus: [vcpu], dev, kvmFd }) => {
    __vcpu_run_start(vcpu);
    const cmd = readCommand(dev);
    TEST_ASSERT(cmd !== undefined && cmd.cmd.cmd === 0, 'expected the READ command');
    kvm_vm_free(vm);
    const kvm = kvm_of(kvmFd!);
    let counts = kvm.objectCounts();
    for (let i = 0; i < 100 && (counts.vcpus > 0 || counts.vcpuThreads > counts.idleVcpuThreads); i++) {
      sleep(50);
      counts = kvm.objectCounts();
    }
    TH_LOG(`${counts.vms} VMs, ${counts.vcpus} vCPUs, ${counts.vcpuThreads - counts.idleVcpuThreads} busy threads`);
    return counts.vms === 0 && counts.vcpus === 0 && counts.vcpuThreads === counts.idleVcpuThreads;
  }],
]);

TEST_STEPS(rig('reply_wait', guest_read, 1, [[R, 8n, 0]]), [
  ['kick while waiting for the reply: KVM_RUN -1/EINTR with KVM_EXIT_INTR', ({ vcpus: [vcpu], dev }) => {
    __vcpu_run_start(vcpu);
    const cmd = readCommand(dev);
    TEST_ASSERT(cmd !== undefined && cmd.cmd.cmd === 0, 'expected the READ command');
    sleep(20);
    vcpu_kick(vcpu);
    const r = __vcpu_run_wait(vcpu);
    TH_LOG(`ret ${r.ret}, ${errnoName(r.errno)}, exit ${exit_reason(vcpu)}`);
    return r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR;
  }],
  ['the guest did not get past the interrupted read (must-test 42)', ({ vcpus: [vcpu] }) => get_ucall(vcpu).cmd === 0n],
  ['the next KVM_RUN only reads the reply and the guest gets it', ({ vcpus: [vcpu], dev }) => {
    writeAnswer(dev, 0x4242n);
    vcpu_run(vcpu);
    return synced(vcpu, 0x4242n);
  }],
  ['the delivered command was not sent again', ({ dev }) => drainCommands(dev).length === 0],
  ['stats: 1 interrupted, 1 read, 0 failures', ({ vm }) => {
    const s = vm_ioregion_stats(vm)[0];
    TH_LOG(`${s.interrupted}/${s.reads}/${s.failures}`);
    return s.interrupted === 1n && s.reads === 1n && s.failures === 0n;
  }],
]);

// The device does not read: posted writes fill the socket buffer until the vCPU blocks in send.
TEST_STEPS(rig('send_blocked', guest_posted_flood, 1, [[R, 8n, KVM_IOREGION_POSTED_WRITES]], 'stream'), [
  ['kick while the command write is blocked on a full socket: EINTR with KVM_EXIT_INTR', ({ vcpus: [vcpu] }) => {
    __vcpu_run_start(vcpu);
    let blocked = false;
    for (let i = 0; i < 100 && !blocked; i++) blocked = !returned(vcpu, 20) && i > 10;
    vcpu_kick(vcpu);
    const r = __vcpu_run_wait(vcpu);
    return blocked && r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR;
  }],
  ['after resuming, every posted write arrived exactly once, whole and in order', ({ vcpus: [vcpu], dev }) => {
    const before = drainCommands(dev);
    const { commands: after } = runServing(vcpu, [{ cmdFd: dev, respFd: dev }], () => undefined);
    const all = [...before, ...after, ...drainCommands(dev)];
    const inOrder = all.every((c, i) => c.cmd.cmd === 1 && c.cmd.size === 8 && c.cmd.data === BigInt(i));
    TH_LOG(`${before.length} before the kick, ${all.length} total`);
    return get_ucall(vcpu).cmd === UCALL_DONE && all.length === POSTED_COUNT && inOrder;
  }],
]);

TEST_STEPS(rig('interrupted_holder', guest_read, 2, [[R, 16n, 0]]), [
  ['while vCPU 0 is interrupted holding the fd, vCPU 1 on the same fd sends nothing and stays blocked', ({ vcpus: [v0, v1], dev }) => {
    __vcpu_run_start(v0);
    const c0 = readCommand(dev);
    vcpu_kick(v0);
    const r0 = __vcpu_run_wait(v0);
    TEST_ASSERT(c0?.cmd.offset === 0n && r0.errno === EINTR, 'vCPU 0 interrupted mid-transaction');
    __vcpu_run_start(v1);
    sleep(150);
    return drainCommands(dev).length === 0 && !returned(v1);
  }],
  // vCPU 1 can itself be kicked out of the queue without losing its place.
  ['a vCPU waiting for the fd is interruptible too', ({ vcpus: [, v1] }) => {
    vcpu_kick(v1);
    const r1 = __vcpu_run_wait(v1);
    return r1.ret === -1 && r1.errno === EINTR && exit_reason(v1) === KVM_EXIT_INTR;
  }],
  ['vCPU 0 resumes and gets its reply', ({ vcpus: [v0, v1], dev }) => {
    __vcpu_run_start(v1);
    writeAnswer(dev, 0x100n);
    vcpu_run(v0);
    return synced(v0, 0x100n);
  }],
  ['then vCPU 1 kept its place: its command goes next', ({ dev }) => readCommand(dev)?.cmd.offset === 8n],
  ['and vCPU 1 gets its own reply', ({ vcpus: [, v1], dev }) => {
    writeAnswer(dev, 0x200n);
    const w1 = __vcpu_run_wait(v1);
    TEST_ASSERT(w1.ret === 0, `vCPU 1 KVM_RUN failed: ${w1.errno}`);
    return synced(v1, 0x200n);
  }],
]);

TEST_STEPS(rig('deassign', guest_read, 1, [[R, 8n, 0]]), [
  ['a region deassigned while a vCPU is interrupted: the rest of the access is an ordinary KVM_EXIT_MMIO', ({ vm, vcpus: [vcpu], dev }) => {
    __vcpu_run_start(vcpu);
    readCommand(dev);
    vcpu_kick(vcpu);
    TEST_ASSERT(__vcpu_run_wait(vcpu).errno === EINTR, 'interrupted');
    TEST_ASSERT(__vm_deassign_ioregion(vm, R, 8n).ret === 0, 'deassign while interrupted');
    vcpu_run(vcpu);
    const m = run_mmio(vcpu);
    return exit_reason(vcpu) === KVM_EXIT_MMIO && m.physAddr === R && m.len === 8 && !m.isWrite;
  }],
  ['and the VMM completes it', ({ vcpus: [vcpu] }) => {
    le_store(run_mmio(vcpu).data, 8, 0x77n);
    vcpu_run(vcpu);
    return synced(vcpu, 0x77n);
  }],
]);

// A's command was delivered, then A was deassigned under the interrupted vCPU: the device's late
// answer to it must not be taken for B's (regions sharing a socket have no ids to tell them apart).
TEST_STEPS(rig('shared_fd_deassign', guest_two_regions, 1, [[R, 8n, 0], [R + 0x1000n, 8n, 0]]), [
  ['after a deassign under an interrupted access, the orphaned reply is dropped: B reads its own answer', ({ vm, vcpus: [vcpu], dev }) => {
    __vcpu_run_start(vcpu);
    readCommand(dev);
    vcpu_kick(vcpu);
    TEST_ASSERT(__vcpu_run_wait(vcpu).errno === EINTR, 'interrupted');
    TEST_ASSERT(__vm_deassign_ioregion(vm, R, 8n).ret === 0, 'deassign A');
    vcpu_run(vcpu);
    TEST_ASSERT(exit_reason(vcpu) === KVM_EXIT_MMIO, 'the rest of the access exits');
    writeAnswer(dev, 0xaaaan);
    le_store(run_mmio(vcpu).data, 8, 0x77n);
    vcpu_run(vcpu);
    TEST_ASSERT(get_ucall(vcpu).args[2] === 0x77n, 'the VMM completed A');
    __vcpu_run_start(vcpu);
    const c = readCommand(dev);
    writeAnswer(dev, 0xbbbbn);
    TEST_ASSERT(__vcpu_run_wait(vcpu).ret === 0, 'KVM_RUN for B');
    const v = get_ucall(vcpu).args[2];
    TH_LOG(`B read 0x${v?.toString(16)}`);
    return c?.cmd.offset === 0n && v === 0xbbbbn;
  }],
]);

// vCPU 1 waits for the fd behind vCPU 0, is kicked, and the VMM closes it: its place in the queue
// must be passed on, or vCPU 0 could never use the fd again.
TEST_STEPS(rig('waiter_leaves', guest_read_twice, 2, [[R, 16n, 0]]), [
  ['vCPU 0 gets its first reply', ({ vcpus: [v0, v1], dev }) => {
    __vcpu_run_start(v0);
    readCommand(dev);
    __vcpu_run_start(v1);
    sleep(50);
    vcpu_kick(v1);
    TEST_ASSERT(__vcpu_run_wait(v1).errno === EINTR, 'vCPU 1 interrupted while queued');
    v1.close();
    sleep(50);
    writeAnswer(dev, 0x11n);
    TEST_ASSERT(__vcpu_run_wait(v0).ret === 0, 'vCPU 0 first KVM_RUN');
    return synced(v0, 0x11n);
  }],
  ['a queued vCPU whose fd is closed passes its turn on: vCPU 0 uses the fd again', ({ vcpus: [v0], dev }) => {
    __vcpu_run_start(v0);
    const c = readCommand(dev);
    writeAnswer(dev, 0x22n);
    TEST_ASSERT(__vcpu_run_wait(v0).ret === 0, 'vCPU 0 second KVM_RUN');
    return c?.cmd.offset === 0n && get_ucall(v0).args[2] === 0x22n;
  }],
]);

if (require.main === module) {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
