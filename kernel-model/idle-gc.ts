// Garbage collection at the kernel-model's idle points: a vCPU thread between two vCPUs, the main
// thread after a VM is destroyed.
//
// Why: V8 collects an isolate's old generation only when it outgrows a limit that V8 raises as the
// heap grows, and a kernel-model has one isolate per vCPU thread besides its main thread. Creating
// and destroying VMs leaves each of them garbage (a vCPU's objects, its reloaded guest modules), so
// a long-lived kernel-model grew by several MB per isolate before collecting (issue 10, defect 7:
// +21% RSS from VM 100 to VM 1,000, measured). A full collection at these moments costs the thread a
// few ms and keeps the heaps at their live size. It is gc() with no options on purpose: measured,
// gc({ type: 'major' }) left the growth as it was, while gc() kept 600 VMs within 2.2%.
// It needs --expose-gc (Kvm.open passes it); a kernel-model started without it skips this.

const gc = (globalThis as unknown as { gc?: () => void }).gc;

/** Collect the calling thread's garbage now (a no-op without --expose-gc). */
export function collectGarbage(): void {
  gc?.();
}
