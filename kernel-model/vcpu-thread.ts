// A vCPU thread: serves one vCPU fd (its ioctls and the KVM_RUN state machine) and runs its guest
// code on the instruction set of cpu.ts. It is the CpuHost the instructions run on and the VcpuPort
// bus devices block through.
//
// The thread blocks in recvmsg on its vCPU socket for ioctls. KVM_RUN runs guest code on this thread's
// stack; when the guest needs the VMM (an MMIO/PIO access nobody in the "kernel" handles, hlt, a kick),
// the thread fills kvm_run, answers that KVM_RUN, and serves ioctls inside the guest's call until the
// next KVM_RUN, which completes the access (as x86's complete_userspace_io does) and resumes the guest.
// So an interrupted access keeps its place simply by staying on the stack.
//
// Pooled worker threads (vcpu-worker.ts) run one VcpuThread after another.

import { MessagePort, receiveMessageOnPort } from 'worker_threads';
import { decodeRequest, encodeReply, GuestEntryType, IoctlRequest, REPLY_TRUNCATED } from '../proto/control';
import { EFAULT, EINTR, EINVAL } from '../proto/errno';
import { installCpu, takeGuestContextViolation } from '../proto/guest-cpu';
import {
  KVM_EMU_SET_GUEST_ENTRY, KVM_EMU_SET_VCPU_AFFINITY, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_SHUTDOWN, KVM_GET_REGS,
  KVM_INTERNAL_ERROR_EMULATION, KVM_RUN, KVM_SET_REGS, KVM_VCPU_MMAP_SIZE, REGS, REGS_SIZE, RUN,
} from '../proto/kvm-uapi';
import { closeQuietly, CPU_SETSIZE, cpusOfMask, getAffinity, gettid, mapShared, Mapping, sendMessage, setAffinity, setNonBlocking, unmap } from '../proto/os';
import { Cpu, CpuHost } from './cpu';
import { GuestMemory } from './guest-memory';
import { BusName, IoBus, IoDevice } from './io-bus';
import { ATTN_IRQ, ATTN_STOP, ATTN_UPDATE, SYNC, VcpuConfig, VcpuUpdate, VcpuWorkerData } from './vcpu-contract';
import type { DeferredWrites, VcpuPort } from './vcpu-port';
import { VcpuStopped, VcpuWaits } from './vcpu-wait';
import type { DeviceDesc, WorkerDevice } from './device-desc';
import { createWorkerDevice } from './worker-devices';

const REPLY_OK = encodeReply({ ret: 0 });
const REPLY_EINTR = encodeReply({ ret: -1, errno: EINTR });
const ARG_REGS = ['rdi', 'rsi', 'rdx', 'rcx', 'r8', 'r9'] as const;

type GuestFn = (...args: bigint[]) => unknown;

export class VcpuThread implements CpuHost, VcpuPort {
  readonly vcpuId: number;
  readonly config: VcpuConfig = { wire: 'v3', failureExit: false, irqchip: false, pollNs: 0 };
  readonly mem = new GuestMemory();
  readonly mmioBus = new IoBus<IoDevice>();
  readonly pioBus = new IoBus<IoDevice>();
  readonly fastMmioBus = new IoBus<IoDevice>();
  readonly run: DataView;
  readonly runBytes: Uint8Array;
  private readonly runMap: Mapping;
  private readonly waits: VcpuWaits;
  /** Words shared with the VcpuHandle, the attention word among them (vcpu-contract.ts). */
  private readonly sync: Int32Array;
  private readonly sock: number;
  private readonly port: MessagePort;
  private readonly devices = new Map<number, WorkerDevice>();
  /** VM-wide shared memory of features (ioregionfd locks and counters, the irqchip), by name. */
  private readonly sharedBlocks = new Map<string, SharedArrayBuffer>();
  private readonly cpu: Cpu;
  /** Posted writes a device holds back; the CPU sends them before anything else (vcpu-port.ts). */
  deferred: DeferredWrites | undefined;
  private entry: GuestFn | undefined;
  /** The CPUs this thread had before the VMM pinned it: it goes back to the pool with them. */
  private unpinned: number[] | undefined;
  private entryName = '';
  /** Set once guest code returned or threw: every later KVM_RUN reports the same exit. */
  private terminal: { reason: number; detail: string } | undefined;

