// ucall_test: GUEST_SYNC stages with arguments, GUEST_PRINTF, a failing GUEST_ASSERT reported with
// the guest's file:line, and GUEST_DONE, all through the x86 ucall transport (port 0x1000, RDI).

import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_PRINTF, GUEST_SYNC, GUEST_SYNC_ARGS } from './lib/guest';
import { kvm_vm_free, vcpu_args_set, vcpu_run, vm_create_with_one_vcpu } from './lib/kvm_util';
import { get_ucall, UCALL_ABORT, UCALL_DONE, UCALL_PRINTF, UCALL_SYNC } from './lib/ucall_common';
import { ksft_finished, ksft_print_header, ksft_set_plan, ksft_test_result } from '../kselftest';
import { TEST_ASSERT_EQ } from './lib/test_util';

export function guest_code(a: bigint, b: bigint): void {
  GUEST_SYNC(1);
  GUEST_SYNC_ARGS(2, a, b, a + b, 0xffffffffffffffffn);
  GUEST_PRINTF(`hello from the guest: ${a}`);
  GUEST_ASSERT_EQ(a, 41n, 'deliberate');
  GUEST_DONE();
}

function main(): void {
  ksft_print_header();
  ksft_set_plan(5);
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  vcpu_args_set(vcpu, 42n, 7n);

  vcpu_run(vcpu);
  let uc = get_ucall(vcpu);
  ksft_test_result(uc.cmd === UCALL_SYNC && uc.args[1] === 1n, 'GUEST_SYNC(1) arrives as UCALL_SYNC stage 1');

  vcpu_run(vcpu);
  uc = get_ucall(vcpu);
  const args = uc.args[2] === 42n && uc.args[3] === 7n && uc.args[4] === 49n && uc.args[5] === 0xffffffffffffffffn;
  ksft_test_result(uc.cmd === UCALL_SYNC && uc.args[1] === 2n && args,
    'GUEST_SYNC_ARGS carries the stage and four 64-bit arguments');

  vcpu_run(vcpu);
  uc = get_ucall(vcpu);
  ksft_test_result(uc.cmd === UCALL_PRINTF && uc.buffer === 'hello from the guest: 42', 'GUEST_PRINTF text arrives in the ucall buffer');

  vcpu_run(vcpu);
  uc = get_ucall(vcpu);
  ksft_test_result(uc.cmd === UCALL_ABORT && /^ucall_test\.ts:\d+: deliberate: 0x2a != 0x29$/.test(uc.buffer) && uc.args[2] > 0n,
    `a failing GUEST_ASSERT_EQ reports file:line and values (${uc.buffer})`);

  vcpu_run(vcpu);
  uc = get_ucall(vcpu);
  TEST_ASSERT_EQ(uc.cmd, UCALL_DONE, 'last ucall');
  ksft_test_result(uc.cmd === UCALL_DONE, 'GUEST_DONE arrives as UCALL_DONE');
  kvm_vm_free(vm);
  ksft_finished();
}

if (require.main === module) main();
