// dispatch_perf_test: what each way of getting a guest access to a device task costs, side by side.
//
// Every case below is set up first; then round r of all of them runs before round r+1 of any
// (lib/perf.ts, perf_run_interleaved), so the load of a shared machine falls on all alike and
// run_bench can take the ratios round by round.
//
//   floor_c_rtt                       C <-> C over a SOCK_SEQPACKET socketpair (no KVM model)
//   floor_node_rtt                    Node <-> Node, the same
//   floor_c_rtt_polled                floor_c_rtt with both ends spinning before they block, as the
//                                     model's vCPU threads and device tasks do by default
//   ioregionfd_read_rtt               guest readl -> testdev task -> guest, one vCPU, one region
//   ioregionfd_read_rtt_no_poll       the same with polling off at both ends (the path before polling)
//   ioregionfd_read_rtt_1000_regions  the same with 999 more regions on the MMIO bus
//   ioregionfd_write_rtt              non-posted guest writel
//   exit_path_read_rtt                the same readl with no region: KVM_EXIT_MMIO to this process,
//                                     which forwards to a testdev task and completes with KVM_RUN
//   mmio_exit_rtt                     the bare exit: KVM_EXIT_MMIO to this process, completed from
//                                     kvm_run with no device, then KVM_RUN
//   floor_c_rtt_placed                floor_c_rtt with both processes on one CPU
//   ioregionfd_read_rtt_placed        ioregionfd_read_rtt with the vCPU thread and the task on that CPU
//   floor_c_posted_rate               C one-way 32-byte writes per second
//   floor_c_posted_rate_polled        the same, both ends spinning before they block
//   floor_node_posted_rate            Node one-way 32-byte writes per second
//   ioregionfd_posted_write_rate      posted guest writel per second, device consuming
//   ioeventfd_write_rate              doorbell writes per second through KVM_IOEVENTFD
//
// The C floor cases are skipped when no C compiler is found, ioeventfd_write_rate when the
// kernel-model lacks KVM_CAP_IOEVENTFD.

import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan } from '../kselftest';
import { kvm_has_cap } from './lib/kvm_util';
import { PerfCase, perf_options, perf_run_interleaved, perf_selected, perf_skip, PerfUnit } from './lib/perf';
import { exit_path_read_case, FILLERS, ioeventfd_write_case, ioregionfd_read_case, ioregionfd_write_case, mmio_exit_case } from './lib/perf_cases';
import { build_c_floor, c_floor_case, CFloorMode, node_floor_case } from './lib/perf_floor';
import { DEFAULT_POLL_NS } from '../../proto/spin-poll';
import { TEST_REQUIRE } from './lib/test_util';
import { getAffinity } from '../../proto/os';

async function main(): Promise<void> {
  const o = perf_options();
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');

  type Maker = () => PerfCase | string;
  let cFloor: ReturnType<typeof build_c_floor> | undefined;
  const c = (name: string, posted: boolean, mode?: CFloorMode): Maker => () => {
    cFloor ??= build_c_floor();
    return typeof cFloor === 'string' ? cFloor : c_floor_case(o, cFloor, name, posted, mode);
  };
  // Placement: a vCPU thread and its device task on one CPU, as vhost and SPDK deployments place
  // them; the last CPU this process may use, so CPU 0's interrupt work stays apart where it can.
  const placed = getAffinity(0).at(-1)!;
  const all: [string, PerfUnit, Maker][] = [
    ['floor_c_rtt', 'us', c('floor_c_rtt', false)],
    ['floor_node_rtt', 'us', () => node_floor_case(o, 'floor_node_rtt', false)],
    ['floor_c_rtt_polled', 'us', c('floor_c_rtt_polled', false, { pollNs: DEFAULT_POLL_NS })],
    ['ioregionfd_read_rtt', 'us', () => ioregionfd_read_case(o, 'ioregionfd_read_rtt')],
    ['ioregionfd_read_rtt_no_poll', 'us', () => ioregionfd_read_case(o, 'ioregionfd_read_rtt_no_poll', { noPoll: true })],
    ['ioregionfd_read_rtt_1000_regions', 'us', () => ioregionfd_read_case(o, 'ioregionfd_read_rtt_1000_regions', { fillers: FILLERS })],
    ['floor_c_rtt_placed', 'us', c('floor_c_rtt_placed', false, { cpu: placed })],
    ['ioregionfd_read_rtt_placed', 'us', () => ioregionfd_read_case(o, 'ioregionfd_read_rtt_placed', { cpu: placed })],
    ['ioregionfd_write_rtt', 'us', () => ioregionfd_write_case(o, 'ioregionfd_write_rtt', false)],
    ['exit_path_read_rtt', 'us', () => exit_path_read_case(o, 'exit_path_read_rtt')],
    ['mmio_exit_rtt', 'us', () => mmio_exit_case(o, 'mmio_exit_rtt')],
    ['floor_c_posted_rate', 'ops/s', c('floor_c_posted_rate', true)],
    ['floor_c_posted_rate_polled', 'ops/s', c('floor_c_posted_rate_polled', true, { pollNs: DEFAULT_POLL_NS })],
    ['floor_node_posted_rate', 'ops/s', () => node_floor_case(o, 'floor_node_posted_rate', true)],
    ['ioregionfd_posted_write_rate', 'ops/s', () => ioregionfd_write_case(o, 'ioregionfd_posted_write_rate', true)],
    ['ioeventfd_write_rate', 'ops/s', () => ioeventfd_write_case(o, 'ioeventfd_write_rate')],
  ];
  const selected = all.filter(([name]) => perf_selected(o, name));
  ksft_set_plan(selected.length);
  ksft_print_msg(`${o.reps} measured rounds per case after one warm-up round, all cases interleaved round by round` +
    `${o.quick ? ' (--quick: smoke run, numbers are not meaningful)' : ''}`);

  const cases: PerfCase[] = [];
  for (const [name, unit, make] of selected) {
    const made = make();
    if (typeof made === 'string') perf_skip(name, unit, made);
    else cases.push(made);
  }
  try {
    await perf_run_interleaved(o, cases);
  } finally {
    if (cFloor && typeof cFloor !== 'string') cFloor.dispose();
  }
  ksft_finished();
}

if (require.main === module) void main();
