// Named checks made by guest code and reported by the host as kselftest results, one ucall each:
// GUEST_CHECK(index, ok, detail) in the guest, guest_checks_run() on the host. Each test program
// lists its check names once (an array both sides import), so the plan is known before the guest runs.

import { EINTR, strerror } from '../../../proto/errno';
import { ksft_print_msg, ksft_test_result } from '../../kselftest';
import { ucall } from './guest';
import { __vcpu_run, __vcpu_run_wait, exit_reason, exit_reason_str, KvmVcpu } from './kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, Ucall, UCALL_ABORT, UCALL_DONE, UCALL_NONE, UCALL_SYNC } from './ucall_common';
import { TEST_ASSERT } from './test_util';

/** The GUEST_SYNC stage that carries a check result: args[2] = index, args[3] = 1 for pass. */
export const GUEST_CHECK_STAGE = 0xc4ecn;

/** Guest side: report check `index` (into the program's list of names); `detail` is shown when it fails. */
export function GUEST_CHECK(index: number, ok: boolean, detail = ''): void {
  ucall(UCALL_SYNC, [0n, GUEST_CHECK_STAGE, BigInt(index), ok ? 1n : 0n], detail);
}

/**
 * Host side: run the vCPU until its next ucall that is not a check result, reporting each check on
 * the way as `ok N <name>`. Exits other than ucalls go to `onExit` (it completes them and returns
 * true). Returns that ucall (SYNC or DONE); a guest assertion fails the test. With `started`, the
 * first KVM_RUN was already sent with __vcpu_run_start (another vCPU ran meanwhile).
 */
export function guest_checks_run(vcpu: KvmVcpu, names: readonly string[], seen: Set<number>, onExit?: (vcpu: KvmVcpu) => boolean, started = false): Ucall {
  for (;;) {
    // `started`: a KVM_RUN was already sent (__vcpu_run_start): take its reply first.
    const r = started ? __vcpu_run_wait(vcpu) : __vcpu_run(vcpu);
    started = false;
    if (r.ret !== 0) {
      TEST_ASSERT(r.errno === EINTR, `KVM_RUN failed, errno ${r.errno} (${strerror(r.errno)}): ${r.detail}`, r.errno);
      continue;
    }
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_NONE) {
      if (onExit?.(vcpu)) continue;
      TEST_ASSERT(false, `unexpected exit ${exit_reason_str(exit_reason(vcpu))} from the guest${r.detail ? `: ${r.detail}` : ''}`);
    }
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    if (uc.cmd === UCALL_SYNC && uc.args[1] === GUEST_CHECK_STAGE) {
      const i = Number(uc.args[2]);
      TEST_ASSERT(i >= 0 && i < names.length && !seen.has(i), `the guest reported check ${i} twice or out of range`);
      seen.add(i);
      if (uc.args[3] !== 1n && uc.buffer) ksft_print_msg(`${names[i]}: ${uc.buffer}`);
      ksft_test_result(uc.args[3] === 1n, names[i]);
      continue;
    }
    if (uc.cmd === UCALL_SYNC || uc.cmd === UCALL_DONE) return uc;
    TEST_ASSERT(false, `unexpected ucall ${uc.cmd}`);
  }
}

/** Host side: report every check the guest never got to as failed (so the plan still adds up). */
export function guest_checks_missing(names: readonly string[], seen: Set<number>, why: string): void {
  names.forEach((n, i) => {
    if (!seen.has(i)) ksft_test_result(false, `${n} (${why})`);
  });
}

export { UCALL_DONE };
