// The churn campaign: VMs created and destroyed over and over in one long-lived kernel-model, each
// with memslots, 1-4 vCPUs running guest code, ioregions (some served by a device task), an ioeventfd
// and an irqfd. It counts what a cycle leaves behind in the kernel-model (fds, threads, mappings,
// RSS) and device tasks that outlive their VM.

import { Rng } from '../../device-task/sdk/conformance';
import { EventFd, Kvm, KVM_IOREGION_POSTED_WRITES, spawnDeviceTask, type DeviceTask, type Vcpu, type Vm } from '../../vmm';
import { closeQuietly, socketpair } from '../../proto/os';
import { fd_readable } from '../kvm/lib/ioeventfd';
import { Campaign, CampaignResult, emptyResult } from './campaign';
import { churn_guest } from './churn_guest';
import { processAlive, sampleProcess, settled, sleep, type ProcSample } from './proc';

const RAM_GPA = 0n;
const RAM_BYTES = 64 * 1024;
const EXTRA_SLOT_GPA = 0x10_0000n;
const REGION_GPA = 0xd000_0000n;
const DOORBELL_GPA = 0xe000_0000n;
const GSI = 5;
const MAX_VCPUS = 4;
/** A guest does at most a few hundred accesses: far longer than this is a hang. */
const RUN_BOUND_MS = 20_000;
/** How long a device task may take to see EOF and exit once its VM is gone. */
const TASK_EXIT_BOUND_MS = 5000;
/** The cycle after which RSS is taken as the reference (the "after the first 100"). */
const REFERENCE_CYCLE = 100;

/** A VM of one cycle and what the VMM holds for it. */
interface CycleVm {
  vm: Vm;
  vcpus: Vcpu[];
  task: DeviceTask | undefined;
  eventfds: EventFd[];
  doorbell: EventFd | undefined;
}

/** Build one VM as the seed says; the first cycle has the most vCPUs, so the thread pool is full-sized from then on. */
function buildVm(kvm: Kvm, rng: Rng, cycle: number): CycleVm {
  const vm = kvm.createVm();
  const out: CycleVm = { vm, vcpus: [], task: undefined, eventfds: [], doorbell: undefined };
  try {
    const irqchip = rng.below(2) === 0;
    if (irqchip) vm.createIrqchip();
    vm.addMemory(0, RAM_GPA, RAM_BYTES);
    if (rng.below(2) === 0) vm.addMemory(1, EXTRA_SLOT_GPA, 16 * 1024);
    const regions = 1 + rng.below(3);
    if (rng.below(2) === 0) {
      out.task = spawnDeviceTask({ device: 'testdev', vm, regions: [{ guest_paddr: REGION_GPA, memory_size: 8n }] });
      // From here on only the region holds the channel: the task's EOF is KVM letting go of it.
      out.task.closeChannelFds();
    }
    for (let r = out.task ? 1 : 0; r < regions; r++) {
      // Regions nobody serves (the guest never touches them): KVM holds its end, the other is closed.
      const [kvmEnd, devEnd] = socketpair('seqpacket');
      try {
        vm.setIoregion({
          guest_paddr: REGION_GPA + BigInt(r) * 0x1000n, memory_size: 8n, read_fd: kvmEnd, write_fd: kvmEnd,
          flags: rng.below(2) ? KVM_IOREGION_POSTED_WRITES : 0,
        });
      } finally {
        closeQuietly(kvmEnd);
        closeQuietly(devEnd);
      }
    }
    if (rng.below(4) !== 0) {
      out.doorbell = EventFd.create();
      out.eventfds.push(out.doorbell);
      vm.ioeventfd({ addr: DOORBELL_GPA, len: 4, fd: out.doorbell.fd });
    }
    if (irqchip) {
      const irq = EventFd.create();
      out.eventfds.push(irq);
      vm.irqfd({ gsi: GSI, fd: irq.fd });
      irq.signal();
    }
    const n = cycle === 1 ? MAX_VCPUS : 1 + rng.below(MAX_VCPUS);
    for (let id = 0; id < n; id++) {
      const v = vm.createVcpu(id);
      v.setEntry(churn_guest);
      const dev = id === 0 && out.task ? REGION_GPA : 0n;
      v.setArgs(RAM_GPA, dev, out.doorbell ? DOORBELL_GPA : 0n, rng.u64() >> 8n, 1 + rng.below(8));
      out.vcpus.push(v);
    }
    return out;
  } catch (e) {
    freeVm(out);
    throw e;
  }
}

function freeVm(c: CycleVm): void {
  c.vm.close();
  c.eventfds.forEach((e) => e.close());
}

