// The kernel-model's vCPU worker threads, reused: when a vCPU ends, its thread goes back to a pool
// and runs the next vCPU created anywhere in this kernel-model.
//
// Why: a thread that used koffi leaves its call stack and heap mapped when it ends (about 3 MiB of
// address space and 0.12 MB of RSS per thread, measured), so creating and destroying VMs with fresh
// threads grew a long-lived kernel-model without bound. A reused thread keeps those for its next vCPU;
// each vCPU still starts on fresh guest modules (vcpu-thread.ts unloads them between vCPUs).
//
// A VMM that frees a VM and at once creates the next one starts the new vCPUs while the old ones are
// still unwinding: a new vCPU then waits for a thread that is finishing rather than start one more,
// or the pool would grow by one thread (an isolate of several MB) at every such race. The wait is
// bounded: a finishing thread reports within moments, or its VM terminates it after its stop grace
// (vcpu.ts), and then the waiting vCPU gets a new thread.

import * as path from 'path';
import { Worker } from 'worker_threads';
import { closeQuietly } from '../proto/os';
import type { VcpuWorkerData } from './vcpu-contract';
import type { VcpuWorkerReport } from './vcpu-worker';

/** Idle threads kept beyond this many are ended (which leaks their koffi stacks, once). */
const MAX_IDLE = 32;

const idle: Worker[] = [];
/** Threads whose vCPU was told to stop and that have not reported the end yet. */
const finishing = new Set<Worker>();
/** vCPUs waiting for one of the finishing threads, oldest first. */
const waiting: Job[] = [];
/** Threads that exist (busy, finishing or idle): for the kernel-model's debug counters. */
let threads = 0;

/** One vCPU running on a pooled thread. */
export interface PooledVcpu {
  /** Settles when the vCPU's thread finished with it (served to the end, crashed, or terminated). */
  readonly ended: Promise<void>;
  /** The vCPU was told to stop (VM destroyed): its thread will soon be free for another vCPU. */
  stopping(): void;
  /** End the thread itself (guest code that never reaches an instruction boundary). */
  terminate(): Promise<void>;
}

/** A vCPU and, once it has one, its thread. */
interface Job {
  data: VcpuWorkerData;
  onCrash: (stack: string) => void;
  settle: () => void;
  worker?: Worker;
  stopRequested: boolean;
}

function spawnWorker(): Worker {
  const w = new Worker(path.join(__dirname, 'vcpu-worker.js'), { workerData: { vcpuPool: true } });
  threads++;
  w.on('error', (e) => process.stderr.write(`kernel-model: vCPU thread crashed: ${e.stack ?? e}\n`));
  w.once('exit', () => {
    threads--;
    finishing.delete(w);
    const i = idle.indexOf(w);
    if (i >= 0) idle.splice(i, 1);
  });
  return w;
}

/** Run `job` on thread `w`; when it ends, the thread serves the next waiting vCPU or goes idle. */
function assign(job: Job, w: Worker): void {
  job.worker = w;
  w.ref();
  let reusable = false;
  const finish = (): void => {
    w.off('message', onReport);
    w.off('exit', finish);
    finishing.delete(w);
    if (reusable) release(w);
    // A thread that vCPUs were waiting for is lost (crashed, terminated): one of them gets a new one.
    else if (waiting.length > finishing.size) assign(waiting.shift()!, spawnWorker());
    job.settle();
  };
  const onReport = (r: VcpuWorkerReport): void => {
    if ('crashed' in r) job.onCrash(r.crashed);
    else reusable = true;
    finish();
  };
  w.on('message', onReport);
  w.once('exit', finish);
  if (job.stopRequested) finishing.add(w);
  w.postMessage(job.data, [job.data.port]);
}

/** A thread is free: give it to the oldest waiting vCPU, else keep it idle (up to MAX_IDLE). */
function release(w: Worker): void {
  const next = waiting.shift();
  if (next) {
    assign(next, w);
  } else if (idle.length < MAX_IDLE) {
    w.unref();
    idle.push(w);
  } else {
    void w.terminate();
  }
}

/**
 * Run a vCPU on an idle thread, a finishing one, or a new one. `onCrash` runs if the thread dies of
 * a model defect, so the handle can make the VMM's next ioctl fail instead of wait.
 */
export function runVcpu(data: VcpuWorkerData, onCrash: (stack: string) => void): PooledVcpu {
  let settle!: () => void;
  const ended = new Promise<void>((resolve) => (settle = resolve));
  const job: Job = { data, onCrash, settle, stopRequested: false };
  const free = idle.pop();
  if (free) {
    assign(job, free);
  } else if (finishing.size > waiting.length) {
    waiting.push(job);
  } else {
    assign(job, spawnWorker());
  }
  return {
    ended,
    stopping: () => {
      job.stopRequested = true;
      if (job.worker) finishing.add(job.worker);
    },
    terminate: async () => {
      const i = waiting.indexOf(job);
      if (i >= 0) {
        // Never ran: release what the thread would have owned.
        waiting.splice(i, 1);
        closeQuietly(data.sock);
        closeQuietly(data.runFd);
        data.port.close();
        settle();
        return;
      }
      finishing.delete(job.worker!);
      await job.worker!.terminate();
    },
  };
}

/** How many vCPU threads exist and how many of them are idle. */
export function vcpuThreadCounts(): { threads: number; idle: number } {
  return { threads, idle: idle.length };
}
