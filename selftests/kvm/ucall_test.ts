// ucall_test: GUEST_SYNC stages with arguments, GUEST_PRINTF, a failing GUEST_ASSERT reported with
// the guest's file:line, and GUEST_DONE, all through the x86 ucall transport (port 0x1000, RDI).

import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_PRINTF, GUEST_SYNC, GUEST_SYNC_ARGS } from './lib/guest';
import { KvmVcpu, kvm_vm_free, vcpu_args_set, vcpu_run, vm_create_with_one_vcpu } from './lib/kvm_util';
import { get_ucall, Ucall, UCALL_ABORT, UCALL_DONE, UCALL_PRINTF, UCALL_SYNC } from './lib/ucall_common';
import { FIXTURE, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';

export function guest_code(a: bigint, b: bigint): void {
  GUEST_SYNC(1);
  GUEST_SYNC_ARGS(2, a, b, a + b, 0xffffffffffffffffn);
  GUEST_PRINTF(`hello from the guest: ${a}`);
  GUEST_ASSERT_EQ(a, 41n, 'deliberate');
  GUEST_DONE();
}

const vm1 = FIXTURE('guest', () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  vcpu_args_set(vcpu, 42n, 7n);
  return { vm, vcpu };
}, ({ vm }) => kvm_vm_free(vm));

/** Run to the next ucall. */
function next(vcpu: KvmVcpu): Ucall {
  vcpu_run(vcpu);
  return get_ucall(vcpu);
}

TEST_STEPS(vm1, [
  ['GUEST_SYNC(1) arrives as UCALL_SYNC stage 1', ({ vcpu }) => {
    const uc = next(vcpu);
    return uc.cmd === UCALL_SYNC && uc.args[1] === 1n;
  }],
  ['GUEST_SYNC_ARGS carries the stage and four 64-bit arguments', ({ vcpu }) => {
    const uc = next(vcpu);
    const args = uc.args[2] === 42n && uc.args[3] === 7n && uc.args[4] === 49n && uc.args[5] === 0xffffffffffffffffn;
    return uc.cmd === UCALL_SYNC && uc.args[1] === 2n && args;
  }],
  ['GUEST_PRINTF text arrives in the ucall buffer', ({ vcpu }) => {
    const uc = next(vcpu);
    return uc.cmd === UCALL_PRINTF && uc.buffer === 'hello from the guest: 42';
  }],
  ['a failing GUEST_ASSERT_EQ reports file:line and values', ({ vcpu }) => {
    const uc = next(vcpu);
    TH_LOG(uc.buffer);
    return uc.cmd === UCALL_ABORT && /^ucall_test\.ts:\d+: deliberate: 0x2a != 0x29$/.test(uc.buffer) && uc.args[2] > 0n;
  }],
  ['GUEST_DONE arrives as UCALL_DONE', ({ vcpu }) => next(vcpu).cmd === UCALL_DONE],
]);

if (require.main === module) void test_harness_run();
