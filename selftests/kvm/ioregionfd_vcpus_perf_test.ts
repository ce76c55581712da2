// ioregionfd_vcpus_perf_test: aggregate ioregionfd read rate as vCPUs are added.
//
//   ioregionfd_read_rate_vcpus_N         N = 1, 2, 4 vCPUs, each on its own region, fd and testdev task:
//                                        should grow up to the number of cores
//   ioregionfd_read_rate_vcpus_N_shared  N = 2, 4 vCPUs on one region and one fd: correct but
//                                        serialized (one command in flight per read fd); this is its cost
//   ioregionfd_read_rate_vcpus_1_split,  the same with the vCPU threads on one CPU and the task on
//   ..._vcpus_N_shared_split             another (KVM_EMU_SET_VCPU_AFFINITY, sched_setaffinity): the
//                                        device poller keeps a CPU of its own. Needs 2 CPUs.
//
// One VMM thread runs all vCPUs of a case (KVM_RUN sent to each, then awaited). The cases' rounds
// are interleaved (lib/perf.ts, perf_run_interleaved), so their ratios can be taken round by round.

import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan } from '../kselftest';
import { kvm_has_cap } from './lib/kvm_util';
import { PerfCase, perf_options, perf_run_interleaved, perf_selected, perf_skip } from './lib/perf';
import { getAffinity } from '../../proto/os';
import { ioregionfd_read_rate_case } from './lib/perf_cases';
import { TEST_REQUIRE } from './lib/test_util';

async function main(): Promise<void> {
  const o = perf_options();
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  const cpus = getAffinity(0);
  // The vCPUs on the first CPU this process may use, the task on the last (CPU 0's interrupt work
  // then stays with the vCPUs, which block, rather than with the poller).
  const split: [number, number] | undefined = cpus.length >= 2 ? [cpus[0], cpus.at(-1)!] : undefined;
  const all: [string, number, boolean, boolean][] = [
    ['ioregionfd_read_rate_vcpus_1', 1, false, false],
    ['ioregionfd_read_rate_vcpus_2', 2, false, false],
    ['ioregionfd_read_rate_vcpus_4', 4, false, false],
    ['ioregionfd_read_rate_vcpus_2_shared', 2, true, false],
    ['ioregionfd_read_rate_vcpus_4_shared', 4, true, false],
    ['ioregionfd_read_rate_vcpus_1_split', 1, false, true],
    ['ioregionfd_read_rate_vcpus_2_shared_split', 2, true, true],
    ['ioregionfd_read_rate_vcpus_4_shared_split', 4, true, true],
  ];
  const selected = all.filter(([name]) => perf_selected(o, name));
  ksft_set_plan(selected.length);
  ksft_print_msg(`${o.reps} measured rounds per case after one warm-up round, all cases interleaved round by round` +
    `${o.quick ? ' (--quick: smoke run, numbers are not meaningful)' : ''}`);
  const cases: PerfCase[] = [];
  for (const [name, n, shared, placed] of selected) {
    if (placed && !split) perf_skip(name, 'ops/s', `needs 2 CPUs to split vCPUs and task, this process may use ${cpus.length}`);
    else cases.push(ioregionfd_read_rate_case(o, name, n, shared, placed ? split : undefined));
  }
  await perf_run_interleaved(o, cases);
  ksft_finished();
}

if (require.main === module) void main();
