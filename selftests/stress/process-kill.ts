// The process-kill campaign: a VMM (process_kill_vmm.ts: a VM, a device task, sometimes a QEMU
// device, a busy guest) or its kernel-model is killed with SIGKILL at a random moment; afterwards
// nothing of that round may be left: no kernel-model, device task or QEMU process, and a VMM whose
// kernel-model died must exit, not hang. Every process of a round carries the round's marker in its
// environment (children inherit it), which is how survivors are found on a machine shared with
// other users' processes.

import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Rng } from '../../device-task/sdk/conformance';
import { qemu_available } from '../kvm/lib/qemu_device';
import { Campaign, CampaignOptions, CampaignResult, emptyResult } from './campaign';
import { processAlive, processesMarked, sleep } from './proc';
import type { VmmReport } from './process_kill_vmm';

const VMM = path.join(__dirname, 'process_kill_vmm.js');
/** The environment variable that marks every process of one round. */
export const MARKER_ENV = 'IOREGIONFD_STRESS_ROUND';
/** A VMM is killed this long after its start at most (Node's start-up included, so early kills hit set-up). */
const VMM_KILL_WINDOW_MS = 1500;
/** A kernel-model is killed this long after it exists at most. */
const KERNEL_MODEL_KILL_WINDOW_MS = 1000;
/** How long a round's processes get to notice the death and go. */
const CLEANUP_BOUND_MS = 5000;
/** After the guest runs, the kill comes this long later at most. */
const RUNNING_KILL_WINDOW_MS = 500;
/** How long a VMM gets to report its kernel-model, or its running guest. */
const START_BOUND_MS = 15_000;

type Target = 'vmm' | 'kernel-model';

/** A running VMM of one round and what it reported. */
export class VmmUnderTest {
  readonly child: ChildProcess;
  readonly pids: { kernelModel?: number; deviceTask?: number; qemuTask?: number } = {};
  running = false;
  stderr = '';
  readonly exited: Promise<void>;
  private waiters: (() => void)[] = [];

  /** `marker`: NAME=value, added to the VMM's environment. */
  constructor(marker: string, qemu: boolean) {
    this.child = spawn(process.execPath, ['--enable-source-maps', VMM, ...(qemu ? ['--qemu'] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, [MARKER_ENV]: marker.slice(MARKER_ENV.length + 1) },
    });
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      const lines = (partial + s).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const r = JSON.parse(line) as VmmReport;
          if ('running' in r) this.running = true;
          else Object.assign(this.pids, r);
        } catch {
          // not a report
        }
      }
      this.waiters.splice(0).forEach((w) => w());
    });
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr = (this.stderr + s).slice(-2000)));
    // A process of the round that survives holds these pipes: they must not keep the campaign alive.
    for (const s of [this.child.stdout, this.child.stderr]) (s as unknown as { unref(): void }).unref();
  }

  /** Resolves true once `reached()` holds (it is checked at each report), false after `ms` or at the VMM's exit. */
  async reported(reached: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!reached() && Date.now() < deadline && this.child.exitCode === null) {
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), sleep(100)]);
    }
    return reached();
  }

  /** Resolves true if the VMM exited within `ms`. */
  async exitedWithin(ms: number): Promise<boolean> {
    return Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
  }
}

/** A process's command line (program names shortened), for reports. */
export function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).map((a) => path.basename(a)).join(' ').slice(0, 120);
  } catch {
    return '(gone)';
  }
}

/** memfd mappings (guest RAM, kvm_run pages) a process still has. */
function memfdMappings(pid: number): number {
  try {
    return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length;
  } catch {
    return 0;
  }
}

/** Processes carrying `marker` once they had `ms` to go. */
export async function survivors(marker: string, ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  let left = processesMarked(marker);
  while (left.length && Date.now() < deadline) {
    await sleep(50);
    left = processesMarked(marker);
  }
  return left;
}

