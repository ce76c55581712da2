// The main thread's handle on one vCPU: its fds, its kvm_run page, and the worker thread that runs it.
//
// The worker starts lazily, at the first ioctl on the vCPU fd, so creating KVM_CAP_MAX_VCPUS vCPUs
// stays cheap. Every fd a worker uses is a dup it owns; the handle keeps the originals.
//
// Waking a vCPU thread is a signal, as the kernel kicks a vCPU with an IPI: the handle sets bits in
// the thread's private attention word and sends it WAKE_SIGNAL, which makes the blocking syscall it
// may sit in (a device's reply, room to send, hlt) return EINTR. The VMM's kick is its own request
// bit in kvm_run plus a write of the kick eventfd, which this thread alone reads. A signal can land
// just before the thread enters its syscall (it checks its attention first, then blocks), so while
// the thread is blocked with a wake pending the handle sends it again every WAKE_RETRY_MS.

import koffi from 'koffi';
import { MessageChannel, MessagePort } from 'worker_threads';
import { EMU_ATTN_KICK, KVM_VCPU_MMAP_SIZE, RUN } from '../proto/kvm-uapi';
import {
  addSeals, closeQuietly, dup, EFD_NONBLOCK, eventfd, eventfdRead, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, mapShared, Mapping, memfd,
  shutdown, tgkill, unmap, WAKE_SIGNAL,
} from '../proto/os';
import { controlSocketpair } from './server';
import {
  ATTN_IRQ, ATTN_STOP, ATTN_UPDATE, BLOCKED_HLT, BLOCKED_IDLE, releaseUpdate, SYNC, SYNC_WORDS, type VcpuUpdate, type VcpuWorkerData,
} from './vcpu-contract';
import { PooledVcpu, runVcpu } from './vcpu-pool';

const STOP_GRACE_MS = 2000;
const WAKE_RETRY_MS = 2;
/** Longest a memslot change waits for a vCPU thread (guest code spinning without a CPU call never yields). */
const MEMSLOT_SYNC_MS = 2000;

/** vCPUs created and not yet destroyed, in every VM (KVM_EMU_GET_OBJECT_COUNTS). */
let liveVcpus = 0;
export const liveVcpuCount = (): number => liveVcpus;

export class VcpuHandle {
  /** Our end of the vCPU socket. */
  private readonly sock: number;
  /** The VMM's end, handed over (and closed here) by the KVM_CREATE_VCPU reply. */
  private vmmEnd: number;
  private readonly runFd: number;
  readonly kickFd: number;
  private readonly runMap: Mapping;
  /** The VMM's kick request word in kvm_run (EMU_ATTN_KICK). */
  private readonly kickRequest: Int32Array;
  private worker: PooledVcpu | undefined;
  private port: MessagePort | undefined;
  private watcher: ReturnType<typeof koffi.node.poll> | undefined;
  /** Watches the kick eventfd the VMM writes to signal this vCPU. */
  private kickWatcher: ReturnType<typeof koffi.node.poll> | undefined;
  private wakeRetry: NodeJS.Timeout | undefined;
  private exited: Promise<void> | undefined;
  /** SYNC words, the attention word among them; a thread starts quiescent (no guest code before KVM_RUN). */
  private readonly sync = new Int32Array(new SharedArrayBuffer(4 * SYNC_WORDS));
  /** Updates posted to the thread and not yet acknowledged: their fds are the handle's to close if it exits. */
  private unacked: VcpuUpdate[] = [];
  private seq = 0;
  /** Device fds the thread acknowledged (device key -> fds): closed by the handle only after terminate(). */
  private readonly owned = new Map<number, number[]>();

