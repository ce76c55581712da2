// nvme_perf_test: 4 KiB random reads and writes through the NVMe device task at queue depth 1 and 32,
// on a sparse image of 256 MiB, with the doorbells on each path:
//
//   ioregionfd   BAR0 doorbells as posted ioregionfd writes (no shadow doorbells)
//   ioeventfd    I/O queue doorbells as KVM_IOEVENTFDs + shadow doorbells with EventIdx
//   exit         the classic path: each doorbell write is a KVM_EXIT_MMIO the VMM (this process)
//                forwards to the device task, then KVM_RUN
//
// plus the floor: the device's own backing-store code (FileStore) doing the same 4 KiB random
// preads / pwrites on the same image in a loop, no guest, no queues. Every case is its own VM and
// device task, set up first; their rounds are interleaved (lib/perf.ts). The guest times its own
// loop and every I/O (submission to completion seen), and counts its MMIO doorbell writes and
// interrupt handler runs, so each case also reports p50/p99 latency and doorbell writes and
// interrupts per second (per I/O: the ratio to the IOPS case, see run_bench's RATIOS).

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FileStore } from '../../device-task/devices/nvme/backing-store';
import { KVM_CAP_IOEVENTFD, KVM_CAP_IOREGIONFD, KVM_CAP_IRQFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan } from '../kselftest';
import { GUEST_DONE, GUEST_SYNC_ARGS, guest_ram, hlt } from './lib/guest';
import { vm_create_irqchip } from './lib/irq';
import { ExitStatus } from './lib/device_task';
import { addr_gpa2hva, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, vcpu_args_set, vm_alloc, vm_create, vm_vcpu_add } from './lib/kvm_util';
import { nvme_cmd, nvme_rw, NvmeController, NvmeDmaArena } from './lib/nvme';
import { NvmeDoorbellPath, nvme_vmm_start } from './lib/nvme_vmm';
import {
  now_ns, PerfCase, PerfOptions, perf_guest_next, perf_ops, perf_options, perf_report, perf_run_interleaved, perf_selected,
  perf_summarize, PerfUnit,
} from './lib/perf';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

export const IMAGE_BYTES = 256 << 20;
const IO_BYTES = 4096;
export const GSI_BASE = 8;
const ARENA_SIZE = 1 << 20;
const QUEUE_ENTRIES = 128;
const PATHS: NvmeDoorbellPath[] = ['ioregionfd', 'ioeventfd', 'exit'];
const OPS = { 1: 2000, 32: 10000 } as const;
const FLOOR_OPS = 20000;

/** Guest <-> host block: config from the host, per-round extras from the guest (f64 each). */
const CFG = { write: 0, qd: 1, shadow: 2, warmup: 3, ops: 4, reps: 5, seed: 6, intx: 7 } as const;
const OUT = { p50: 8, p99: 9, doorbells: 10, irqs: 11 } as const;
const BLOCK_WORDS = 16;

/**
 * The guest: probe, one I/O queue pair on vector 1 (or, with `intx`, every CQ on one interrupt line,
 * as a controller behind an INTx pin has it), shadow doorbells if asked, then rounds of random 4 KiB
 * I/O keeping `qd` commands in flight: a completion (reaped by the interrupt handler) frees a slot,
 * which the main loop refills at once, ringing per command as fio with iodepth_batch 1 does.
 */