async function run(opts: CampaignOptions): Promise<CampaignResult> {
  const result = emptyResult();
  const rng = new Rng(opts.seed);
  const qemu = qemu_available();
  const f = result.figures;
  Object.assign(f, { processes_seen_at_kill: 0, vmm_kills: 0, kernel_model_kills: 0, kills_while_running: 0, rounds_with_qemu: 0, survivor_memfd_mappings: 0 });
  const ownMemfds = memfdMappings(process.pid);
  const example = (round: number, s: string) => {
    if (result.examples.length < 5) result.examples.push(`seed ${opts.seed} round ${round}: ${s}`);
  };
  const started = Date.now();
  for (let round = 1; round <= opts.iterations; round++) {
    result.rounds = round;
    const marker = `${MARKER_ENV}=${process.pid}-${opts.seed}-${round}`;
    const target: Target = rng.below(2) ? 'kernel-model' : 'vmm';
    const withQemu = qemu && rng.below(4) === 0;
    // Half the kills land once the guest runs, the others anywhere in the set-up.
    const whileRunning = rng.below(2) === 0;
    const delay = rng.below(whileRunning ? RUNNING_KILL_WINDOW_MS : target === 'vmm' ? VMM_KILL_WINDOW_MS : KERNEL_MODEL_KILL_WINDOW_MS);
    if (withQemu) f.rounds_with_qemu++;
    const vmm = new VmmUnderTest(marker, withQemu);
    const ready = whileRunning ? () => vmm.running : target === 'vmm' ? () => true : () => vmm.pids.kernelModel !== undefined;
    if (!(await vmm.reported(ready, START_BOUND_MS))) {
      result.hangs++;
      example(round, `the VMM never got ${whileRunning ? 'its guest running' : 'its kernel-model'}: ${vmm.stderr.trim().split('\n').pop() ?? ''}`);
      vmm.child.kill('SIGKILL');
    } else if (target === 'vmm') {
      await sleep(delay);
      if (vmm.running) f.kills_while_running++;
      f.processes_seen_at_kill += processesMarked(marker).length;
      vmm.child.kill('SIGKILL');
      f.vmm_kills++;
    } else {
      await sleep(delay);
      if (vmm.running) f.kills_while_running++;
      f.processes_seen_at_kill += processesMarked(marker).length;
      const pid = vmm.pids.kernelModel!;
      if (processAlive(pid)) process.kill(pid, 'SIGKILL');
      f.kernel_model_kills++;
      // The VMM's next (or pending) ioctl fails: it must exit, not wait forever.
      if (!(await vmm.exitedWithin(CLEANUP_BOUND_MS))) {
        result.hangs++;
        example(round, `the VMM did not exit within ${CLEANUP_BOUND_MS} ms of its kernel-model's death`);
        vmm.child.kill('SIGKILL');
      }
    }
    await vmm.exited;
    const left = await survivors(marker, CLEANUP_BOUND_MS);
    if (left.length) {
      result.leakedProcesses += left.length;
      for (const pid of left) f.survivor_memfd_mappings += memfdMappings(pid);
      example(round, `${target} killed after ${delay} ms (${vmm.running ? 'guest running' : 'during set-up'}): left ${left.map((p) => `${p} (${commandOf(p)})`).join(', ')}`);
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    if (round % 10 === 0 || round === opts.iterations) {
      opts.progress(`process-kill: round ${round}/${opts.iterations}, ${result.leakedProcesses} leaked, ${result.hangs} hangs, ${((Date.now() - started) / 1000).toFixed(0)} s`);
    }
  }
  // This process never maps guest memory: any memfd mapping it gained came from a round.
  f.campaign_memfd_mappings_gained = Math.max(0, memfdMappings(process.pid) - ownMemfds);
  return result;
}

export const processKill: Campaign = {
  name: 'process-kill',
  description: 'a VMM or its kernel-model killed with SIGKILL at a random moment: no process of it may be left behind',
  iterations: 100,
  shortIterations: 5,
  secondsPerRound: 5,
  run,
};
