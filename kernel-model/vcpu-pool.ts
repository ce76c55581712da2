// The kernel-model's vCPU worker threads, reused: when a vCPU ends, its thread goes back to a pool
// and runs the next vCPU created anywhere in this kernel-model.
//
// Why: a thread that used koffi leaves its call stack and heap mapped when it ends (about 3 MiB of
// address space and 0.12 MB of RSS per thread, measured), so creating and destroying VMs with fresh
// threads grew a long-lived kernel-model without bound. A reused thread keeps those for its next vCPU;
// each vCPU still starts on fresh guest modules (vcpu-thread.ts unloads them between vCPUs).

import * as path from 'path';
import { Worker } from 'worker_threads';
import type { VcpuWorkerData } from './vcpu-contract';
import type { VcpuWorkerReport } from './vcpu-worker';

/** Idle threads kept beyond this many are ended (which leaks their koffi stacks, once). */
const MAX_IDLE = 32;
const idle: Worker[] = [];

/** One vCPU running on a pooled thread. */
export interface PooledVcpu {
  /** Settles when the vCPU's thread finished with it (served to the end, crashed, or terminated). */
  readonly ended: Promise<void>;
  /** End the thread itself (guest code that never reaches an instruction boundary). */
  terminate(): Promise<void>;
}

function spawnWorker(): Worker {
  const w = new Worker(path.join(__dirname, 'vcpu-worker.js'), { workerData: { vcpuPool: true } });
  w.on('error', (e) => process.stderr.write(`kernel-model: vCPU thread crashed: ${e.stack ?? e}\n`));
  w.once('exit', () => {
    const i = idle.indexOf(w);
    if (i >= 0) idle.splice(i, 1);
  });
  return w;
}

/**
 * Run a vCPU on an idle thread (or a new one). `onCrash` runs if the thread dies of a model defect,
 * so the handle can make the VMM's next ioctl fail instead of wait.
 */
export function runVcpu(data: VcpuWorkerData, onCrash: (stack: string) => void): PooledVcpu {
  const w = idle.pop() ?? spawnWorker();
  w.ref();
  let settle!: () => void;
  const ended = new Promise<void>((resolve) => (settle = resolve));
  let reusable = false;
  const finish = (): void => {
    w.off('message', onReport);
    w.off('exit', finish);
    if (reusable && idle.length < MAX_IDLE) {
      w.unref();
      idle.push(w);
    } else if (reusable) {
      void w.terminate();
    }
    settle();
  };
  const onReport = (r: VcpuWorkerReport): void => {
    if ('crashed' in r) onCrash(r.crashed);
    else reusable = true;
    finish();
  };
  w.on('message', onReport);
  w.once('exit', finish);
  w.postMessage(data, [data.port]);
  return {
    ended,
    terminate: async () => {
      reusable = false;
      await w.terminate();
    },
  };
}