export function nvme_bench_guest(bar0: bigint, arenaBase: bigint, arenaSize: bigint, gsiBase: bigint, block: bigint): void {
  const io = guest_ram(block, BLOCK_WORDS * 8);
  const b = new Float64Array(io.buffer, io.byteOffset, BLOCK_WORDS);
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const intx = b[CFG.intx] === 1;
  const ctrl = NvmeController.probe({ bar0, arena, interrupts: intx ? 'intx' : 'msix', gsiBase: Number(gsiBase) });
  const irqVector = intx ? 0 : 1;
  const ns = ctrl.identifyNamespace(1);
  if (typeof ns === 'number') throw new Error(`Identify Namespace: status ${ns}`);
  const sq = ctrl.createPair(1, QUEUE_ENTRIES, { vector: 1 });
  if (b[CFG.shadow] && ctrl.configureShadowDoorbells() !== 0) throw new Error('Doorbell Buffer Config failed');
  const qd = b[CFG.qd];
  const opcode = b[CFG.write] ? nvme_cmd.write : nvme_cmd.read;
  const nlb = IO_BYTES >> ns.lbaShift;
  const slots = Number(ns.blocks) / nlb;
  const bufs = Array.from({ length: qd }, () => arena.alloc(IO_BYTES));
  const started = new Float64Array(qd);
  const slotOf = new Map<number, number>();
  let x = b[CFG.seed] >>> 0 || 1;
  // Completions arrive in the interrupt handler; the main loop takes them (no CPU call between the
  // swap and the read, so no handler runs in between).
  let arrived: number[] = [];
  let arrivedAt: number[] = [];
  sq.cq.onComplete = (c) => {
    if (c.status !== 0) throw new Error(`I/O failed: status 0x${c.status.toString(16)}`);
    arrived.push(c.cid);
    arrivedAt.push(performance.now());
  };
  const submit = (slot: number): void => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const lba = BigInt((x % slots) * nlb);
    started[slot] = performance.now();
    const cid = sq.submit(nvme_rw(opcode, 1, lba, nlb, { prp1: bufs[slot], prp2: 0n }));
    slotOf.set(cid, slot);
  };
  const reps = b[CFG.reps];
  for (let r = 0; r <= reps; r++) {
    const n = r === 0 ? b[CFG.warmup] : b[CFG.ops];
    const lat = new Float64Array(n);
    const db0 = ctrl.stats.sqDoorbells + ctrl.stats.cqDoorbells;
    const irq0 = ctrl.interrupts[irqVector] ?? 0;
    let submitted = 0;
    let done = 0;
    const t0 = process.hrtime.bigint();
    for (let s = 0; s < qd && submitted < n; s++, submitted++) submit(s);
    while (done < n) {
      if (arrived.length === 0) hlt();
      const cids = arrived;
      const at = arrivedAt;
      arrived = [];
      arrivedAt = [];
      for (let i = 0; i < cids.length; i++) {
        const slot = slotOf.get(cids[i])!;
        slotOf.delete(cids[i]);
        lat[done++] = at[i] - started[slot];
        if (submitted < n) {
          submit(slot);
          submitted++;
        }
      }
    }
    const t1 = process.hrtime.bigint();
    lat.sort();
    b[OUT.p50] = lat[Math.floor(0.5 * (n - 1))] * 1e6;
    b[OUT.p99] = lat[Math.floor(0.99 * (n - 1))] * 1e6;
    b[OUT.doorbells] = ctrl.stats.sqDoorbells + ctrl.stats.cqDoorbells - db0;
    b[OUT.irqs] = (ctrl.interrupts[irqVector] ?? 0) - irq0;
    GUEST_SYNC_ARGS(r, n, t0, t1);
  }
  ctrl.shutdown();
  GUEST_DONE();
}

/** Per-round extras of one workload, reported as their own cases after the interleaved run. */
export interface Extras {
  name: string;
  p50: number[];
  p99: number[];
  doorbells: number[];
  irqs: number[];
  ns: number[];
}

const GUEST_TIMED = 'the guest (hrtime around its I/O loop in the vCPU thread; latency per I/O from submission to the completion seen by its interrupt handler)';

/** What a workload runs on: BAR0 where the guest finds it, the exits the VMM completes, how to stop it. */
export interface BenchDevice {
  bar0: bigint;
  handleExit?(vcpu: KvmVcpu): boolean;
  /** After kvm_vm_free: wait for the device task to exit. */
  stop(): Promise<ExitStatus>;
}

export interface WorkloadSpec {
  write: boolean;
  qd: 1 | 32;
  /** The driver's interrupt mode: every CQ on vector 0 (one line) instead of one vector per CQ. */
  intx: boolean;
  shadow: boolean;
  seed: number;
  /** What the device and its path are, for the report. */
  note: string;
  /** Start the device for `vm` (which has an irqchip): its interrupt vector 0 raises GSI_BASE. */
  start(vm: KvmVm): BenchDevice;
}

