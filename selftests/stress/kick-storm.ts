// kick-storm: two vCPUs make posted writes, synchronous writes (each value unique: vCPU, round,
// sequence number) and reads through a real device task that logs every command it receives, while
// the VMM kicks them at random, about one kick every three accesses, and sometimes follows the
// interrupted KVM_RUN with one that has immediate_exit set. After each interrupted KVM_RUN it resumes.
//
// Defined (docs/ioregionfd.md §5.5, ioregionfd_signal_test, immediate_exit_test): a kick ends KVM_RUN
// with -1/EINTR and KVM_EXIT_INTR, and the next KVM_RUN resumes the access where it stopped, so the
// device sees each vCPU's writes exactly once, whole, in program order, and every read returns the
// vCPU's own last write (posted writes reach the device before a later read). The device's log is
// compared with each vCPU's program: lost, duplicated, reordered and torn writes are counted; a read
// that did not see the last write counts as reordered.
//
// iterations = guest accesses, spread over VMs of up to ROUND_ACCESSES each, with a fresh device task
// and a seeded transport per VM. The programs, transports and the spacing of kicks (in accesses)
// replay from the seed; which instant of an access a kick lands in depends on timing.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Campaign, CampaignOptions, CampaignResult, emptyResult } from './campaign';
import { compareLog, countComparison, deviceTaskGone, example, KernelModel, waitRun } from './data-path';
import { LOGGING_DEVICE } from './device-kill';
import {
  kick_storm_guest, KS_HALT, KS_POSTED, KS_READ, KS_STATE_BYTES, KS_SYNC, KS_SYNC_OFFSET,
} from './guest-code';
import { LoggingDeviceConfig, readDeviceLog } from './logging-device';
import { Rng } from '../../device-task/sdk/conformance';
import { IoctlResult } from '../../proto/control';
import { EINTR, errnoName } from '../../proto/errno';
import { KVM_EXIT_INTR, KVM_IOREGION_POSTED_WRITES, RUN } from '../../proto/kvm-uapi';
import { PollSet, POLLIN } from '../../proto/os';
import { DeviceTask, spawnDeviceTask, Transport, Vcpu, Vm } from '../../vmm';

const BASE = 0xd0000000n;
const VCPUS = 2;
/** Guest accesses per VM at most. */
const ROUND_ACCESSES = 4000;
const STATE_GPA = 0x1000n;
const OPS_GPA = 0x10000n;
const OPS_STRIDE = 0x10000n;
const RAM_BYTES = Number(OPS_GPA + OPS_STRIDE * BigInt(VCPUS));
/** A round with no progress and no KVM_RUN answer for this long has hung. */
const STALL_MS = 10_000;
const TRANSPORTS: Transport[] = ['seqpacket', 'stream', 'pipe'];
/**
 * The device rests this long after each command. A kick takes a few hundred microseconds to reach
 * the vCPU; against a device this slow, over a third of them land inside an access (waiting for the
 * reply or for room to send) rather than between accesses.
 */
const DEVICE_PAUSE_MS = 0.02;

interface Op {
  kind: bigint;
  value: bigint;
}

/** Accesses between two halts (and so two kicks): 1 to 5, about 2.8 on average (28,000 kicks over 80,000 accesses). */
function kickGap(rng: Rng): number {
  return 1 + rng.below(4) + (rng.below(3) === 0 ? 1 : 0);
}

/**
 * One vCPU's program of n accesses: bursts of posted writes, synchronous writes and reads, values
 * unique per write, and a hlt after every kickGap() accesses.
 */
function program(rng: Rng, vcpu: number, round: number, n: number): Op[] {
  const ops: Op[] = [];
  let accesses = 0;
  let nextHalt = kickGap(rng);
  const add = (kind: bigint) => {
    ops.push({ kind, value: kind === KS_READ ? 0n : (BigInt(vcpu + 1) << 56n) | (BigInt(round & 0xffff) << 32n) | BigInt(ops.length + 1) });
    if (++accesses === nextHalt && accesses < n) {
      ops.push({ kind: KS_HALT, value: 0n });
      nextHalt += kickGap(rng);
    }
  };
  while (accesses < n) {
    const pick = rng.below(4);
    if (pick < 2) {
      for (let burst = 1 + rng.below(6); burst > 0 && accesses < n; burst--) add(KS_POSTED);
    } else {
      add(pick === 2 ? KS_SYNC : KS_READ);
    }
  }
  return ops;
}

class StormError extends Error {
  constructor(message: string, readonly hang = false) {
    super(message);
  }
}

/**
 * Drive the vCPUs to the end of their programs. A vCPU that halted is resumed and then kicked once it
 * has done 0 to 2 more operations (watching its progress in guest RAM), so the kick lands wherever
 * it is by then: waiting for the device, sending, between accesses, or already at its next hlt. A
 * vCPU that a kick interrupted is resumed, a quarter of the time after a KVM_RUN with immediate_exit.
 */