  constructor(d: VcpuWorkerData) {
    this.vcpuId = d.vcpuId;
    this.sock = d.sock;
    this.port = d.port;
    this.sync = d.sync;
    this.cpu = new Cpu(d.vcpuId, this);
    // The handle signals this thread by its kernel thread id.
    Atomics.store(this.sync, SYNC.tid, gettid());
    try {
      this.runMap = mapShared(d.runFd, KVM_VCPU_MMAP_SIZE);
    } finally {
      closeQuietly(d.runFd);
    }
    this.run = new DataView(this.runMap.buffer);
    this.runBytes = new Uint8Array(this.runMap.buffer);
    this.waits = new VcpuWaits(this.sync, new Int32Array(this.runMap.buffer, RUN.emu_kick, 1));
    // The main thread watched this socket with uv_poll before handing it over, which made it non-blocking.
    setNonBlocking(this.sock, false);
  }

  // ---- the ioctl loop ---------------------------------------------------------------------------

  /** Serve ioctls until the vCPU fd closes or the VM is destroyed. */
  serve(): void {
    try {
      for (;;) {
        const req = this.receive();
        if (req.request === KVM_RUN) this.runFromTop();
        else this.reply(this.vcpuIoctl(req));
      }
    } catch (e) {
      if (!(e instanceof VcpuStopped)) throw e;
    } finally {
      this.shutdown();
    }
  }

  private receive(): IoctlRequest {
    for (;;) {
      const msg = this.waits.receiveIoctl(this.sock, () => this.applyUpdates());
      if (!msg) throw new VcpuStopped();
      msg.fds.forEach(closeQuietly);
      if (msg.truncated) {
        this.reply(REPLY_TRUNCATED);
        continue;
      }
      try {
        return decodeRequest(msg.data);
      } catch (e) {
        this.reply(encodeReply({ ret: -1, errno: EINVAL, detail: `malformed ioctl message: ${(e as Error).message}` }));
      }
    }
  }

  private reply(message: Uint8Array): void {
    try {
      sendMessage(this.sock, message);
    } catch {
      throw new VcpuStopped();
    }
  }

  /** Every vCPU ioctl except KVM_RUN. Unknown ones are EINVAL, as x86's kvm_arch_vcpu_ioctl answers. */
  private vcpuIoctl(req: IoctlRequest): Uint8Array {
    const regs = this.cpu.regs;
    switch (req.request) {
      case KVM_GET_REGS: {
        const out = Buffer.alloc(REGS_SIZE);
        regs.forEach((v, i) => out.writeBigUInt64LE(v, 8 * i));
        return encodeReply({ ret: 0, data: out });
      }
      case KVM_SET_REGS:
        if (req.data.length < REGS_SIZE) return encodeReply({ ret: -1, errno: EFAULT, detail: `struct kvm_regs needs ${REGS_SIZE} bytes, got ${req.data.length}` });
        for (let i = 0; i < REGS.length; i++) regs[i] = req.data.readBigUInt64LE(8 * i);
        return encodeReply({ ret: 0 });
      case KVM_EMU_SET_GUEST_ENTRY:
        return this.setEntry(req.data);
      case KVM_EMU_SET_VCPU_AFFINITY:
        return this.pin(req.data);
      default:
        return encodeReply({ ret: -1, errno: EINVAL, detail: `unknown vCPU ioctl 0x${req.request.toString(16)}` });
    }
  }

  /** KVM_EMU_SET_VCPU_AFFINITY: this thread on the CPUs of the mask, until the vCPU ends. */
  private pin(mask: Buffer): Uint8Array {
    if (mask.length > CPU_SETSIZE / 8) return encodeReply({ ret: -1, errno: EINVAL, detail: `a CPU mask has at most ${CPU_SETSIZE / 8} bytes, got ${mask.length}` });
    const cpus = cpusOfMask(mask);
    this.unpinned ??= getAffinity(0);
    const r = setAffinity(0, cpus);
    if (r < 0) return encodeReply({ ret: -1, errno: -r, detail: `sched_setaffinity to CPUs [${cpus.join(',')}] failed` });
    return encodeReply({ ret: 0 });
  }

