// ioregionfd_signal_test: a signal (kick) while a vCPU is blocked in an ioregionfd access returns
// KVM_RUN with EINTR / KVM_EXIT_INTR, and the next KVM_RUN resumes the access where it stopped
// (docs/ioregionfd.md §5.3, §5.5, §5.6; must-test items 38-42).

import { EINTR, errnoName } from '../../proto/errno';
import { KVM_CAP_IOREGIONFD, KVM_EXIT_INTR, KVM_EXIT_MMIO, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { closeQuietly, PollSet, POLLIN, socketpair } from '../../proto/os';
import { ksft_finished, ksft_print_header, ksft_set_plan, ksft_test_result } from '../kselftest';
import { GUEST_DONE, GUEST_SYNC_ARGS, readq, vcpu_id, writeq } from './lib/guest';
import { __vm_deassign_ioregion, vm_ioregion_stats, vm_set_ioregion } from './lib/ioregionfd';
import {
  __vcpu_run_start, __vcpu_run_wait, exit_reason, kvm_has_cap, kvm_vm_free, KvmVcpu, le_store, run_mmio, vcpu_kick, vcpu_run,
  vm_create_with_one_vcpu, vm_create_with_vcpus,
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

function expectSync(vcpu: KvmVcpu, value: bigint, what: string): void {
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  ksft_test_result(uc.cmd === UCALL_SYNC && uc.args[2] === value, `${what} (got ${uc.cmd === UCALL_SYNC ? `0x${uc.args[2].toString(16)}` : `ucall ${uc.cmd}`})`);
}

function kickWhileWaitingForReply(): void {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_read);
  const [a, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, read_fd: a, write_fd: a });
  __vcpu_run_start(vcpu);
  const cmd = readCommand(dev);
  TEST_ASSERT(cmd !== undefined && cmd.cmd.cmd === 0, 'expected the READ command');
  sleep(20);
  vcpu_kick(vcpu);
  const r = __vcpu_run_wait(vcpu);
  ksft_test_result(r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR,
    `kick while waiting for the reply: KVM_RUN -1/EINTR with KVM_EXIT_INTR (ret ${r.ret}, ${errnoName(r.errno)}, exit ${exit_reason(vcpu)})`);
  ksft_test_result(get_ucall(vcpu).cmd === 0n, 'the guest did not get past the interrupted read (must-test 42)');
  writeAnswer(dev, 0x4242n);
  vcpu_run(vcpu);
  expectSync(vcpu, 0x4242n, 'the next KVM_RUN only reads the reply and the guest gets it');
  ksft_test_result(drainCommands(dev).length === 0, 'the delivered command was not sent again');
  const s = vm_ioregion_stats(vm)[0];
  ksft_test_result(s.interrupted === 1n && s.reads === 1n && s.failures === 0n, `stats: 1 interrupted, 1 read, 0 failures (${s.interrupted}/${s.reads}/${s.failures})`);
  kvm_vm_free(vm);
  [a, dev].forEach(closeQuietly);
}

function kickWhileSendBlocked(): void {
  // The device does not read: posted writes fill the socket buffer until the vCPU blocks in send.
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_posted_flood);
  const [a, dev] = socketpair('stream');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, read_fd: a, write_fd: a, flags: KVM_IOREGION_POSTED_WRITES });
  __vcpu_run_start(vcpu);
  let blocked = false;
  for (let i = 0; i < 100 && !blocked; i++) blocked = !returned(vcpu, 20) && i > 10;
  vcpu_kick(vcpu);
  const r = __vcpu_run_wait(vcpu);
  ksft_test_result(blocked && r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR,
    'kick while the command write is blocked on a full socket: EINTR with KVM_EXIT_INTR');
  const before = drainCommands(dev);
  const { commands: after } = runServing(vcpu, [{ cmdFd: dev, respFd: dev }], () => undefined);
  const all = [...before, ...after, ...drainCommands(dev)];
  const inOrder = all.every((c, i) => c.cmd.cmd === 1 && c.cmd.size === 8 && c.cmd.data === BigInt(i));
  ksft_test_result(get_ucall(vcpu).cmd === UCALL_DONE && all.length === POSTED_COUNT && inOrder,
    `after resuming, every posted write arrived exactly once, whole and in order (${before.length} before the kick, ${all.length} total)`);
  kvm_vm_free(vm);
  [a, dev].forEach(closeQuietly);
}

