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
import { ASSERT, FIXTURE, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { cpu_relax, GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, hlt, inl, readq, writeq } from './lib/guest';
import {
  __vcpu_run, __vcpu_run_start, __vcpu_run_wait, addr_gpa2hva, exit_reason, exit_reason_str, KvmVcpu, KvmVm, kvm_vm_free,
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

interface Rig {
  vm: KvmVm;
  /** guest_code, which counts its progress at `counter` and spins until `flag` is set. */
  vcpu: KvmVcpu;
  counter: bigint;
  flag: bigint;
  /** guest_throws, which counts at throwCounter. */
  thrower: KvmVcpu;
  throwCounter: bigint;
  /** A vCPU with no guest entry point (added by its step). */
  empty?: KvmVcpu;
  /** The counter before the kicks. */
  before: bigint;
  /** The counter when the kick stopped the spinning guest. */
  stopped: bigint;
}

const rig = FIXTURE('vcpus', (): Rig => {
  const vm = vm_create();
  const counter = vm_alloc(vm, 8);
  const flag = vm_alloc(vm, 8);
  const throwCounter = vm_alloc(vm, 8);
  const vcpu = vm_vcpu_add(vm, 0, guest_code);
  vcpu_args_set(vcpu, counter, flag);
  const thrower = vm_vcpu_add(vm, 1, guest_throws);
  vcpu_args_set(thrower, throwCounter);
  return { vm, vcpu, counter, flag, thrower, throwCounter, before: 0n, stopped: 0n };
}, (s) => kvm_vm_free(s.vm));

const count = (s: Rig): bigint => le_value(addr_gpa2hva(s.vm, s.counter, 8));

TEST_STEPS(rig, [
  // immediate_exit on a vCPU that has never run: the guest does not start.
  [`immediate_exit on a vCPU that never ran: EINTR, exit_reason untouched (0x${SENTINEL_EXIT.toString(16)}), no guest code ran`, (s) => {
    const { thrower } = s;
    thrower.kvmRun.setUint32(RUN.exit_reason, SENTINEL_EXIT, true);
    thrower.kvmRun.setUint8(RUN.immediate_exit, 1);
    const r = __vcpu_run(thrower);
    thrower.kvmRun.setUint8(RUN.immediate_exit, 0);
    TH_LOG(run_result(r, thrower));
    return r.ret === -1 && r.errno === EINTR && exit_reason(thrower) === SENTINEL_EXIT && le_value(addr_gpa2hva(s.vm, s.throwCounter, 8)) === 0n;
  }],
  // immediate_exit after an exit: still nothing runs, twice in a row.
  [`immediate_exit after GUEST_SYNC: KVM_RUN fails EINTR twice, exit_reason stays 0x${SENTINEL_EXIT.toString(16)}, the guest counter stays 1`, (s) => {
    const { vcpu } = s;
    expect_sync(vcpu, 1);
    vcpu.kvmRun.setUint32(RUN.exit_reason, SENTINEL_EXIT, true);
    vcpu.kvmRun.setUint8(RUN.immediate_exit, 1);
    const results = [__vcpu_run(vcpu), __vcpu_run(vcpu)];
    vcpu.kvmRun.setUint8(RUN.immediate_exit, 0);
    TH_LOG(`counter ${count(s)}`);
    return results.every((x) => x.ret === -1 && x.errno === EINTR) && exit_reason(vcpu) === SENTINEL_EXIT && count(s) === 1n;
  }],
  // A pending IN is completed by the KVM_RUN that immediate_exit makes fail.
  ['vcpu_run_complete_io completes a pending IN: RAX holds the IN\'s data right after the EINTR, the guest did not run on, and it keeps that value, not data written later', (s) => {
    const { vcpu } = s;
    vcpu_run(vcpu);
    const io = run_io(vcpu);
    TEST_ASSERT(exit_reason(vcpu) === KVM_EXIT_IO && io.direction === KVM_EXIT_IO_IN && io.port === PORT && io.size === 4, 'inl exit');
    le_store(io.data, 4, 0x11223344n);
    vcpu_run_complete_io(vcpu);
    const rax = vcpu_regs_get(vcpu).rax & 0xffffffffn;
    const ranBefore = count(s);
    le_store(io.data, 4, 0xdeadbeefn);
    const v = expect_sync(vcpu, 2);
    TH_LOG(`RAX 0x${rax.toString(16)}, counter ${ranBefore}, the guest got 0x${v.toString(16)}`);
    return rax === 0x11223344n && ranBefore === 2n && v === 0x11223344n;
  }],
  // A kick with no KVM_RUN in progress stays pending until the next KVM_RUN.
  ['a kick outside KVM_RUN makes the next KVM_RUN fail EINTR with KVM_EXIT_INTR before the guest runs', (s) => {
    const { vcpu } = s;
    expect_sync(vcpu, 3);
    s.before = count(s);
    vcpu_kick(vcpu);
    msleep(10);
    const r = __vcpu_run(vcpu);
    TH_LOG(run_result(r, vcpu));
    return r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR && count(s) === s.before;
  }],
  // A kick while the guest spins inside KVM_RUN.
  ['a kick during KVM_RUN interrupts the spinning guest: EINTR with KVM_EXIT_INTR (the earlier kick was consumed)', (s) => {
    const { vcpu } = s;
    __vcpu_run_start(vcpu);
    msleep(KICK_AFTER_MS);
    // On a loaded machine the vCPU thread may not have been scheduled yet: kick only once it spins.
    for (const deadline = Date.now() + SPIN_WAIT_MS; count(s) === s.before && Date.now() < deadline;) msleep(5);
    vcpu_kick(vcpu);
    const r = __vcpu_run_wait(vcpu);
    const spun = count(s) - s.before;
    s.stopped = count(s);
    TH_LOG(`${run_result(r, vcpu)}, ${spun} iterations`);
    return r.ret === -1 && r.errno === EINTR && exit_reason(vcpu) === KVM_EXIT_INTR && spun > 0n;
  }],
  ['the guest stays stopped outside KVM_RUN, then resumes where it was, sees the host\'s flag and reaches GUEST_SYNC(4)', (s) => {
    msleep(20);
    const still = count(s);
    le_store(addr_gpa2hva(s.vm, s.flag, 8), 8, 1n);
    expect_sync(s.vcpu, 4);
    TH_LOG(`counter ${s.stopped}, then ${still}, then ${count(s)}`);
    // The kick may have stopped the guest between the load and the store of a bump: that store lands on
    // resume, then the loop sees the flag at once.
    return still === s.stopped && count(s) - s.stopped <= 1n;
  }],
  // hlt without an irqchip.
  ['hlt() without an irqchip exits KVM_EXIT_HLT and the next KVM_RUN resumes after it', (s) => {
    const { vcpu } = s;
    vcpu_run(vcpu);
    const halted = exit_reason(vcpu);
    const atHlt = count(s);
    expect_sync(vcpu, 5);
    TH_LOG(exit_reason_str(halted));
    vcpu_run(vcpu);
    TEST_ASSERT_EQ(get_ucall(vcpu).cmd, UCALL_DONE, 'guest_code ends with GUEST_DONE');
    return halted === KVM_EXIT_HLT && count(s) === atHlt + 1n;
  }],
  // Guest code that throws.
  ['guest code that throws: KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_EMULATION, the exception in the detail, again on the next KVM_RUN', ({ thrower }) => {
    const r = __vcpu_run(thrower);
    const suberror = thrower.kvmRun.getUint32(RUN.internal_suberror, true);
    const again = __vcpu_run(thrower);
    TH_LOG(`suberror ${suberror}: ${r.detail.split('\n')[0]}`);
    return r.ret === 0 && exit_reason(thrower) === KVM_EXIT_INTERNAL_ERROR && suberror === KVM_INTERNAL_ERROR_EMULATION &&
      /deliberate guest bug/.test(r.detail) && again.ret === 0 && exit_reason(thrower) === KVM_EXIT_INTERNAL_ERROR && /deliberate guest bug/.test(again.detail);
  }],
  // Guest code that returns.
  ['guest code that returns: KVM_EXIT_SHUTDOWN, and again on the next KVM_RUN', ({ vm }) => {
    const returner = vm_vcpu_add(vm, 2, guest_returns);
    const r = __vcpu_run(returner);
    const first = exit_reason(returner);
    const r2 = __vcpu_run(returner);
    TH_LOG(`${exit_reason_str(first)}: ${r.detail}`);
    return r.ret === 0 && first === KVM_EXIT_SHUTDOWN && r2.ret === 0 && exit_reason(returner) === KVM_EXIT_SHUTDOWN;
  }],
  // No guest entry point.
  ['KVM_RUN on a vCPU with no guest entry point: KVM_EXIT_INTERNAL_ERROR', (s) => {
    const empty = s.empty = vm_vcpu_add(s.vm, 3);
    const r = __vcpu_run(empty);
    TH_LOG(`${run_result(r, empty)}: ${r.detail}`);
    return r.ret === 0 && exit_reason(empty) === KVM_EXIT_INTERNAL_ERROR && /entry/.test(r.detail);
  }],
  // immediate_exit still wins over a terminal exit.
  ['immediate_exit on a vCPU whose guest has ended: EINTR, exit_reason untouched', ({ empty }) => {
    ASSERT(empty, 'the vCPU of the step before');
    empty.kvmRun.setUint32(RUN.exit_reason, SENTINEL_EXIT, true);
    empty.kvmRun.setUint8(RUN.immediate_exit, 1);
    const r = __vcpu_run(empty);
    empty.kvmRun.setUint8(RUN.immediate_exit, 0);
    TH_LOG(run_result(r, empty));
    return r.ret === -1 && r.errno === EINTR && exit_reason(empty) === SENTINEL_EXIT;
  }],
]);

if (require.main === module) void test_harness_run();