  private setEntry(data: Buffer): Uint8Array {
    let module = '';
    let name = '';
    try {
      const m = GuestEntryType.decode(data) as unknown as { module: string; export: string };
      module = m.module;
      name = m.export;
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const fn = require(module)[name];
      const violation = takeGuestContextViolation();
      if (violation) throw new Error(violation);
      if (typeof fn !== 'function') throw new Error(`export '${name}' is not a function`);
      this.entry = fn as GuestFn;
      this.entryName = `${module}:${name}`;
      this.terminal = undefined;
      return encodeReply({ ret: 0 });
    } catch (e) {
      return encodeReply({ ret: -1, errno: EINVAL, detail: `guest entry ${module}:${name}: ${(e as Error).message}` });
    }
  }

  /** KVM_RUN while no guest code is on the stack: start it (or report how it ended). */
  private runFromTop(): void {
    if (this.runEntryChecks()) return;
    if (this.terminal) return this.reportTerminal();
    if (!this.entry) {
      this.terminal = { reason: KVM_EXIT_INTERNAL_ERROR, detail: 'no guest entry point set (KVM_EMU_SET_GUEST_ENTRY)' };
      return this.reportTerminal();
    }
    installCpu(this.cpu);
    const args = ARG_REGS.map((r) => this.cpu.regs[REGS.indexOf(r)]);
    try {
      this.entry(...args);
      this.terminal = { reason: KVM_EXIT_SHUTDOWN, detail: `guest code ${this.entryName} returned` };
    } catch (e) {
      if (e instanceof VcpuStopped) throw e;
      const err = e as Error;
      this.terminal = { reason: KVM_EXIT_INTERNAL_ERROR, detail: `guest code threw: ${err?.stack ?? String(e)}` };
    }
    // Posted writes the guest left held go out (or exit, in order) before its end is reported
    // (docs/ioregionfd.md §4.6): an exit of any kind is a bound on them.
    this.cpu.flushPosted();
    this.reportTerminal();
  }

  private reportTerminal(): void {
    const t = this.terminal!;
    this.setExit(t.reason);
    if (t.reason === KVM_EXIT_INTERNAL_ERROR) {
      this.run.setUint32(RUN.internal_suberror, KVM_INTERNAL_ERROR_EMULATION, true);
      this.run.setUint32(RUN.internal_ndata, 0, true);
    }
    this.reply(encodeReply({ ret: 0, detail: t.detail }));
  }

  /**
   * What KVM_RUN does before entering the guest: apply pending updates, then honour immediate_exit
   * (EINTR, exit_reason untouched) and a pending kick (EINTR with KVM_EXIT_INTR). True if it answered.
   */
  private runEntryChecks(): boolean {
    const w = Atomics.load(this.sync, SYNC.attn);
    if (w & ATTN_STOP) throw new VcpuStopped();
    if (w & ATTN_UPDATE) this.applyUpdates();
    if (this.run.getUint8(RUN.immediate_exit)) {
      this.reply(REPLY_EINTR);
      return true;
    }
    if (this.waits.consumeKick()) {
      this.setExit(KVM_EXIT_INTR);
      this.reply(REPLY_EINTR);
      return true;
    }
    return false;
  }

  exit(reason: number, complete?: () => void): void {
    this.setExit(reason);
    this.reply(REPLY_OK);
    this.waitForRun(complete);
  }

  /** Serve ioctls until a KVM_RUN resumes the guest; `complete` runs at the first KVM_RUN. */
  private waitForRun(complete?: () => void): void {
    for (;;) {
      const req = this.receive();
      if (req.request !== KVM_RUN) {
        this.reply(this.vcpuIoctl(req));
        continue;
      }
      if (complete) {
        complete();
        complete = undefined;
      }
      if (!this.runEntryChecks()) return;
    }
  }

  interrupted(): void {
    // Held posted writes reach their device before the VMM hears of the kick.
    this.cpu.flushPosted();
    this.setExit(KVM_EXIT_INTR);
    this.reply(REPLY_EINTR);
    this.waitForRun();
  }

  private setExit(reason: number): void {
    this.run.setUint32(RUN.exit_reason, reason, true);
  }

  // ---- attention: kicks, updates, interrupts, destruction --------------------------------------

  boundary(): void {
    if (this.waits.attentionPending()) this.attention();
  }