  constructor(
    readonly id: number,
    /** Builds the updates that bring a new worker up to date (memslots, devices, config). */
    private readonly initialState: () => VcpuUpdate[],
  ) {
    [this.sock, this.vmmEnd] = controlSocketpair();
    this.runFd = memfd(`kvm-vcpu-${id}`, KVM_VCPU_MMAP_SIZE);
    // The VMM maps kvm_run too: it may write any byte of it, but never change its size under us.
    addSeals(this.runFd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    this.kickFd = eventfd(0, EFD_NONBLOCK);
    this.runMap = mapShared(this.runFd, KVM_VCPU_MMAP_SIZE);
    this.kickRequest = new Int32Array(this.runMap.buffer, RUN.emu_kick, 1);
    Atomics.store(this.sync, SYNC.quiescent, 1);
    liveVcpus++;
  }

  /** fds for the KVM_CREATE_VCPU reply: the vCPU socket, the kvm_run memfd, the kick eventfd. */
  replyFds(): number[] {
    const fds = [this.vmmEnd, dup(this.runFd), dup(this.kickFd)];
    this.vmmEnd = -1;
    this.watcher = koffi.node.poll(this.sock, { readable: true, writable: false, disconnect: true }, (...args: unknown[]) => {
      // koffi 3.3 calls back with (status, events), whatever its typings say. The VMM closed a vCPU
      // fd it never used (kvm_vm_free of a VM full of idle vCPUs): there is nothing to run, so no
      // thread to start; the vCPU itself lives on until the VM goes.
      if ((args[1] as { disconnect?: boolean } | undefined)?.disconnect) {
        this.watcher?.close();
        this.watcher = undefined;
        return;
      }
      this.start();
    });
    return fds;
  }

  get started(): boolean {
    return this.worker !== undefined;
  }

  private start(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.worker) return;
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    for (const u of this.initialState()) this.send(u);
    Atomics.or(this.sync, SYNC.attn, ATTN_UPDATE);
    const data: VcpuWorkerData = { vcpuId: this.id, sock: dup(this.sock), runFd: dup(this.runFd), port: port2, sync: this.sync };
    this.kickWatcher = koffi.node.poll(this.kickFd, { readable: true, writable: false, disconnect: false }, () => {
      eventfdRead(this.kickFd);
      this.wake();
    });
    this.worker = runVcpu(data, (stack) => {
      process.stderr.write(`kernel-model: vCPU ${this.id} thread crashed: ${stack}\n`);
      // The VMM sees EIO on its next vCPU ioctl instead of waiting forever.
      shutdown(this.sock);
    });
    this.exited = this.worker.ended.then(() => {
      this.port = undefined;
      this.releaseUnapplied();
    });
  }

  /** Queue an update for the worker (if running) and flag it; it applies them at its next boundary. */
  post(build: () => VcpuUpdate): void {
    if (this.port) this.postBuilt(build());
  }

  /** Queue an update built for this worker; without a worker, its fds are released. */
  postBuilt(u: VcpuUpdate): void {
    if (!this.port) return releaseUpdate(u);
    this.send(u);
    this.signal(ATTN_UPDATE);
  }

  /** Whether a worker thread runs this vCPU (updates are sent only then). */
  get running(): boolean {
    return this.port !== undefined;
  }

  private send(u: VcpuUpdate): void {
    u.seq = ++this.seq;
    this.settle();
    this.unacked.push(u);
    this.port!.postMessage(u);
  }

  /** Move updates the thread acknowledged out of `unacked`, keeping track of the device fds it owns. */
  private settle(): void {
    const acked = Atomics.load(this.sync, SYNC.acked);
    while (this.unacked.length && (this.unacked[0].seq ?? 0) <= acked) {
      const u = this.unacked.shift()!;
      if (u.type !== 'devices') continue;
      for (const key of u.remove) this.owned.delete(key);
      for (const d of u.add) this.owned.set(d.key, d.fds);
    }
  }

  /** The thread is gone: close the fds of updates it never applied (it cannot have used them). */
  private releaseUnapplied(): void {
    this.settle();
    this.unacked.forEach(releaseUpdate);
    this.unacked = [];
  }

