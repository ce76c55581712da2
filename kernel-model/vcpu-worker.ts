// The entry of a pooled vCPU worker thread (vcpu-pool.ts): runs one vCPU after another, each on a
// fresh VcpuThread and fresh guest modules, and tells the pool when each is over.

import { isMainThread, parentPort, workerData } from 'worker_threads';
import { enterGuestContext, GuestContextError } from '../proto/guest-cpu';
import type { VcpuWorkerData } from './vcpu-contract';
import { collectGarbage } from './idle-gc';
import { VcpuThread } from './vcpu-thread';

/** What a pooled worker tells the pool when one vCPU is over. */
export type VcpuWorkerReport = { done: true } | { crashed: string };

/** Unload what a vCPU's guest code loaded, so the next vCPU on this thread starts from fresh modules. */
function forgetGuestModules(baseline: Set<string>): void {
  const forgotten = new Set<NodeModule>();
  for (const [file, mod] of Object.entries(require.cache)) {
    // Native addons cannot be loaded twice into one thread: they stay.
    if (baseline.has(file) || file.endsWith('.node') || !mod) continue;
    forgotten.add(mod);
    delete require.cache[file];
  }
  // A module that required them keeps them in its `children`: without this they would never be freed.
  for (const mod of Object.values(require.cache)) {
    if (mod && mod.children.some((c) => forgotten.has(c))) mod.children = mod.children.filter((c) => !forgotten.has(c));
  }
}

if (!isMainThread && (workerData as { vcpuPool?: boolean } | null)?.vcpuPool) {
  // Everything required from here on is guest code (the module a vCPU's entry point lives in).
  enterGuestContext();
  // Async guest code is a guest bug, not a reason to end the thread: its failures are logged. A
  // refused VMM call (refuseInGuestContext) was already reported through KVM_EMU_SET_GUEST_ENTRY.
  process.on('unhandledRejection', (e) => {
    if (!(e instanceof GuestContextError)) process.stderr.write(`kernel-model: unhandled rejection in guest code: ${(e as Error)?.stack ?? String(e)}\n`);
  });
  const baseline = new Set(Object.keys(require.cache));
  parentPort!.on('message', (d: VcpuWorkerData) => {
    try {
      new VcpuThread(d).serve();
    } catch (e) {
      // A defect of the model, not of the guest: this thread ends, the VMM's next ioctl sees EIO.
      parentPort!.postMessage({ crashed: (e as Error)?.stack ?? String(e) } satisfies VcpuWorkerReport);
      throw e;
    } finally {
      forgetGuestModules(baseline);
    }
    // The vCPU's objects and modules are garbage now, and this thread has nothing else to do.
    collectGarbage();
    parentPort!.postMessage({ done: true } satisfies VcpuWorkerReport);
  });
}
