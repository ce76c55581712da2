// nvme_qemu_perf_test: QEMU's NVMe controller (hw/nvme in a multi-process QEMU behind the qemu-remote
// bridge) beside our nvme device task, with the same guest driver (nvme_perf_test's guest), on sparse
// images of the same size: 4 KiB random reads at QD 1 and QD 32, all four cases interleaved round by
// round so their ratios are paired.
//
//   nvme_randread_qd{1,32}_qemu       guest -> kernel-model -> bridge task -> MPQemu socket -> QEMU;
//                                     completions by INTx: QEMU's eventfd -> KVM_IRQFD with resample,
//                                     the guest's EOI -> resamplefd -> QEMU
//   nvme_randread_qd{1,32}_intx_ref   our nvme task over ioregionfd (doorbells posted), the driver in
//                                     the same one-line interrupt mode (an irqfd without resample)
//
// The guest's interrupt mode is 'intx' in both: QEMU's remote has no MSI-X. nvme_perf_test measures
// our task with one vector per CQ. Skips every case (not the program) without qemu-system-x86_64.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KVM_CAP_IOREGIONFD, KVM_CAP_IRQFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan } from '../kselftest';
import { kvm_has_cap } from './lib/kvm_util';
import { NVME_BAR0, NVME_BAR0_SIZE, nvme_vmm_start } from './lib/nvme_vmm';
import { PerfCase, perf_options, perf_run_interleaved, perf_selected, perf_skip } from './lib/perf';
import { qemu_system_x86_64, spawn_qemu_device } from './lib/qemu_device';
import { TEST_REQUIRE } from './lib/test_util';
import { Extras, GSI_BASE, IMAGE_BYTES, nvme_workload, report } from './nvme_perf_test';

/** Both controllers queue up to 128 entries per I/O queue here (the guest asks for 128; QEMU allows 2048). */
const QUEUE_ENTRIES = 128;
/** The report's per-round extras: p50, p99, doorbells, irqs. */
const EXTRAS_PER_CASE = 4;

function sparseImage(file: string): string {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, IMAGE_BYTES);
  return file;
}

async function main(): Promise<void> {
  const o = perf_options();
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IRQFD), 'kvm_has_cap(KVM_CAP_IRQFD)');
  const names = [1, 32].flatMap((qd) => [`nvme_randread_qd${qd}_qemu`, `nvme_randread_qd${qd}_intx_ref`]);
  const selected = names.filter((n) => perf_selected(o, n));
  const qemu = qemu_system_x86_64();
  if (qemu.path === undefined) {
    // The pairs only mean something together: without QEMU none runs, and that is not a failure.
    ksft_set_plan(selected.length);
    for (const name of selected) perf_skip(name, 'ops/s', qemu.reason ?? 'no QEMU');
    ksft_finished();
  }
  ksft_set_plan(selected.length * (1 + EXTRAS_PER_CASE));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme_qemu_perf_test-'));
  try {
    ksft_print_msg(`${o.reps} measured rounds per case after one warm-up round, all cases interleaved round by round` +
      `${o.quick ? ' (--quick: smoke run, numbers are not meaningful)' : ''}; sparse ${IMAGE_BYTES >> 20} MiB images in ${dir}`);
    const extras: Extras[] = [];
    const cases: PerfCase[] = selected.map((name, i) => {
      const e: Extras = { name, p50: [], p99: [], doorbells: [], irqs: [], ns: [] };
      extras.push(e);
      const qd = name.includes('_qd32_') ? 32 : 1;
      // One image per case: two QEMU processes cannot both hold one image's write lock.
      const image = sparseImage(path.join(dir, `${name}.img`));
      const isQemu = name.endsWith('_qemu');
      return nvme_workload(o, {
        write: false, qd, intx: true, shadow: false, seed: 0x5eed + qd * 7 + i,
        note: isQemu
          ? "QEMU's nvme (multi-process QEMU) behind the qemu-remote bridge, BAR0 as one ioregion with posted writes, INTx through an irqfd with resample"
          : 'our nvme device task, BAR0 registers as a synchronous ioregion and doorbells as posted writes, every CQ on one irqfd (the driver\'s INTx mode)',
        start: (vm) => {
          if (!isQemu) return nvme_vmm_start({ vm, path: 'ioregionfd', config: { image, queues: 2, queue_entries: QUEUE_ENTRIES }, vectors: 1, gsiBase: GSI_BASE });
          const dev = spawn_qemu_device({
            vm, device: 'nvme', drive: image, props: { serial: 'nvme-qemu-perf', max_ioqpairs: 2 },
            bars: { 0: { gpa: NVME_BAR0, size: NVME_BAR0_SIZE, posted: true } }, intx_gsi: GSI_BASE,
          });
          dev.closeChannelFds();
          return { bar0: NVME_BAR0, stop: () => dev.stop() };
        },
      }, e);
    });
    await perf_run_interleaved(o, cases);
    extras.forEach(report);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  ksft_finished();
}

if (require.main === module) void main();
