// immediate_exit_test: how KVM_RUN returns without (or before) running the guest, and the exits
// that end guest code.
//
// - immediate_exit = 1: KVM_RUN fails with EINTR and leaves exit_reason as it was, without running the
//   guest (measured on a real /dev/kvm: a sentinel exit_reason survives, RIP does not move); but first
//   it completes a pending IN/MMIO read, so KVM_GET_REGS shows the IN's data in RAX at once
//   (vcpu_run_complete_io relies on this).
// - The kick (vcpu_kick) is this model's signal to the vCPU thread, and it behaves like a signal that
//   the VMM keeps blocked outside KVM_RUN and unblocks inside it (KVM_SET_SIGNAL_MASK): a kick sent
//   while no KVM_RUN is in progress stays pending, and the next KVM_RUN sees it before entering the
//   guest, failing EINTR with exit_reason KVM_EXIT_INTR; that consumes it. A kick during KVM_RUN
//   interrupts the guest at its next instruction boundary (any guest-library call, cpu_relax()
//   included) with the same EINTR + KVM_EXIT_INTR, and the guest continues where it was at the next
//   KVM_RUN.
// - hlt() without an irqchip exits KVM_EXIT_HLT; the guest continues after it at the next KVM_RUN.
// - The model's own terminal exits: guest code that throws ends in KVM_EXIT_INTERNAL_ERROR
//   (suberror KVM_INTERNAL_ERROR_EMULATION, the exception in the reply's detail), guest code that
//   returns in KVM_EXIT_SHUTDOWN (as a triple fault would), a vCPU with no guest entry point in
//   KVM_EXIT_INTERNAL_ERROR; every later KVM_RUN reports the same exit.

import { EINTR, errnoName } from '../../proto/errno';
import {
  KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_SHUTDOWN,
  KVM_INTERNAL_ERROR_EMULATION, RUN,
} from '../../proto/kvm-uapi';
import { IoctlResult } from '../../proto/control';
import { ksft_finished, ksft_print_header, ksft_set_plan, ksft_test_result } from '../kselftest';
import { cpu_relax, GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, hlt, inl, readq, writeq } from './lib/guest';
import {
  __vcpu_run, __vcpu_run_start, __vcpu_run_wait, addr_gpa2hva, exit_reason, exit_reason_str, KvmVcpu, kvm_vm_free,
  le_store, le_value, run_io, vcpu_args_set, vcpu_kick, vcpu_regs_get, vcpu_run, vcpu_run_complete_io, vm_alloc,
  vm_create, vm_vcpu_add,
} from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { msleep, TEST_ASSERT, TEST_ASSERT_EQ } from './lib/test_util';

const PORT = 0x80;
const SENTINEL_EXIT = 0x1234;
const KICK_AFTER_MS = 50;
/** How long to wait at most for the guest to start spinning before it is kicked. */
const SPIN_WAIT_MS = 5000;

function bump(counter: bigint): void {
  writeq(counter, readq(counter) + 1n);
}

/** Counts its progress in guest memory, so the host can tell whether it ran. */
export function guest_code(counter: bigint, flag: bigint): void {
  bump(counter);
  GUEST_SYNC(1);
  bump(counter);
  const v = inl(PORT);
  bump(counter);
  GUEST_SYNC_ARGS(2, v);
  GUEST_SYNC(3);
  while (readq(flag) === 0n) {
    bump(counter);
    cpu_relax();
  }
  GUEST_SYNC(4);
  hlt();
  bump(counter);
  GUEST_SYNC(5);
  GUEST_DONE();
}

export function guest_throws(counter: bigint): void {
  bump(counter);
  throw new Error('deliberate guest bug');
}

export function guest_returns(): number {
  return 0;
}

function run_result(r: IoctlResult, vcpu: KvmVcpu): string {
  return `KVM_RUN ${r.ret === 0 ? 'succeeded' : `failed ${errnoName(r.errno)}`}, exit_reason ${exit_reason_str(exit_reason(vcpu))}`;
}