  private attention(): void {
    const w = Atomics.load(this.sync, SYNC.attn);
    if (w & ATTN_STOP) throw new VcpuStopped();
    if (w & ATTN_UPDATE) this.applyUpdates();
    if (this.waits.consumeKick()) this.interrupted();
    if (w & ATTN_IRQ) {
      Atomics.and(this.sync, SYNC.attn, ~ATTN_IRQ);
      // One interrupt per boundary; more pending ones are taken at the following boundaries.
      if (this.cpu.takeInterrupt()) this.requestInterruptCheck();
    }
  }

  defer(writes: DeferredWrites): void {
    this.deferred = writes;
  }

  attentionPending(): boolean {
    return this.waits.attentionPending();
  }

  requestInterruptCheck(): void {
    Atomics.or(this.sync, SYNC.attn, ATTN_IRQ);
  }

  takeUpdates(): void {
    if (Atomics.load(this.sync, SYNC.attn) & ATTN_UPDATE) this.applyUpdates();
  }

  shared(name: string): SharedArrayBuffer | undefined {
    return this.sharedBlocks.get(name);
  }

  private applyUpdates(): void {
    Atomics.and(this.sync, SYNC.attn, ~ATTN_UPDATE);
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
      const u = m.message as VcpuUpdate;
      if (u.type === 'memslots') {
        this.mem.update(u.slots, new Map(u.fds));
        Atomics.store(this.sync, SYNC.applied, u.gen);
        Atomics.notify(this.sync, SYNC.applied);
      } else if (u.type === 'config') Object.assign(this.config, u.config);
      else if (u.type === 'shared') this.sharedBlocks.set(u.name, u.buffer);
      else this.updateDevices(u.add, u.remove);
      // The fds of every update up to here are ours now (the handle closes those of later ones if we exit).
      Atomics.store(this.sync, SYNC.acked, u.seq ?? 0);
    }
  }

  private updateDevices(add: DeviceDesc[], remove: number[]): void {
    for (const key of remove) {
      const d = this.devices.get(key);
      if (!d) continue;
      this.devices.delete(key);
      this.bus(d.bus).unregister(d.dev);
      d.close();
    }
    for (const desc of add) {
      const d = createWorkerDevice(desc, this);
      this.devices.set(desc.key, d);
      // Registration order matters for overlapping ranges; the VM already checked room and collisions.
      this.bus(d.bus).register(desc.addr, desc.len, d.dev, desc.kind === 'ioeventfd');
    }
  }

  private bus(name: BusName): IoBus<IoDevice> {
    return name === 'pio' ? this.pioBus : name === 'fast_mmio' ? this.fastMmioBus : this.mmioBus;
  }

  // ---- waiting (vcpu-wait.ts) ---------------------------------------------------------------------

  waitFd(fd: number, events: number): boolean {
    return this.waits.waitFd(fd, events);
  }

  recvPolled(fd: number, buf: Uint8Array, len: number, giveUp: () => boolean): number {
    return this.waits.recvPolled(fd, buf, len, this.config.pollNs, giveUp);
  }

  readWakeable(fd: number, buf: Uint8Array, len: number): number | 'kicked' {
    return this.waits.readWakeable(fd, buf, len);
  }

  quiesce(blocked: boolean): void {
    this.waits.quiesce(blocked);
  }

  stopRequested(): boolean {
    return this.waits.stopRequested();
  }

  checkSignal(): boolean {
    if (this.stopRequested()) throw new VcpuStopped();
    return this.waits.consumeKick();
  }

  haltUntil(woken: () => boolean): void {
    while (!woken()) {
      if (this.waits.waitAttention(ATTN_IRQ | ATTN_UPDATE)) this.attention();
      else this.interrupted();
    }
  }

  private shutdown(): void {
    // An exited thread uses no guest memory and must never be signalled again.
    Atomics.store(this.sync, SYNC.quiescent, 1);
    Atomics.store(this.sync, SYNC.tid, 0);
    Atomics.notify(this.sync, SYNC.applied);
    for (const d of this.devices.values()) d.close();
    this.devices.clear();
    this.mem.clear();
    unmap(this.runMap);
    closeQuietly(this.sock);
    this.port.close();
    if (this.unpinned) setAffinity(0, this.unpinned);
  }
}
