// qemu_remote_perf_test: what the extra hop to a QEMU device model costs. Two cases, interleaved round
// by round (lib/perf.ts) so their ratio is paired:
//
//   qemu_bar_read_rtt        guest readl of QEMU pci-testdev's BAR0 -> kernel-model -> qemu-remote
//                            bridge task -> BAR_READ over the MPQemu socket -> QEMU -> back
//   ioregionfd_read_rtt_ref  the same guest loop on our testdev task: ioregionfd_read_rtt measured in
//                            this program (a case name is pooled across programs by run_bench, so the
//                            reference carries its own name)
//
// Skips both cases (not the program) when qemu-system-x86_64 with the x-remote machine is missing.

import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan } from '../kselftest';
import { kvm_has_cap, kvm_vm_free, vcpu_args_set, vm_create_with_one_vcpu } from './lib/kvm_util';
import { perf_guest_next, PerfCase, PerfOptions, perf_ops, perf_options, perf_run_interleaved, perf_selected, perf_skip, PerfUnit } from './lib/perf';
import { ioregionfd_read_case, RTT_OPS } from './lib/perf_cases';
import { guest_read_loop } from './lib/perf_guest';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { qemu_system_x86_64, spawn_qemu_device } from './lib/qemu_device';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

/** pci-testdev's BAR0, away from the reference case's testdev region. */
const BAR0 = 0xd000_0000n;
/**
 * writel(BAR0, 0x100) selects test 0 (its low byte goes to offset 0; the other bytes land on offsets
 * the device ignores), and readl(BAR0) then returns that test's first four header bytes, test 0 and
 * width 1: 0x100. So guest_read_loop's echo check holds, and every read is one BAR_READ.
 */
const PATTERN = 0x100n;

function warmup_of(ops: number): number {
  return Math.max(1, Math.round(ops / 10));
}

/** qemu_bar_read_rtt: the guest's readl loop against QEMU's pci-testdev behind the bridge. */
function qemu_bar_read_case(o: PerfOptions, name: string): PerfCase {
  const ops = perf_ops(o, RTT_OPS, 200);
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_read_loop);
  const dev = spawn_qemu_device({ vm, device: 'pci-testdev', bars: { 0: { gpa: BAR0, size: 0x1000n } }, memory: false });
  dev.closeChannelFds();
  vcpu_args_set(vcpu, BAR0, ops, o.reps, warmup_of(ops), PATTERN);
  return {
    name, unit: 'us',
    timing: 'the guest (hrtime around its access loop, in the vCPU thread)',
    note: "QEMU pci-testdev BAR0 through the qemu-remote bridge; the warm-up round also waits for QEMU's start",
    round(r) {
      const g = perf_guest_next(vcpu);
      TEST_ASSERT(g !== undefined && g.round === r, `${name}: the guest reported round ${g?.round}, expected ${r}`);
      return { ops: g.ops, ns: Number(g.t1 - g.t0) };
    },
    async finish() {
      TEST_ASSERT(perf_guest_next(vcpu) === undefined, `${name}: the guest did not finish`);
      const s = vm_ioregion_stats(vm)[0];
      const expected = BigInt(warmup_of(ops) + ops * o.reps);
      TEST_ASSERT(s.reads === expected && s.failures === 0n, `${name}: the region counted ${s.reads} reads (${s.failures} failures), the guest did ${expected}`);
      kvm_vm_free(vm);
      const status = await dev.stop();
      TEST_ASSERT(status.code === 0, `${name}: the bridge task exited ${status.code ?? status.signal}`);
    },
  };
}

async function main(): Promise<void> {
  const o = perf_options();
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  const all: [string, PerfUnit, () => PerfCase][] = [
    ['qemu_bar_read_rtt', 'us', () => qemu_bar_read_case(o, 'qemu_bar_read_rtt')],
    ['ioregionfd_read_rtt_ref', 'us', () => ioregionfd_read_case(o, 'ioregionfd_read_rtt_ref')],
  ];
  const selected = all.filter(([name]) => perf_selected(o, name));
  ksft_set_plan(selected.length);
  const qemu = qemu_system_x86_64();
  if (qemu.path === undefined) {
    // The pair only means something together: without QEMU neither runs, and that is not a failure.
    for (const [name, unit] of selected) perf_skip(name, unit, qemu.reason ?? 'no QEMU');
    ksft_finished();
  }
  ksft_print_msg(`${o.reps} measured rounds per case after one warm-up round, all cases interleaved round by round` +
    `${o.quick ? ' (--quick: smoke run, numbers are not meaningful)' : ''}`);
  await perf_run_interleaved(o, selected.map(([, , make]) => make()));
  ksft_finished();
}

if (require.main === module) void main();