/** One case: a VM whose guest runs nvme_bench_guest against the device `w.start` gives it. */
export function nvme_workload(o: PerfOptions, w: WorkloadSpec, extras: Extras): PerfCase {
  const name = extras.name;
  const ops = perf_ops(o, OPS[w.qd], w.qd === 1 ? 50 : 200);
  const warmup = Math.max(w.qd, Math.round(ops / 10));
  const vm = vm_create(ARENA_SIZE);
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, nvme_bench_guest);
  const arena = vm_alloc(vm, ARENA_SIZE, 4096);
  const block = vm_alloc(vm, BLOCK_WORDS * 8, 64);
  const dev = w.start(vm);
  const bytes = addr_gpa2hva(vm, block, BLOCK_WORDS * 8);
  const b = new Float64Array(bytes.buffer, bytes.byteOffset, BLOCK_WORDS);
  b[CFG.write] = w.write ? 1 : 0;
  b[CFG.qd] = w.qd;
  b[CFG.shadow] = w.shadow ? 1 : 0;
  b[CFG.warmup] = warmup;
  b[CFG.ops] = ops;
  b[CFG.reps] = o.reps;
  b[CFG.seed] = w.seed;
  b[CFG.intx] = w.intx ? 1 : 0;
  vcpu_args_set(vcpu, dev.bar0, arena, ARENA_SIZE, GSI_BASE, block);
  const onExit = (v: KvmVcpu) => dev.handleExit?.(v) ?? false;
  return {
    name, unit: 'ops/s', timing: GUEST_TIMED, note: `${w.note}; ${w.write ? 'writes' : 'reads'} of 4 KiB at random 4 KiB-aligned offsets of a 256 MiB image, QD ${w.qd}`,
    round(r) {
      const g = perf_guest_next(vcpu, onExit);
      TEST_ASSERT(g !== undefined && g.round === r, `${name}: the guest reported round ${g?.round}, expected ${r}`);
      const ns = Number(g.t1 - g.t0);
      if (r > 0) {
        extras.p50.push(b[OUT.p50]);
        extras.p99.push(b[OUT.p99]);
        extras.doorbells.push(b[OUT.doorbells]);
        extras.irqs.push(b[OUT.irqs]);
        extras.ns.push(ns);
      }
      return { ops: g.ops, ns };
    },
    async finish() {
      TEST_ASSERT(perf_guest_next(vcpu, onExit) === undefined, `${name}: the guest did not finish`);
      kvm_vm_free(vm);
      const st = await dev.stop();
      TEST_ASSERT(st.code === 0, `${name}: the device task exited with ${st.code ?? st.signal}`);
    },
  };
}

/** Our nvme device task on `image`, its doorbells by path `p`. */
function workload(o: PerfOptions, image: string, p: NvmeDoorbellPath, write: boolean, qd: 1 | 32, extras: Extras): PerfCase {
  const note = {
    ioregionfd: 'doorbells as posted ioregionfd writes, registers as a synchronous ioregion, no shadow doorbells',
    ioeventfd: 'I/O doorbells as KVM_IOEVENTFDs read from the shadow doorbell page (Doorbell Buffer Config, EventIdx)',
    exit: 'every BAR0 access is a KVM_EXIT_MMIO this VMM forwards to the device task (doorbells posted), then KVM_RUN',
  }[p];
  return nvme_workload(o, {
    write, qd, intx: false, shadow: p === 'ioeventfd', note,
    seed: 0x1234 + qd * 7 + (write ? 1 : 0) + PATHS.indexOf(p) * 101,
    start: (vm) => nvme_vmm_start({ vm, path: p, config: { image, queues: 2, queue_entries: QUEUE_ENTRIES }, vectors: 2, gsiBase: GSI_BASE, ioQueues: 1 }),
  }, extras);
}

/** The floor: FileStore (the device's own I/O code) doing 4 KiB random preads or pwrites on the image. */
function floor(o: PerfOptions, image: string, write: boolean, name: string): PerfCase {
  const ops = perf_ops(o, FLOOR_OPS, 200);
  const store = FileStore.open(image);
  const buf = new Uint8Array(IO_BYTES);
  const slots = store.size / IO_BYTES;
  let x = write ? 0xbeef : 0xfeed;
  return {
    name, unit: 'ops/s', timing: 'this process (hrtime around the loop)',
    note: `the device task's FileStore ${write ? 'write' : 'read'} (positioned ${write ? 'pwrite' : 'pread'}) of 4 KiB at random 4 KiB-aligned offsets of the same image, no guest`,
    round(r) {
      const n = r === 0 ? Math.round(ops / 10) : ops;
      const t0 = now_ns();
      for (let i = 0; i < n; i++) {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        const pos = (x % slots) * IO_BYTES;
        TEST_ASSERT(write ? store.write(pos, [buf]) : store.read(pos, [buf]), `${name}: I/O failed`);
      }
      return { ops: n, ns: Number(now_ns() - t0) };
    },
    async finish() {
      store.close();
    },
  };
}