function storm(vm: Vm, vcpus: Vcpu[], rng: Rng): { kicks: number; immediateExits: number; interruptedRuns: number } {
  const running = vcpus.map(() => true);
  const poll = new PollSet(vcpus.length);
  const figures = { kicks: 0, immediateExits: 0, interruptedRuns: 0 };
  const stateBytes = vm.memory(STATE_GPA, KS_STATE_BYTES * vcpus.length);
  const state = new DataView(stateBytes.buffer, stateBytes.byteOffset, stateBytes.length);
  const progress = (i: number) => state.getUint32(KS_STATE_BYTES * i, true);
  /** Per vCPU: the progress at which to kick it, or -1. */
  const kickAt = vcpus.map(() => -1);
  const kick = (i: number) => {
    vcpus[i].kick();
    figures.kicks++;
    kickAt[i] = -1;
  };
  const answered = (i: number, res: IoctlResult): void => {
    const v = vcpus[i];
    if (res.ret === 0) {
      const e = v.exit();
      if (e.reason === 'shutdown') {
        running[i] = false;
        return;
      }
      if (e.reason !== 'hlt') throw new StormError(`vCPU ${i}: exit ${e.reason}${'detail' in e ? `: ${e.detail.split('\n')[0]}` : ''}`);
      // A kick still due when the vCPU reached its hlt is sent now: it waits for the next KVM_RUN.
      if (kickAt[i] >= 0) kick(i);
      kickAt[i] = progress(i) + rng.below(3);
      v.runStart();
      return;
    }
    const reason = v.kvmRun.getUint32(RUN.exit_reason, true);
    if (res.errno !== EINTR || reason !== KVM_EXIT_INTR) throw new StormError(`vCPU ${i}: KVM_RUN -1 ${errnoName(res.errno)}, exit ${reason}`);
    figures.interruptedRuns++;
    if (rng.below(4) === 0) {
      // immediate_exit: EINTR without running the guest or touching exit_reason.
      v.kvmRun.setUint32(RUN.exit_reason, 0x5a5a, true);
      v.kvmRun.setUint8(RUN.immediate_exit, 1);
      v.runStart();
      const ie = waitRun(v, STALL_MS);
      v.kvmRun.setUint8(RUN.immediate_exit, 0);
      if (!ie) throw new StormError(`vCPU ${i}: KVM_RUN with immediate_exit did not return`, true);
      if (ie.ret !== -1 || ie.errno !== EINTR || v.kvmRun.getUint32(RUN.exit_reason, true) !== 0x5a5a) {
        throw new StormError(`vCPU ${i}: immediate_exit gave ret ${ie.ret} ${errnoName(ie.errno)}, exit ${v.kvmRun.getUint32(RUN.exit_reason, true)}`);
      }
      figures.immediateExits++;
    }
    v.runStart();
  };
  vcpus.forEach((v) => v.runStart());
  let lastAnswer = Date.now();
  while (running.some((r) => r)) {
    vcpus.forEach((_, i) => {
      if (kickAt[i] >= 0 && progress(i) >= kickAt[i]) kick(i);
    });
    vcpus.forEach((v, i) => poll.set(i, running[i] ? v.fd : -1, POLLIN));
    // Spin while a kick is due, so that it goes out at its point of the program.
    if (poll.wait(vcpus.length, kickAt.some((k) => k >= 0) ? 0 : STALL_MS) === 0) {
      if (Date.now() - lastAnswer > STALL_MS) throw new StormError(`no KVM_RUN answered for ${STALL_MS} ms`, true);
      continue;
    }
    lastAnswer = Date.now();
    vcpus.forEach((v, i) => {
      if (poll.revents(i) & POLLIN) answered(i, v.runWait());
    });
  }
  return figures;
}