/** Run every vCPU to its end at once; what went wrong, if anything ('hang' for a vCPU past the bound). */
function runVcpus(c: CycleVm): string[] {
  const problems: string[] = [];
  c.vcpus.forEach((v) => v.runStart());
  const deadline = Date.now() + RUN_BOUND_MS;
  for (const v of c.vcpus) {
    if (!fd_readable(v.fd, Math.max(0, deadline - Date.now()))) {
      problems.push(`hang: vCPU ${v.id} KVM_RUN did not return in ${RUN_BOUND_MS} ms`);
      continue;
    }
    const r = v.runWait();
    const exit = v.exit();
    if (r.ret !== 0 || exit.reason !== 'shutdown') {
      problems.push(`vCPU ${v.id}: KVM_RUN ret ${r.ret} errno ${r.errno}, exit ${exit.reason}: ${v.exitDetail.split('\n')[0]}`);
    }
  }
  if (c.doorbell && c.doorbell.take() === 0n) problems.push('the ioeventfd doorbell was never signalled');
  return problems;
}

/** Resolves true if the task exited within `ms`. */
async function exitedWithin(task: DeviceTask, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const done = await Promise.race([task.exited.then(() => true), timeout]);
  clearTimeout(timer);
  return done;
}

function record(figures: Record<string, number>, name: string, s: ProcSample): void {
  figures[`fds_${name}`] = s.fds;
  figures[`threads_${name}`] = s.threads;
  figures[`mappings_${name}`] = s.mappings;
  figures[`rss_kb_${name}`] = s.rssKb;
}

/** The kernel-model's resources once the last VM's destruction settled (its fd count stops changing). */
async function settledSample(pid: number): Promise<ProcSample> {
  await settled(() => sampleProcess(pid).fds, -1, 500);
  return sampleProcess(pid);
}

async function run(opts: { iterations: number; seed: number; progress(line: string): void }): Promise<CampaignResult> {
  const result = emptyResult();
  const rng = new Rng(opts.seed);
  const kvm = Kvm.open();
  let kernelModelGone = false;
  void kvm.exited().then(() => (kernelModelGone = true));
  let baseline: ProcSample | undefined;
  let reference: ProcSample | undefined;
  let guestFailures = 0;
  const example = (s: string) => {
    if (result.examples.length < 5) result.examples.push(`seed ${opts.seed} cycle ${result.rounds}: ${s}`);
  };
  const started = Date.now();
  try {
    for (let cycle = 1; cycle <= opts.iterations; cycle++) {
      result.rounds = cycle;
      const c = buildVm(kvm, rng, cycle);
      let problems: string[];
      try {
        problems = runVcpus(c);
      } finally {
        freeVm(c);
      }
      for (const p of problems) {
        if (p.startsWith('hang')) result.hangs++;
        else guestFailures++;
        example(p);
      }
      if (c.task && !(await exitedWithin(c.task, TASK_EXIT_BOUND_MS))) {
        result.leakedProcesses++;
        example(`device task ${c.task.pid} still alive ${TASK_EXIT_BOUND_MS} ms after its VM was freed`);
      }
      await c.task?.stop();
      if (kernelModelGone || !processAlive(kvm.pid)) {
        result.kernelModelExits++;
        example('the kernel-model exited');
        break;
      }
      if (cycle === 1) baseline = await settledSample(kvm.pid);
      if (cycle === REFERENCE_CYCLE) reference = await settledSample(kvm.pid);
      if (cycle % 50 === 0 || cycle === opts.iterations) {
        const s = sampleProcess(kvm.pid);
        opts.progress(`churn: cycle ${cycle}/${opts.iterations}, kernel-model fds ${s.fds} threads ${s.threads} mappings ${s.mappings} rss ${(s.rssKb / 1024).toFixed(1)} MB, ${((Date.now() - started) / 1000).toFixed(0)} s`);
      }
    }
    if (baseline && !kernelModelGone) {
      const last = await settledSample(kvm.pid);
      result.leakedFds = Math.max(0, last.fds - baseline.fds);
      if (result.leakedFds) example(`kernel-model holds ${last.fds} fds after the last VM, ${baseline.fds} after the first`);
      record(result.figures, 'first', baseline);
      if (reference) record(result.figures, `after_${REFERENCE_CYCLE}`, reference);
      record(result.figures, 'last', last);
      if (reference) result.figures.rss_growth_pct = Math.round(((last.rssKb - reference.rssKb) / reference.rssKb) * 1000) / 10;
    }
    result.figures.guest_failures = guestFailures;
    result.figures.cycles_per_s = Math.round((result.rounds / ((Date.now() - started) / 1000)) * 10) / 10;
  } finally {
    kvm.close();
    await Promise.race([kvm.exited(), sleep(5000)]);
  }
  return result;
}

export const churn: Campaign = {
  name: 'churn',
  description: 'VMs with memslots, 1-4 vCPUs, ioregions, device tasks, ioeventfd and irqfd created and destroyed in one kernel-model',
  iterations: 1000,
  shortIterations: 30,
  secondsPerRound: 1,
  run,
};