/** The per-round extras of a workload as their own cases: p50, p99, doorbells and interrupts per second. */
export function report(e: Extras): void {
  const reps = e.ns.map((ns, i) => ({ i, ns }));
  const us = (v: number[], what: string, suffix: string) =>
    perf_report({ ...perf_summarize(`${e.name}_${suffix}`, 'us', reps.map(({ i }) => ({ ops: 1, ns: v[i] })), GUEST_TIMED), note: what });
  us(e.p50, 'median I/O latency of each round', 'p50');
  us(e.p99, '99th percentile I/O latency of each round', 'p99');
  const rate = (v: number[], what: string, suffix: string) =>
    perf_report({ ...perf_summarize(`${e.name}_${suffix}`, 'ops/s' as PerfUnit, reps.map(({ i, ns }) => ({ ops: v[i], ns })), GUEST_TIMED), note: what });
  rate(e.doorbells, 'MMIO doorbell writes by the guest per second (per I/O: divide by the IOPS case)', 'doorbells');
  rate(e.irqs, 'interrupts taken by the guest per second (per I/O: divide by the IOPS case)', 'irqs');
}

async function main(): Promise<void> {
  const o = perf_options();
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IRQFD), 'kvm_has_cap(KVM_CAP_IRQFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOEVENTFD), 'kvm_has_cap(KVM_CAP_IOEVENTFD)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme_perf_test-'));
  const image = path.join(dir, 'bench.img');
  try {
    // A sparse image: the reads hit holes and page cache, as they do for the floor.
    fs.closeSync(fs.openSync(image, 'w'));
    fs.truncateSync(image, IMAGE_BYTES);
    const work: { name: string; make: () => PerfCase; extras?: Extras }[] = [];
    for (const rw of ['randread', 'randwrite'] as const) {
      work.push({ name: `nvme_${rw}_floor`, make: () => floor(o, image, rw === 'randwrite', `nvme_${rw}_floor`) });
      for (const qd of [1, 32] as const) {
        for (const p of PATHS) {
          const name = `nvme_${rw}_qd${qd}_${p}`;
          const extras: Extras = { name, p50: [], p99: [], doorbells: [], irqs: [], ns: [] };
          work.push({ name, extras, make: () => workload(o, image, p, rw === 'randwrite', qd, extras) });
        }
      }
    }
    const selected = work.filter((w) => perf_selected(o, w.name));
    const bestOf = ['nvme_randread_qd32_ioregionfd', 'nvme_randread_qd32_ioeventfd'];
    const best = bestOf.every((n) => selected.some((w) => w.name === n));
    ksft_set_plan(selected.length + 4 * selected.filter((w) => w.extras).length + (best ? 1 : 0));
    ksft_print_msg(`${o.reps} measured rounds per case after one warm-up round, all cases interleaved round by round` +
      `${o.quick ? ' (--quick: smoke run, numbers are not meaningful)' : ''}; image ${IMAGE_BYTES >> 20} MiB (sparse) in ${dir}`);
    const cases = selected.map((w) => w.make());
    const rounds = new Map<string, { ops: number; ns: number }[]>();
    // Keep each workload's measured rounds for the "best of" case.
    const measured = cases.map((c) => ({
      ...c,
      round(r: number) {
        const res = c.round(r);
        if (r > 0) rounds.set(c.name, [...(rounds.get(c.name) ?? []), res]);
        return res;
      },
      finish: () => c.finish(),
    }));
    await perf_run_interleaved(o, measured);
    for (const w of selected) if (w.extras) report(w.extras);
    if (best) {
      // Per round, the faster of the two direct paths (their rounds ran back to back).
      const all = bestOf.map((n) => rounds.get(n)!);
      const rate = (x: { ops: number; ns: number }) => x.ops / x.ns;
      const reps = all[0].map((_, i) => all.map((r) => r[i]).reduce((m, x) => (rate(x) > rate(m) ? x : m)));
      perf_report({ ...perf_summarize('nvme_randread_qd32_best', 'ops/s', reps, GUEST_TIMED), note: `per round, the faster of ${bestOf.join(' and ')}` });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  ksft_finished();
}

if (require.main === module) void main();
