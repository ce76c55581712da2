// device-kill: a device task dies of SIGKILL at a random point of a transaction (before reading a
// command, after reading it, after half a response, between posted writes), on every transport
// (SEQPACKET, stream, pipes), for posted and synchronous regions, on the MMIO and the PIO bus.
//
// What is defined (docs/ioregionfd.md §5.4, ioregionfd_failure_test): every access after the death
// fails with EPIPE, ECONNRESET or EIO and becomes KVM_EXIT_IOREGIONFD_FAILURE (when the VM opted in)
// or the ordinary KVM_EXIT_MMIO / KVM_EXIT_IO; nothing hangs; the guest runs to its end with the VMM
// completing those accesses. Writes the device received are in program order, followed by the writes
// the VMM handled. Two gaps and overlaps are defined: a synchronous write the device read but never
// answered is handled again by the VMM (§5.4 "the device may already have acted"), and posted writes
// still unread in the channel when the device died are gone with it (§4.6: nothing waits for them).
// Both are reported as figures; anything else is counted.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Campaign, CampaignResult } from './campaign';
import {
  CHANNEL_ERRNOS, compareLog, countComparison, deviceTaskGone, example, KernelModel, runRounds, waitRun,
} from './data-path';
import { device_kill_guest, FLAG_PIO, writeValue } from './guest-code';
import { KillPoint, LoggingDeviceConfig, readDeviceLog } from './logging-device';
import { Rng } from '../../device-task/sdk/conformance';
import { errnoName } from '../../proto/errno';
import { KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { DeviceTask, spawnDeviceTask, Transport, Vcpu } from '../../vmm';
import { le_store, le_value } from '../kvm/lib/kvm_util';

const MMIO_BASE = 0xd0000000n;
const PIO_BASE = 0x6000n;
const ROUND_MS = 10_000;
const TRANSPORTS: Transport[] = ['seqpacket', 'stream', 'pipe'];
const KILL_POINTS: KillPoint[] = ['before-read', 'after-read', 'partial-reply'];
export const LOGGING_DEVICE = path.join(__dirname, 'logging-device.js');

interface Round {
  transport: Transport;
  posted: boolean;
  pio: boolean;
  failureExit: boolean;
  writes: number;
  readEvery: number;
  tag: bigint;
  die: { at: number; point: KillPoint };
}

function chooseRound(rng: Rng): Round {
  const writes = 3 + rng.below(14);
  const readEvery = [0, 2, 3, 5][rng.below(4)];
  const commands = writes + (readEvery ? Math.floor(writes / readEvery) : 0);
  return {
    transport: TRANSPORTS[rng.below(TRANSPORTS.length)], posted: rng.below(2) === 1, pio: rng.below(2) === 1,
    failureExit: rng.below(4) !== 0, writes, readEvery, tag: BigInt(1 + rng.below(0xffffff)),
    die: { at: 1 + rng.below(commands), point: KILL_POINTS[rng.below(KILL_POINTS.length)] },
  };
}

function describe(r: Round): string {
  return `${r.transport} ${r.posted ? 'posted' : 'sync'} ${r.pio ? 'PIO' : 'MMIO'}${r.failureExit ? ' failure-exit' : ''} ` +
    `${r.writes} writes, read every ${r.readEvery || '-'}, die ${r.die.point} command ${r.die.at}`;
}

function inRegion(addr: bigint, base: bigint): boolean {
  return addr >= base && addr < base + 16n;
}

/**
 * Run the guest to its end, completing every access that exits: writes go to `handled` in order,
 * reads complete with 0. Returns 'done', 'hang', or the text of an outcome that is not defined.
 */
function runToEnd(vcpu: Vcpu, r: Round, base: bigint, handled: bigint[], errnos: number[]): 'done' | 'hang' | string {
  const deadline = Date.now() + ROUND_MS;
  for (;;) {
    vcpu.runStart();
    const res = waitRun(vcpu, deadline - Date.now());
    if (!res) return 'hang';
    if (res.ret < 0) return `KVM_RUN failed with ${errnoName(res.errno)}`;
    const e = vcpu.exit();
    if (e.reason === 'shutdown') return 'done';
    let isWrite: boolean;
    let data: Uint8Array;
    let len: number;
    if (e.reason === 'ioregionfd_failure' && r.failureExit && inRegion(e.addr, base) && e.isPio === r.pio) {
      if (!CHANNEL_ERRNOS.has(e.errno)) return `KVM_EXIT_IOREGIONFD_FAILURE with errno ${errnoName(e.errno)}`;
      errnos.push(e.errno);
      ({ isWrite, data, len } = e);
    } else if (e.reason === 'mmio' && !r.failureExit && !r.pio && inRegion(e.physAddr, base)) {
      ({ isWrite, data, len } = e);
    } else if (e.reason === 'io' && !r.failureExit && r.pio && inRegion(BigInt(e.port), base) && e.count === 1) {
      ({ data, size: len } = e);
      isWrite = e.direction === 'out';
    } else {
      return `exit ${e.reason}${'detail' in e ? `: ${e.detail.split('\n')[0]}` : ''}`;
    }
    if (isWrite) handled.push(le_value(data, len));
    else le_store(data, len, 0n);
  }
}

async function round(km: KernelModel, r: Round, at: string, result: CampaignResult): Promise<void> {
  const base = r.pio ? PIO_BASE : MMIO_BASE;
  const log = path.join(os.tmpdir(), `device-kill-${process.pid}.log`);
  const config: LoggingDeviceConfig = { log, die: r.die, flushEach: true };
  const program = Array.from({ length: r.writes }, (_, i) => writeValue(r.tag, i + 1, r.pio));
  const handled: bigint[] = [];
  const errnos: number[] = [];
  fs.rmSync(log, { force: true });
  const vm = km.kvm.createVm();
  let task: DeviceTask | undefined;
  let outcome: string;
  try {
    if (r.failureExit) vm.enableCap(KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, [1n]);
    const vcpu = vm.createVcpu(0);
    vcpu.setEntry(device_kill_guest);
    vcpu.setArgs(base, r.writes, (r.pio ? FLAG_PIO : 0n) | (BigInt(r.readEvery) << 8n), r.tag);
    const flags = (r.pio ? KVM_IOREGION_PIO : 0) | (r.posted ? KVM_IOREGION_POSTED_WRITES : 0);
    task = spawnDeviceTask({
      command: [process.execPath, LOGGING_DEVICE], channels: [r.transport], config: { ...config },
      vm, regions: [{ guest_paddr: base, memory_size: 16n, flags }],
    });
    task.closeChannelFds();
    outcome = runToEnd(vcpu, r, base, handled, errnos);
    if (outcome === 'done' && !r.failureExit) {
      const s = vm.ioregionStats()[0];
      if (s.failures > 0n && !CHANNEL_ERRNOS.has(s.lastErrno)) outcome = `fallback exit with region errno ${errnoName(s.lastErrno)}`;
    }
  } catch (e) {
    outcome = `error: ${(e as Error).message}`;
  } finally {
    vm.close();
  }
  if (task) await deviceTaskGone(task, result, at);
  if (outcome === 'hang' && !km.gone()) {
    result.hangs++;
    example(result, `${at}: KVM_RUN did not return within ${ROUND_MS} ms`);
    km.replace();
    return;
  }
  if (outcome !== 'done') {
    if (km.gone()) return;
    result.undefinedErrnos++;
    example(result, `${at}: ${outcome}`);
    return;
  }
  for (const e of errnos) result.figures[`failure_exits_${errnoName(e)}`] = (result.figures[`failure_exits_${errnoName(e)}`] ?? 0) + 1;
  const received = readDeviceLog(log).filter((c) => c.write).map((c) => c.data);
  fs.rmSync(log, { force: true });
  // The defined overlap: a synchronous write the device read and died on is handled again by the VMM.
  if (!r.posted && received.length && handled[0] === received[received.length - 1]) {
    handled.shift();
    result.figures.writes_replayed_by_vmm = (result.figures.writes_replayed_by_vmm ?? 0) + 1;
  }
  const c = compareLog(program, [...received, ...handled]);
  // The defined gap: posted writes between the last one received and the first one handled.
  if (r.posted && c.lost > 0) {
    const first = handled.length ? program.indexOf(handled[0]) : program.length;
    const gap = first - received.length;
    if (gap > 0 && gap <= c.lost && received.every((v, i) => v === program[i])) {
      c.lost -= gap;
      result.figures.posted_writes_unread_at_death = (result.figures.posted_writes_unread_at_death ?? 0) + gap;
    }
  }
  if (c.lost || c.duplicated || c.reordered || c.torn) {
    example(result, `${at}: device received [${received.map((v) => v & 0xffffn)}], VMM handled [${handled.map((v) => v & 0xffffn)}] of ${r.writes}`);
  }
  countComparison(result, c);
  result.figures.writes_received_by_device = (result.figures.writes_received_by_device ?? 0) + received.length;
  result.figures.writes_handled_by_vmm = (result.figures.writes_handled_by_vmm ?? 0) + handled.length;
}

export const deviceKill: Campaign = {
  name: 'device-kill',
  description: 'a device task SIGKILLed at a random point of a transaction (posted and not, MMIO and PIO, every transport)',
  iterations: 200,
  shortIterations: 10,
  secondsPerRound: 1,
  run: (options) => runRounds(options, { name: 'device-kill', unit: 'kills', every: 10, choose: chooseRound, describe, round }),
};