  /**
   * Wait until the thread no longer uses memslots older than generation `gen`: it applied `gen`, or it
   * is blocked outside guest code and will apply it before touching guest memory. This is the model's
   * synchronize_srcu() after a memslot change: once KVM_SET_USER_MEMORY_REGION returns, no vCPU reads
   * through the old slot (set_memory_region_test's "the guest never sees 2").
   */
  waitMemslots(gen: number): void {
    if (!this.worker) return;
    const deadline = Date.now() + MEMSLOT_SYNC_MS;
    for (;;) {
      const applied = Atomics.load(this.sync, SYNC.applied);
      if (applied >= gen || Atomics.load(this.sync, SYNC.quiescent) === 1) return;
      const left = deadline - Date.now();
      if (left <= 0) {
        process.stderr.write(`kernel-model: vCPU ${this.id} did not reach an instruction boundary in ${MEMSLOT_SYNC_MS} ms; memslot change not synchronized\n`);
        return;
      }
      Atomics.wait(this.sync, SYNC.applied, applied, Math.min(left, 50));
    }
  }

  /** Set attention bits and wake the thread if it is blocked (device wait, hlt). */
  signal(bits: number): void {
    Atomics.or(this.sync, SYNC.attn, bits);
    this.wake();
  }

  /** Whether the thread sits in a blocking syscall that its pending attention bits should end. */
  private needsWake(): boolean {
    const blocked = Atomics.load(this.sync, SYNC.blocked);
    if (!blocked) return false;
    const w = Atomics.load(this.sync, SYNC.attn);
    const kick = (Atomics.load(this.kickRequest, 0) & EMU_ATTN_KICK) !== 0;
    if (blocked === BLOCKED_IDLE) return (w & (ATTN_STOP | ATTN_UPDATE)) !== 0;
    return kick || (w & ATTN_STOP) !== 0 || (blocked === BLOCKED_HLT && (w & (ATTN_IRQ | ATTN_UPDATE)) !== 0);
  }

  /** Signal the thread out of its syscall, and again every WAKE_RETRY_MS while that is still needed. */
  private wake(): void {
    const tid = Atomics.load(this.sync, SYNC.tid);
    if (!tid || !this.needsWake()) return;
    tgkill(process.pid, tid, WAKE_SIGNAL);
    this.wakeRetry ??= setInterval(() => {
      if (this.needsWake()) {
        tgkill(process.pid, tid, WAKE_SIGNAL);
      } else {
        clearInterval(this.wakeRetry);
        this.wakeRetry = undefined;
      }
    }, WAKE_RETRY_MS);
  }

  /**
   * Stop the thread: flag it, wake any poll, and shut the socket so a blocked recvmsg returns. Only
   * then may the worker be terminated (a worker blocked in a syscall never terminates).
   */
  async destroy(): Promise<void> {
    this.watcher?.close();
    this.watcher = undefined;
    this.kickWatcher?.close();
    this.kickWatcher = undefined;
    if (this.worker) {
      this.worker.stopping();
      this.signal(ATTN_STOP);
      shutdown(this.sock);
      const timedOut = await Promise.race([
        this.exited!.then(() => false),
        new Promise<boolean>((r) => setTimeout(() => r(true), STOP_GRACE_MS).unref()),
      ]);
      // Guest code spinning without touching the CPU never reaches a boundary; JS can be terminated.
      // Then its shutdown never ran: close the device fds it held (its mappings stay until exit).
      if (timedOut) {
        await this.worker.terminate();
        for (const fds of this.owned.values()) fds.forEach(closeQuietly);
      }
      this.owned.clear();
      this.port?.close();
      clearInterval(this.wakeRetry);
      this.wakeRetry = undefined;
    }
    unmap(this.runMap);
    closeQuietly(this.sock);
    closeQuietly(this.vmmEnd);
    closeQuietly(this.runFd);
    closeQuietly(this.kickFd);
    liveVcpus--;
  }
}