function expect_sync(vcpu: KvmVcpu, stage: number): bigint {
  vcpu_run(vcpu);
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(stage), `expected GUEST_SYNC(${stage}), got ucall ${uc.cmd} stage ${uc.args[1]}`);
  return uc.args[2];
}

function main(): void {
  ksft_print_header();
  ksft_set_plan(11);
  const vm = vm_create();
  const counter = vm_alloc(vm, 8);
  const flag = vm_alloc(vm, 8);
  const throwCounter = vm_alloc(vm, 8);
  const count = (): bigint => le_value(addr_gpa2hva(vm, counter, 8));
  const vcpu = vm_vcpu_add(vm, 0, guest_code);
  vcpu_args_set(vcpu, counter, flag);

  // immediate_exit on a vCPU that has never run: the guest does not start.
  const thrower = vm_vcpu_add(vm, 1, guest_throws);
  vcpu_args_set(thrower, throwCounter);
  thrower.kvmRun.setUint32(RUN.exit_reason, SENTINEL_EXIT, true);
  thrower.kvmRun.setUint8(RUN.immediate_exit, 1);
  let r = __vcpu_run(thrower);
  thrower.kvmRun.setUint8(RUN.immediate_exit, 0);
  ksft_test_result(r.ret === -1 && r.errno === EINTR && exit_reason(thrower) === SENTINEL_EXIT && le_value(addr_gpa2hva(vm, throwCounter, 8)) === 0n,
    `immediate_exit on a vCPU that never ran: EINTR, exit_reason untouched (0x${SENTINEL_EXIT.toString(16)}), no guest code ran (${run_result(r, thrower)})`);

  // immediate_exit after an exit: still nothing runs, twice in a row.
  expect_sync(vcpu, 1);
  vcpu.kvmRun.setUint32(RUN.exit_reason, SENTINEL_EXIT, true);
  vcpu.kvmRun.setUint8(RUN.immediate_exit, 1);
  const results = [__vcpu_run(vcpu), __vcpu_run(vcpu)];
  vcpu.kvmRun.setUint8(RUN.immediate_exit, 0);
  ksft_test_result(results.every((x) => x.ret === -1 && x.errno === EINTR) && exit_reason(vcpu) === SENTINEL_EXIT && count() === 1n,
    `immediate_exit after GUEST_SYNC: KVM_RUN fails EINTR twice, exit_reason stays 0x${SENTINEL_EXIT.toString(16)}, the guest counter stays 1 (${count()})`);

  // A pending IN is completed by the KVM_RUN that immediate_exit makes fail.
  vcpu_run(vcpu);
  const io = run_io(vcpu);
  TEST_ASSERT(exit_reason(vcpu) === KVM_EXIT_IO && io.direction === KVM_EXIT_IO_IN && io.port === PORT && io.size === 4, 'inl exit');
  le_store(io.data, 4, 0x11223344n);
  vcpu_run_complete_io(vcpu);
  const rax = vcpu_regs_get(vcpu).rax & 0xffffffffn;
  const ranBefore = count();
  le_store(io.data, 4, 0xdeadbeefn);
  const v = expect_sync(vcpu, 2);
  ksft_test_result(rax === 0x11223344n && ranBefore === 2n && v === 0x11223344n,
    `vcpu_run_complete_io completes a pending IN: RAX holds 0x${rax.toString(16)} right after the EINTR, the guest did not run on (counter ${ranBefore}), and it keeps that value, not data written later (0x${v.toString(16)})`);

  // A kick with no KVM_RUN in progress stays pending until the next KVM_RUN.
  expect_sync(vcpu, 3);
  const before = count();
  vcpu_kick(vcpu);
  msleep(10);
  r = __vcpu_run(vcpu);
  ksft_test_result(r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR && count() === before,
    `a kick outside KVM_RUN makes the next KVM_RUN fail EINTR with KVM_EXIT_INTR before the guest runs (${run_result(r, vcpu)})`);

  // A kick while the guest spins inside KVM_RUN.
  __vcpu_run_start(vcpu);
  msleep(KICK_AFTER_MS);
  // On a loaded machine the vCPU thread may not have been scheduled yet: kick only once it spins.
  for (const deadline = Date.now() + SPIN_WAIT_MS; count() === before && Date.now() < deadline;) msleep(5);
  vcpu_kick(vcpu);
  r = __vcpu_run_wait(vcpu);
  const spun = count() - before;
  ksft_test_result(r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR && spun > 0n,
    `a kick during KVM_RUN interrupts the spinning guest: EINTR with KVM_EXIT_INTR (${run_result(r, vcpu)}, ${spun} iterations; the earlier kick was consumed)`);

  const stopped = count();
  msleep(20);
  const still = count();
  le_store(addr_gpa2hva(vm, flag, 8), 8, 1n);
  expect_sync(vcpu, 4);
  // The kick may have stopped the guest between the load and the store of a bump: that store lands on
  // resume, then the loop sees the flag at once.
  ksft_test_result(still === stopped && count() - stopped <= 1n,
    `the guest stays stopped outside KVM_RUN (counter ${stopped}, then ${still}), then resumes where it was, sees the host's flag and reaches GUEST_SYNC(4) (counter ${count()})`);

  // hlt without an irqchip.
  vcpu_run(vcpu);
  const halted = exit_reason(vcpu);
  const atHlt = count();
  expect_sync(vcpu, 5);
  ksft_test_result(halted === KVM_EXIT_HLT && count() === atHlt + 1n,
    `hlt() without an irqchip exits KVM_EXIT_HLT (${exit_reason_str(halted)}) and the next KVM_RUN resumes after it`);
  vcpu_run(vcpu);
  TEST_ASSERT_EQ(get_ucall(vcpu).cmd, UCALL_DONE, 'guest_code ends with GUEST_DONE');

  // Guest code that throws.
  r = __vcpu_run(thrower);
  const suberror = thrower.kvmRun.getUint32(RUN.internal_suberror, true);
  const again = __vcpu_run(thrower);
  ksft_test_result(r.ret === 0 && exit_reason(thrower) === KVM_EXIT_INTERNAL_ERROR && suberror === KVM_INTERNAL_ERROR_EMULATION &&
    /deliberate guest bug/.test(r.detail) && again.ret === 0 && exit_reason(thrower) === KVM_EXIT_INTERNAL_ERROR && /deliberate guest bug/.test(again.detail),
  `guest code that throws: KVM_EXIT_INTERNAL_ERROR, suberror ${suberror}, the exception in the detail, again on the next KVM_RUN (${r.detail.split('\n')[0]})`);

  // Guest code that returns.
  const returner = vm_vcpu_add(vm, 2, guest_returns);
  r = __vcpu_run(returner);
  const first = exit_reason(returner);
  const r2 = __vcpu_run(returner);
  ksft_test_result(r.ret === 0 && first === KVM_EXIT_SHUTDOWN && r2.ret === 0 && exit_reason(returner) === KVM_EXIT_SHUTDOWN,
    `guest code that returns: KVM_EXIT_SHUTDOWN, and again on the next KVM_RUN (${exit_reason_str(first)}: ${r.detail})`);

  // No guest entry point.
  const empty = vm_vcpu_add(vm, 3);
  r = __vcpu_run(empty);
  ksft_test_result(r.ret === 0 && exit_reason(empty) === KVM_EXIT_INTERNAL_ERROR && /entry/.test(r.detail),
    `KVM_RUN on a vCPU with no guest entry point: KVM_EXIT_INTERNAL_ERROR (${run_result(r, empty)}: ${r.detail})`);

  // immediate_exit still wins over a terminal exit.
  empty.kvmRun.setUint32(RUN.exit_reason, SENTINEL_EXIT, true);
  empty.kvmRun.setUint8(RUN.immediate_exit, 1);
  r = __vcpu_run(empty);
  empty.kvmRun.setUint8(RUN.immediate_exit, 0);
  ksft_test_result(r.ret === -1 && r.errno === EINTR && exit_reason(empty) === SENTINEL_EXIT,
    `immediate_exit on a vCPU whose guest has ended: EINTR, exit_reason untouched (${run_result(r, empty)})`);

  kvm_vm_free(vm);
  ksft_finished();
}

if (require.main === module) main();