function interruptedHolderBlocksOthers(): void {
  const [vm, [v0, v1]] = vm_create_with_vcpus(2, guest_read);
  const [a, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 16n, read_fd: a, write_fd: a });
  __vcpu_run_start(v0);
  const c0 = readCommand(dev);
  vcpu_kick(v0);
  const r0 = __vcpu_run_wait(v0);
  TEST_ASSERT(c0?.cmd.offset === 0n && r0.errno === EINTR, 'vCPU 0 interrupted mid-transaction');
  __vcpu_run_start(v1);
  sleep(150);
  ksft_test_result(drainCommands(dev).length === 0 && !returned(v1),
    'while vCPU 0 is interrupted holding the fd, vCPU 1 on the same fd sends nothing and stays blocked');
  // vCPU 1 can itself be kicked out of the queue without losing its place.
  vcpu_kick(v1);
  const r1 = __vcpu_run_wait(v1);
  ksft_test_result(r1.ret === -1 && r1.errno === EINTR && exit_reason(v1) === KVM_EXIT_INTR, 'a vCPU waiting for the fd is interruptible too');
  __vcpu_run_start(v1);
  writeAnswer(dev, 0x100n);
  vcpu_run(v0);
  expectSync(v0, 0x100n, 'vCPU 0 resumes and gets its reply');
  const c1 = readCommand(dev);
  ksft_test_result(c1?.cmd.offset === 8n, 'then vCPU 1 kept its place: its command goes next');
  writeAnswer(dev, 0x200n);
  const w1 = __vcpu_run_wait(v1);
  TEST_ASSERT(w1.ret === 0, `vCPU 1 KVM_RUN failed: ${w1.errno}`);
  expectSync(v1, 0x200n, 'and vCPU 1 gets its own reply');
  kvm_vm_free(vm);
  [a, dev].forEach(closeQuietly);
}

function deassignWhileInterrupted(): void {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_read);
  const [a, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, read_fd: a, write_fd: a });
  __vcpu_run_start(vcpu);
  readCommand(dev);
  vcpu_kick(vcpu);
  TEST_ASSERT(__vcpu_run_wait(vcpu).errno === EINTR, 'interrupted');
  TEST_ASSERT(__vm_deassign_ioregion(vm, R, 8n).ret === 0, 'deassign while interrupted');
  vcpu_run(vcpu);
  const m = run_mmio(vcpu);
  ksft_test_result(exit_reason(vcpu) === KVM_EXIT_MMIO && m.physAddr === R && m.len === 8 && !m.isWrite,
    'a region deassigned while a vCPU is interrupted: the rest of the access is an ordinary KVM_EXIT_MMIO');
  le_store(m.data, 8, 0x77n);
  vcpu_run(vcpu);
  expectSync(vcpu, 0x77n, 'and the VMM completes it');
  kvm_vm_free(vm);
  [a, dev].forEach(closeQuietly);
}

function deassignKeepsSharedFdInStep(): void {
  // A's command was delivered, then A was deassigned under the interrupted vCPU: the device's late
  // answer to it must not be taken for B's (regions sharing a socket have no ids to tell them apart).
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_two_regions);
  const [a, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, read_fd: a, write_fd: a });
  vm_set_ioregion(vm, { guest_paddr: R + 0x1000n, memory_size: 8n, read_fd: a, write_fd: a });
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
  ksft_test_result(c?.cmd.offset === 0n && v === 0xbbbbn,
    `after a deassign under an interrupted access, the orphaned reply is dropped: B reads its own answer (0x${v?.toString(16)})`);
  kvm_vm_free(vm);
  [a, dev].forEach(closeQuietly);
}

function waiterLeavesQueue(): void {
  // vCPU 1 waits for the fd behind vCPU 0, is kicked, and the VMM closes it: its place in the queue
  // must be passed on, or vCPU 0 could never use the fd again.
  const [vm, [v0, v1]] = vm_create_with_vcpus(2, guest_read_twice);
  const [a, dev] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 16n, read_fd: a, write_fd: a });
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
  expectSync(v0, 0x11n, 'vCPU 0 gets its first reply');
  __vcpu_run_start(v0);
  const c = readCommand(dev);
  writeAnswer(dev, 0x22n);
  TEST_ASSERT(__vcpu_run_wait(v0).ret === 0, 'vCPU 0 second KVM_RUN');
  ksft_test_result(c?.cmd.offset === 0n && get_ucall(v0).args[2] === 0x22n,
    'a queued vCPU whose fd is closed passes its turn on: vCPU 0 uses the fd again');
  kvm_vm_free(vm);
  [a, dev].forEach(closeQuietly);
}

function main(): void {
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  ksft_set_plan(17);
  kickWhileWaitingForReply();
  kickWhileSendBlocked();
  interruptedHolderBlocksOthers();
  deassignWhileInterrupted();
  deassignKeepsSharedFdInStep();
  waiterLeavesQueue();
  ksft_finished();
}

if (require.main === module) main();
