// Garbage collection at the kernel-model's idle points: a vCPU thread between two vCPUs, the main
// thread after a VM is destroyed.
//
// Why: V8 collects an isolate's old generation only when it outgrows a limit that V8 raises as the
// heap grows, and a kernel-model has one isolate per vCPU thread besides its main thread. Creating
// and destroying VMs leaves each of them garbage (a vCPU's objects, its reloaded guest modules),
// so a long-lived kernel-model grew by several MB per isolate before collecting (issue 10, defect 7:
// +21% RSS from VM 100 to VM 1,000, measured). A collection at these moments costs the idle thread a
// few ms and keeps the heaps at their live size. It needs --expose-gc (Kvm.open passes it); a
// kernel-model started without it simply skips this.

type Gc = (options?: { type: 'major'; execution: 'sync' | 'async' }) => Promise<void> | void;

const gc = (globalThis as unknown as { gc?: Gc }).gc;

/** Collect the calling thread's garbage: at once on a vCPU thread, as a task on the main thread. */
export function collectGarbage(execution: 'sync' | 'async'): void {
  void gc?.({ type: 'major', execution });
}
