// kvm_run_test: nothing a VMM writes into its kvm_run page can wedge or steer the kernel-model. The
// page holds struct kvm_run (the VMM's to read, immediate_exit and the exit's data its to write) and
// the VMM's kick request word at kvm_run + 3072, of which bit 0 alone means anything. The kernel-model
// keeps its own state (attention bits, which exit it reported) elsewhere, and the page cannot shrink.

import * as fs from 'fs';
import { EINTR } from '../../proto/errno';
import { EMU_ATTN_KICK, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IOREGIONFD_FAILURE, RUN } from '../../proto/kvm-uapi';
import { FIXTURE, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, inl } from './lib/guest';
import {
  __vcpu_run, exit_reason, kvm_vm_free, KvmVcpu, le_store, run_io, vcpu_kick, vcpu_run, vm_create_with_one_vcpu,
} from './lib/kvm_util';
import { get_ucall, Ucall, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT } from './lib/test_util';

const PORT = 0x80;

export function guest_code(): void {
  for (let stage = 1; stage <= 3; stage++) GUEST_SYNC(stage);
  GUEST_SYNC_ARGS(4, inl(PORT));
  GUEST_DONE();
}

function kickWord(vcpu: KvmVcpu): Int32Array {
  return new Int32Array(vcpu.kvmRun.buffer, RUN.emu_kick, 1);
}

/** KVM_RUN until a ucall arrives; undefined if a KVM_RUN failed otherwise than with EINTR. */
function nextUcall(vcpu: KvmVcpu): Ucall | undefined {
  for (let i = 0; i < 10; i++) {
    const r = __vcpu_run(vcpu);
    if (r.ret === 0) return get_ucall(vcpu);
    if (r.errno !== EINTR) return undefined;
  }
  return undefined;
}

const rig = FIXTURE('guest', () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  return { vm, vcpu, word: kickWord(vcpu) };
}, ({ vm }) => kvm_vm_free(vm));

TEST_STEPS(rig, [
  // Every bit but the kick request set: the kernel-model's old private bits (stop, update, interrupt).
  [`with 0x${(~EMU_ATTN_KICK >>> 0).toString(16)} at kvm_run + 3072, KVM_RUN still runs the guest to its next ucall`, ({ vcpu, word }) => {
    Atomics.store(word, 0, ~EMU_ATTN_KICK);
    const uc = nextUcall(vcpu);
    return uc?.cmd === UCALL_SYNC && uc.args[1] === 1n;
  }],
  // All bits: one kick (EINTR, KVM_EXIT_INTR), the rest ignored; the next KVM_RUN runs on.
  ['with every bit set, KVM_RUN returns EINTR / KVM_EXIT_INTR once and then runs the guest on', ({ vcpu, word }) => {
    Atomics.store(word, 0, -1);
    const kicked = __vcpu_run(vcpu);
    const intr = exit_reason(vcpu);
    const uc = nextUcall(vcpu);
    TH_LOG(`errno ${kicked.errno}, exit ${intr}`);
    return kicked.ret === -1 && kicked.errno === EINTR && intr === KVM_EXIT_INTR && uc?.cmd === UCALL_SYNC && uc.args[1] === 2n;
  }],
  ['taking the kick cleared the request bit, and only it counts', ({ word }) => (Atomics.load(word, 0) & EMU_ATTN_KICK) === 0],
  // The VMM's real kick (request bit + kick eventfd) still works after all that.
  ['vcpu_kick() still interrupts the next KVM_RUN once', ({ vcpu, word }) => {
    Atomics.store(word, 0, 0);
    vcpu_kick(vcpu);
    const again = __vcpu_run(vcpu);
    const againExit = exit_reason(vcpu);
    const uc = nextUcall(vcpu);
    return again.ret === -1 && again.errno === EINTR && againExit === KVM_EXIT_INTR && uc?.cmd === UCALL_SYNC && uc.args[1] === 3n;
  }],
  // An IN exit whose exit_reason the VMM overwrites before completing it: the kernel-model completes
  // the exit it reported (KVM_EXIT_IO, data at data_offset), not what kvm_run says now.
  ['an overwritten exit_reason does not change how the IN completes', ({ vcpu }) => {
    vcpu_run(vcpu);
    TEST_ASSERT(exit_reason(vcpu) === KVM_EXIT_IO && run_io(vcpu).port === PORT, 'the guest stopped at its inl');
    le_store(run_io(vcpu).data, 4, 0x600dcafen);
    vcpu.kvmRun.setUint32(RUN.exit_reason, KVM_EXIT_IOREGIONFD_FAILURE, true);
    vcpu.kvmRun.setBigUint64(RUN.iofail_data, 0xbadn, true);
    const uc = nextUcall(vcpu);
    TH_LOG(`the guest got 0x${uc?.args[2]?.toString(16)}`);
    vcpu_run(vcpu);
    TEST_ASSERT(get_ucall(vcpu).cmd === UCALL_DONE, 'the guest finished');
    return uc?.cmd === UCALL_SYNC && uc.args[1] === 4n && uc.args[2] === 0x600dcafen;
  }],
  ['the kvm_run memfd cannot be truncated', ({ vcpu }) => {
    let truncated = 'succeeded';
    try {
      fs.ftruncateSync(vcpu.runFd, 0);
    } catch (e) {
      truncated = (e as NodeJS.ErrnoException).code ?? 'failed';
    }
    TH_LOG(truncated);
    return truncated === 'EPERM';
  }],
]);

if (require.main === module) void test_harness_run();
