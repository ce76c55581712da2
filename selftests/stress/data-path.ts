// What the data-path campaigns (device-kill, bad-replies, kick-storm) share: one kernel-model watched
// for exits and for fds it keeps, KVM_RUN bounded in time, device tasks checked for outliving their
// VM, and the comparison of a device's write log against program order.

import * as fs from 'fs';
import { CampaignOptions, CampaignResult, emptyResult } from './campaign';
import { Rng } from '../../device-task/sdk/conformance';
import { IoctlResult } from '../../proto/control';
import { ECONNRESET, EIO, EPIPE } from '../../proto/errno';
import { PollSet, POLLIN } from '../../proto/os';
import { DeviceTask, Kvm, Vcpu } from '../../vmm';

/** The errnos a broken channel may fail an access with (docs/ioregionfd.md §5.4). */
export const CHANNEL_ERRNOS = new Set([EPIPE, ECONNRESET, EIO]);
/** How long a kernel-model may take to close a freed VM's fds, or a device task to see EOF and exit. */
const SETTLE_MS = 3000;
const MAX_EXAMPLES = 8;

/** Add an example to the report (the first few only). */
export function example(result: CampaignResult, text: string): void {
  if (result.examples.length < MAX_EXAMPLES) result.examples.push(text);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True if `p` settles within `ms`; the timer does not outlive the wait (it would keep the process up). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** True while `pid` exists and is not a zombie (an unreaped child that died is gone for our purposes). */
export function processAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Number of open fds of a process (we run as its parent's user; the kernel-model is not dumpable, so this needs root). */
export function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/**
 * The kernel-model a campaign runs against. Its fd count is taken once a first round has warmed it
 * up (pooled vCPU threads keep their own fds) and compared at the end; if it dies, that is counted
 * and a new one serves the remaining rounds.
 */
export class KernelModel {
  kvm: Kvm;
  private baseline = -1;

  constructor(private readonly result: CampaignResult) {
    this.kvm = Kvm.open();
  }

  /** The kernel-model died (what failed in the round is then its exit, counted by afterRound, not an undefined outcome). */
  gone(): boolean {
    return !processAlive(this.kvm.pid);
  }

  /**
   * Run one round: an error it throws is an undefined outcome unless the kernel-model died; then
   * count an exit, or wait for the fds to settle (taking the baseline after the first round).
   */
  async round(result: CampaignResult, round: string, play: () => Promise<void>): Promise<void> {
    try {
      await play();
    } catch (e) {
      if (!this.gone()) {
        result.undefinedErrnos++;
        example(result, `${round}: error: ${(e as Error).message}`);
      }
    }
    await this.afterRound(round);
  }

  private async afterRound(round: string): Promise<void> {
    if (this.gone()) {
      this.result.kernelModelExits++;
      example(this.result, `${round}: the kernel-model (pid ${this.kvm.pid}) exited`);
      this.restart();
      return;
    }
    const n = await this.settledFds();
    if (this.baseline < 0) this.baseline = n;
  }

  /** After a hang: the kernel-model may be wedged; end it (not counted as an exit) and start a new one. */
  replace(): void {
    if (!this.gone()) process.kill(this.kvm.pid, 'SIGKILL');
    this.restart();
  }

  private restart(): void {
    try {
      this.kvm.close();
    } catch {
      // already closed
    }
    this.kvm = Kvm.open();
    this.baseline = -1;
  }

  /** The fd count once it stops falling (a freed VM's teardown runs on the kernel-model's own time). */
  private async settledFds(): Promise<number> {
    let n = fdCount(this.kvm.pid);
    const deadline = Date.now() + SETTLE_MS;
    while ((this.baseline < 0 || n > this.baseline) && Date.now() < deadline) {
      await sleep(this.baseline < 0 ? 100 : 20);
      const m = fdCount(this.kvm.pid);
      if (this.baseline < 0 && m === n) break;
      n = m;
    }
    return n;
  }

  /** Compare the fd count with the baseline, then close the system fd and wait for the exit. */
  async finish(): Promise<void> {
    if (!this.gone() && this.baseline >= 0) {
      const n = await this.settledFds();
      this.result.figures.kernel_model_fds_baseline = this.baseline;
      this.result.figures.kernel_model_fds_end = n;
      if (n > this.baseline) {
        this.result.leakedFds += n - this.baseline;
        example(this.result, `the kernel-model holds ${n} fds after the last round, ${this.baseline} after the first`);
      }
    }
    this.kvm.close();
    await settlesWithin(this.kvm.exited(), SETTLE_MS);
  }
}

/** Wait at most `ms` for the reply of a KVM_RUN already sent (Vcpu.runStart); undefined if none came. */
export function waitRun(vcpu: Vcpu, ms: number): IoctlResult | undefined {
  const p = new PollSet(1);
  p.set(0, vcpu.fd, POLLIN);
  if (p.wait(1, Math.max(0, ms)) === 0) return undefined;
  return vcpu.runWait();
}

/**
 * After its VM was freed and our channel fds closed, a device task sees EOF and exits: true if it did
 * within the bound. One that did not is counted as a leaked process and stopped.
 */
export async function deviceTaskGone(task: DeviceTask, result: CampaignResult, round: string): Promise<boolean> {
  task.closeChannelFds();
  const gone = await settlesWithin(task.exited, SETTLE_MS);
  if (!gone) {
    result.leakedProcesses++;
    example(result, `${round}: device task ${task.pid} still alive ${SETTLE_MS} ms after its VM was freed`);
  }
  await task.stop(1000);
  return gone;
}

/** What a comparison of a write log with program order found (each a count of writes). */
export interface LogComparison {
  lost: number;
  duplicated: number;
  reordered: number;
  torn: number;
}

/**
 * Compare the writes a device logged with the writes the program made, in order. Values are unique
 * per write. A logged value the program never wrote is torn; one logged more than once is
 * duplicated; one logged before a write that came earlier in program order is reordered; a program
 * write missing from the log is lost.
 */
export function compareLog(program: readonly bigint[], logged: readonly bigint[]): LogComparison {
  const position = new Map(program.map((v, i) => [v, i]));
  const seen = new Set<bigint>();
  const c = { lost: 0, duplicated: 0, reordered: 0, torn: 0 };
  let last = -1;
  for (const v of logged) {
    const at = position.get(v);
    if (at === undefined) {
      c.torn++;
    } else if (seen.has(v)) {
      c.duplicated++;
    } else {
      seen.add(v);
      if (at < last) c.reordered++;
      last = Math.max(last, at);
    }
  }
  c.lost = program.length - seen.size;
  return c;
}

/** Add a comparison to the result; torn writes count as lost (the write that was made never arrived) and as a figure. */
export function countComparison(result: CampaignResult, c: LogComparison): void {
  result.lostWrites += c.lost + c.torn;
  result.duplicatedWrites += c.duplicated;
  result.reorderedWrites += c.reordered;
  result.figures.torn_writes = (result.figures.torn_writes ?? 0) + c.torn;
}

/** A data-path campaign's rounds: each chosen from the seed and run in one long-lived kernel-model. */
export interface RoundPlan<R> {
  name: string;
  /** What the progress line counts, e.g. 'kills'. */
  unit: string;
  /** A progress line every this many rounds. */
  every: number;
  choose(rng: Rng): R;
  describe(r: R): string;
  round(km: KernelModel, r: R, at: string, result: CampaignResult): Promise<void>;
}

export async function runRounds<R>(options: CampaignOptions, plan: RoundPlan<R>): Promise<CampaignResult> {
  const result = emptyResult();
  const rng = new Rng(options.seed);
  const km = new KernelModel(result);
  try {
    for (let i = 0; i < options.iterations; i++) {
      const r = plan.choose(rng);
      const at = `seed ${options.seed} round ${i} (${plan.describe(r)})`;
      await km.round(result, at, () => plan.round(km, r, at, result));
      result.rounds++;
      if ((i + 1) % plan.every === 0 || i + 1 === options.iterations) {
        options.progress(`${plan.name}: ${i + 1}/${options.iterations} ${plan.unit}, ${result.hangs} hangs, ${result.undefinedErrnos} undefined outcomes`);
      }
    }
  } finally {
    await km.finish();
  }
  return result;
}
