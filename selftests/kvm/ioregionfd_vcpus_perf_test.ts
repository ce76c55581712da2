// ioregionfd_vcpus_perf_test: aggregate ioregionfd read rate as vCPUs are added.
//
//   ioregionfd_read_rate_vcpus_N         N = 1, 2, 4 vCPUs, each on its own region, fd and testdev task:
//                                        should grow up to the number of cores
//   ioregionfd_read_rate_vcpus_N_shared  N = 2, 4 vCPUs on one region and one fd: correct but
//                                        serialized (one command in flight per read fd); this is its cost
//
// One VMM thread runs all vCPUs of a case (KVM_RUN sent to each, then awaited). The cases' rounds
// are interleaved (lib/perf.ts, perf_run_interleaved), so their ratios can be taken round by round.

import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan } from '../kselftest';
import { kvm_has_cap } from './lib/kvm_util';
import { perf_options, perf_run_interleaved, perf_selected } from './lib/perf';
import { ioregionfd_read_rate_case } from './lib/perf_cases';
import { TEST_REQUIRE } from './lib/test_util';

async function main(): Promise<void> {
  const o = perf_options();
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  const all: [string, number, boolean][] = [
    ['ioregionfd_read_rate_vcpus_1', 1, false],
    ['ioregionfd_read_rate_vcpus_2', 2, false],
    ['ioregionfd_read_rate_vcpus_4', 4, false],
    ['ioregionfd_read_rate_vcpus_2_shared', 2, true],
    ['ioregionfd_read_rate_vcpus_4_shared', 4, true],
  ];
  const selected = all.filter(([name]) => perf_selected(o, name));
  ksft_set_plan(selected.length);
  ksft_print_msg(`${o.reps} measured rounds per case after one warm-up round, all cases interleaved round by round` +
    `${o.quick ? ' (--quick: smoke run, numbers are not meaningful)' : ''}`);
  await perf_run_interleaved(o, selected.map(([name, n, shared]) => ioregionfd_read_rate_case(o, name, n, shared)));
  ksft_finished();
}

if (require.main === module) void main();