async function round(km: KernelModel, rng: Rng, kickRng: Rng, index: number, accesses: number, at: string, result: CampaignResult): Promise<void> {
  const transport = TRANSPORTS[rng.below(TRANSPORTS.length)];
  const perVcpu = Math.ceil(accesses / VCPUS);
  const programs = Array.from({ length: VCPUS }, (_, v) => program(rng, v, index, perVcpu));
  const log = path.join(os.tmpdir(), `kick-storm-${process.pid}.log`);
  const config: LoggingDeviceConfig = { log, pauseMs: DEVICE_PAUSE_MS };
  fs.rmSync(log, { force: true });
  const vm = km.kvm.createVm();
  let task: DeviceTask | undefined;
  let failure: StormError | undefined;
  const mismatches: string[] = [];
  let readMismatches = 0;
  try {
    vm.addMemory(0, 0n, RAM_BYTES);
    programs.forEach((ops, v) => {
      const bytes = vm.memory(OPS_GPA + OPS_STRIDE * BigInt(v), ops.length * 16);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      ops.forEach((op, i) => {
        view.setBigUint64(16 * i, op.kind, true);
        view.setBigUint64(16 * i + 8, op.value, true);
      });
    });
    const vcpus = programs.map((ops, v) => {
      const vcpu = vm.createVcpu(v);
      vcpu.setEntry(kick_storm_guest);
      vcpu.setArgs(BASE, OPS_GPA, OPS_STRIDE, ops.length, STATE_GPA);
      return vcpu;
    });
    task = spawnDeviceTask({
      command: [process.execPath, LOGGING_DEVICE], channels: [transport], config: { ...config }, vm,
      regions: [
        { guest_paddr: BASE, memory_size: 8n * BigInt(VCPUS), flags: KVM_IOREGION_POSTED_WRITES },
        { guest_paddr: BASE + KS_SYNC_OFFSET, memory_size: 8n * BigInt(VCPUS) },
      ],
    });
    task.closeChannelFds();
    const f = storm(vm, vcpus, kickRng);
    result.figures.kicks += f.kicks;
    result.figures.interrupted_runs += f.interruptedRuns;
    result.figures.immediate_exits += f.immediateExits;
    const stats = vm.ioregionStats();
    result.figures.interrupted_accesses += Number(stats.reduce((n, s) => n + s.interrupted, 0n));
    const state = vm.memory(STATE_GPA, KS_STATE_BYTES * VCPUS);
    const sv = new DataView(state.buffer, state.byteOffset, state.length);
    for (let v = 0; v < VCPUS; v++) {
      const n = sv.getUint32(KS_STATE_BYTES * v + 8, true);
      readMismatches += n;
      if (n) mismatches.push(`vCPU ${v} read 0x${sv.getBigUint64(KS_STATE_BYTES * v + 24, true).toString(16)}, its last write was 0x${sv.getBigUint64(KS_STATE_BYTES * v + 16, true).toString(16)}`);
    }
  } catch (e) {
    failure = e instanceof StormError ? e : new StormError(`error: ${(e as Error).message}`);
  } finally {
    vm.close();
  }
  if (task) {
    await deviceTaskGone(task, result, at);
    const status = await task.exited;
    if (!failure && status.code !== 0) failure = new StormError(`the device task ended with ${status.code ?? status.signal}`);
  }
  if (km.gone()) return;
  if (failure?.hang) {
    result.hangs++;
    example(result, `${at}: ${failure.message}`);
    km.replace();
    return;
  }
  if (failure) {
    result.undefinedErrnos++;
    example(result, `${at}: ${failure.message}`);
    return;
  }
  result.figures.accesses += programs.reduce((n, p) => n + p.filter((op) => op.kind !== KS_HALT).length, 0);
  result.reorderedWrites += readMismatches;
  result.figures.read_mismatches += readMismatches;
  mismatches.forEach((m) => example(result, `${at}: ${m}`));
  const logged = readDeviceLog(log);
  fs.rmSync(log, { force: true });
  for (let v = 0; v < VCPUS; v++) {
    const writes = programs[v].filter((op) => op.kind === KS_POSTED || op.kind === KS_SYNC).map((op) => op.value);
    const seen = logged.filter((c) => c.write && c.offset === 8n * BigInt(v)).map((c) => c.data);
    const c = compareLog(writes, seen);
    if (c.lost || c.duplicated || c.reordered || c.torn) {
      example(result, `${at}: vCPU ${v}: ${c.lost} lost, ${c.duplicated} duplicated, ${c.reordered} reordered, ${c.torn} torn of ${writes.length} writes`);
    }
    countComparison(result, c);
    result.figures.writes_logged += seen.length;
  }
  result.figures.reads_logged += logged.filter((c) => !c.write).length;
}

export const kickStorm: Campaign = {
  name: 'kick-storm',
  description: 'kicks and immediate_exit at random during posted and synchronous traffic; the device log against program order',
  iterations: 80_000,
  shortIterations: 400,
  async run(options: CampaignOptions): Promise<CampaignResult> {
    const result = emptyResult();
    for (const f of ['accesses', 'kicks', 'interrupted_runs', 'interrupted_accesses', 'immediate_exits', 'writes_logged', 'reads_logged', 'read_mismatches', 'torn_writes']) {
      result.figures[f] = 0;
    }
    // Programs and transports replay from the seed; the kicks' choices have their own stream, since
    // how many of them a round takes depends on timing.
    const rng = new Rng(options.seed);
    const kickRng = new Rng(options.seed ^ 0x4b1c4);
    const km = new KernelModel(result);
    try {
      for (let i = 0, left = options.iterations; left > 0; i++) {
        const accesses = Math.min(left, ROUND_ACCESSES);
        left -= accesses;
        const at = `seed ${options.seed} round ${i}`;
        await km.round(result, at, () => round(km, rng, kickRng, i, accesses, at, result));
        result.rounds++;
        options.progress(`kick-storm: ${options.iterations - left}/${options.iterations} accesses, ${result.figures.kicks} kicks, ` +
          `${result.hangs} hangs, ${result.lostWrites + result.duplicatedWrites + result.reorderedWrites} bad writes`);
      }
    } finally {
      await km.finish();
    }
    return result;
  },
};
