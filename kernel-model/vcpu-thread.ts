// A vCPU: the worker thread that serves one vCPU fd and runs its guest code (the CPU of this model).
//
// The thread blocks in recvmsg on its vCPU socket for ioctls. KVM_RUN runs guest code on this thread's
// stack; when the guest needs the VMM (an MMIO/PIO access nobody in the "kernel" handles, hlt, a kick),
// the thread fills kvm_run, answers that KVM_RUN, and serves ioctls inside the guest's call until the
// next KVM_RUN, which completes the access (as x86's complete_userspace_io does) and resumes the guest.
// So an interrupted access keeps its place simply by staying on the stack.

import { MessagePort, receiveMessageOnPort, workerData } from 'worker_threads';
import { decodeRequest, encodeReply, GuestEntryType, IoctlRequest } from '../proto/control';
import { EINTR, EINVAL, EOPNOTSUPP } from '../proto/errno';
import { AccessSize, GuestCpu, installCpu, PortSize } from '../proto/guest-cpu';
import {
  EMU_ATTN_IRQ, EMU_ATTN_KICK, EMU_ATTN_STOP, EMU_ATTN_UPDATE, KVM_EMU_SET_GUEST_ENTRY, KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO,
  KVM_EXIT_IOREGIONFD_FAILURE, KVM_EXIT_SHUTDOWN, KVM_GET_REGS, KVM_INTERNAL_ERROR_EMULATION, KVM_PIO_PAGE_OFFSET, KVM_RUN, KVM_SET_REGS,
  KVM_VCPU_MMAP_SIZE, PAGE_SIZE, REGS, REGS_SIZE, RUN,
} from '../proto/kvm-uapi';
import {
  closeQuietly, gettid, mapShared, Mapping, PollSet, readInterruptible, receiveMessage, sendMessage, setNonBlocking, sleepUntilSignal, unmap,
} from '../proto/os';
import { busRead, busWrite, DEVICE_GONE, IoBus, IoDevice, ReadResult } from './io-bus';
import { GuestMemory, loadLE, MemslotDesc, storeLE } from './guest-memory';
import { IRQCHIP_SHARED, LocalApic } from './irqchip';
import { REPLY_TRUNCATED } from './server';
import { BLOCKED_HLT, BLOCKED_IO, SYNC, VcpuConfig, VcpuUpdate, VcpuWorkerData } from './vcpu-contract';
import { BusName, createWorkerDevice, DeviceDesc, WorkerDevice } from './worker-devices';

/** Unwinds guest code when the VM is destroyed or the vCPU fd is closed. */
class VcpuStopped extends Error {}

/** What KVM_EXIT_IOREGIONFD_FAILURE reports about the access a device failed. */
export interface IoFailure {
  addr: bigint;
  len: number;
  isWrite: boolean;
  isPio: boolean;
  data: bigint;
  userData: bigint;
  errno: number;
}

const ATTN_INDEX = RUN.emu_kick / 4;
const PIO_DATA = KVM_PIO_PAGE_OFFSET * PAGE_SIZE;
/** x86 emulator's string-I/O read-ahead cache (struct read_cache's data[1024]). */
const PIO_READ_AHEAD = 1024;
const REPLY_OK = encodeReply({ ret: 0 });
const REPLY_EINTR = encodeReply({ ret: -1, errno: EINTR });
const ARG_REGS = ['rdi', 'rsi', 'rdx', 'rcx', 'r8', 'r9'] as const;

type GuestFn = (...args: bigint[]) => unknown;

export class VcpuThread implements GuestCpu {
  readonly vcpuId: number;
  readonly regs = new BigUint64Array(REGS.length);
  readonly config: VcpuConfig = { wire: 'v3', failureExit: false, irqchip: false };
  readonly mem = new GuestMemory();
  readonly mmioBus = new IoBus<IoDevice>();
  readonly pioBus = new IoBus<IoDevice>();
  /** x86's KVM_FAST_MMIO_BUS: len-0 ioeventfds and size-0 ioregions, probed first for MMIO writes. */
  readonly fastMmioBus = new IoBus<IoDevice>();
  /** The kvm_run mapping; a DataView for fields, an Int32Array for the attention word. */
  readonly run: DataView;
  readonly runBytes: Uint8Array;
  private readonly runMap: Mapping;
  private readonly attn: Int32Array;
  private readonly sock: number;
  private readonly port: MessagePort;
  private readonly devices = new Map<number, WorkerDevice>();
  /** VM-wide shared memory of features (e.g. ioregionfd locks and counters), by name. */
  readonly shared = new Map<string, SharedArrayBuffer>();
  /** Set by a device that failed an access, for the opt-in failure exit. */
  ioFailure: IoFailure | undefined;
  private entry: GuestFn | undefined;
  private entryName = '';
  /** Set once guest code returned or threw: every later KVM_RUN reports the same exit. */
  private terminal: { reason: number; detail: string } | undefined;
  private readonly rr: ReadResult = { value: 0n };
  private readonly poll = new PollSet(1);
  private readonly sync: Int32Array;
  interruptsEnabled = false;
  readonly handlers = new Map<number, (vector: number) => void>();

  constructor(d: VcpuWorkerData) {
    this.vcpuId = d.vcpuId;
    this.sock = d.sock;
    this.port = d.port;
    this.sync = d.sync;
    // The handle signals this thread by its kernel thread id.
    Atomics.store(this.sync, SYNC.tid, gettid());
    this.runMap = mapShared(d.runFd, KVM_VCPU_MMAP_SIZE);
    closeQuietly(d.runFd);
    this.run = new DataView(this.runMap.buffer);
    this.runBytes = new Uint8Array(this.runMap.buffer);
    this.attn = new Int32Array(this.runMap.buffer, 0, PAGE_SIZE / 4);
    this.regs[REGS.indexOf('rflags')] = 2n;
    // The main thread watched this socket with uv_poll before handing it over, which made it non-blocking.
    setNonBlocking(this.sock, false);
  }

  // ---- the ioctl loop -------------------------------------------------------------------------

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
      let msg;
      this.quiesce(true);
      try {
        msg = receiveMessage(this.sock);
      } catch {
        msg = null;
      } finally {
        this.quiesce(false);
      }
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
    switch (req.request) {
      case KVM_GET_REGS: {
        const out = Buffer.alloc(REGS_SIZE);
        this.regs.forEach((v, i) => out.writeBigUInt64LE(v, 8 * i));
        return encodeReply({ ret: 0, data: out });
      }
      case KVM_SET_REGS:
        if (req.data.length < REGS_SIZE) return encodeReply({ ret: -1, errno: 14, detail: `struct kvm_regs needs ${REGS_SIZE} bytes, got ${req.data.length}` });
        for (let i = 0; i < REGS.length; i++) this.regs[i] = req.data.readBigUInt64LE(8 * i);
        return encodeReply({ ret: 0 });
      case KVM_EMU_SET_GUEST_ENTRY:
        return this.setEntry(req.data);
      default:
        return encodeReply({ ret: -1, errno: EINVAL, detail: `unknown vCPU ioctl 0x${req.request.toString(16)}` });
    }
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
    installCpu(this);
    const args = ARG_REGS.map((r) => this.regs[REGS.indexOf(r)]);
    try {
      this.entry(...args);
      this.terminal = { reason: KVM_EXIT_SHUTDOWN, detail: `guest code ${this.entryName} returned` };
    } catch (e) {
      if (e instanceof VcpuStopped) throw e;
      const err = e as Error;
      this.terminal = { reason: KVM_EXIT_INTERNAL_ERROR, detail: `guest code threw: ${err?.stack ?? String(e)}` };
    }
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
    const w = Atomics.load(this.attn, ATTN_INDEX);
    if (w & EMU_ATTN_STOP) throw new VcpuStopped();
    if (w & EMU_ATTN_UPDATE) this.applyUpdates();
    if (this.run.getUint8(RUN.immediate_exit)) {
      this.reply(REPLY_EINTR);
      return true;
    }
    if (this.consumeKick()) {
      this.setExit(KVM_EXIT_INTR);
      this.reply(REPLY_EINTR);
      return true;
    }
    return false;
  }

  /**
   * Answer the pending KVM_RUN (kvm_run is filled in) and serve ioctls until a KVM_RUN resumes the
   * guest. `complete` runs at the first KVM_RUN, before immediate_exit and signals are looked at, as
   * the API requires: the access is complete even if that KVM_RUN then returns EINTR.
   */
  exitToUser(complete?: () => void): void {
    this.reply(REPLY_OK);
    this.waitForRun(complete);
  }

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

  /** A kick arrived: return to the VMM with EINTR / KVM_EXIT_INTR and carry on at the next KVM_RUN. */
  interrupted(): void {
    this.setExit(KVM_EXIT_INTR);
    this.reply(REPLY_EINTR);
    this.waitForRun();
  }

  setExit(reason: number): void {
    this.run.setUint32(RUN.exit_reason, reason, true);
  }

  // ---- attention: kicks, updates, interrupts, destruction --------------------------------------

  /** Called at every instruction boundary when the attention word is non-zero. */
  private attention(): void {
    const w = Atomics.load(this.attn, ATTN_INDEX);
    if (w & EMU_ATTN_STOP) throw new VcpuStopped();
    if (w & EMU_ATTN_UPDATE) this.applyUpdates();
    if (w & EMU_ATTN_KICK && this.consumeKick()) this.interrupted();
    if (w & EMU_ATTN_IRQ) this.deliverInterrupts();
  }

  /** True once the VM is being destroyed (the thread will be stopped). */
  stopRequested(): boolean {
    return (Atomics.load(this.attn, ATTN_INDEX) & EMU_ATTN_STOP) !== 0;
  }

  /** A signal check for long waits outside poll: throws on destruction, true (consumed) on a kick. */
  checkSignal(): boolean {
    const w = Atomics.load(this.attn, ATTN_INDEX);
    if (w & EMU_ATTN_STOP) throw new VcpuStopped();
    return (w & EMU_ATTN_KICK) !== 0 && this.consumeKick();
  }

  /**
   * Mark this thread as blocked outside guest code (or back from it). A VM changing memslots waits
   * until each vCPU thread has applied the change or is blocked like this: such a thread touches guest
   * memory again only after an instruction boundary, which applies the change first.
   */
  quiesce(blocked: boolean): void {
    Atomics.store(this.sync, SYNC.quiescent, blocked ? 1 : 0);
    if (blocked) Atomics.notify(this.sync, SYNC.applied);
  }

  /** Take a pending kick (the "signal"); true if there was one. */
  consumeKick(): boolean {
    const w = Atomics.and(this.attn, ATTN_INDEX, ~EMU_ATTN_KICK);
    return (w & EMU_ATTN_KICK) !== 0;
  }

  private applyUpdates(): void {
    Atomics.and(this.attn, ATTN_INDEX, ~EMU_ATTN_UPDATE);
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
      const u = m.message as VcpuUpdate;
      if (u.type === 'memslots') {
        this.mem.update(u.slots, new Map(u.fds));
        Atomics.store(this.sync, SYNC.applied, u.gen);
        Atomics.notify(this.sync, SYNC.applied);
      } else if (u.type === 'config') Object.assign(this.config, u.config);
      else if (u.type === 'shared') this.shared.set(u.name, u.buffer);
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

  /** Interrupt delivery at a boundary: pending GSIs run the guest's handlers (kernel-model/irqchip.ts). */
  deliverInterrupts(): void {
    Atomics.and(this.attn, ATTN_INDEX, ~EMU_ATTN_IRQ);
    // One interrupt per boundary; more pending ones are taken at the following boundaries.
    if (this.config.irqchip && this.apic?.deliver(this)) Atomics.or(this.attn, ATTN_INDEX, EMU_ATTN_IRQ);
  }

  /** This vCPU's side of the irqchip, once the VM has one. */
  private get apic(): LocalApic | undefined {
    const state = this.shared.get(IRQCHIP_SHARED);
    if (state && !this.localApic) this.localApic = new LocalApic(state);
    return this.localApic;
  }
  private localApic: LocalApic | undefined;

  /**
   * Enter a wakeable blocking section: tell the handle what would wake us, then look at the attention
   * word (in that order, so a wake posted after the look finds us marked). Throws on destruction;
   * false when a kick was pending (consumed). Every true must be followed by unblock().
   */
  private block(kind: number): boolean {
    Atomics.store(this.sync, SYNC.blocked, kind);
    const w = Atomics.load(this.attn, ATTN_INDEX);
    if (w & EMU_ATTN_STOP || (w & EMU_ATTN_KICK && this.consumeKick())) {
      Atomics.store(this.sync, SYNC.blocked, 0);
      if (w & EMU_ATTN_STOP) throw new VcpuStopped();
      return false;
    }
    this.quiesce(true);
    return true;
  }

  private unblock(): void {
    this.quiesce(false);
    Atomics.store(this.sync, SYNC.blocked, 0);
  }

  /**
   * Block until fd is ready for `events` or a kick / destruction arrives. Returns true when ready,
   * false when kicked (the caller decides how to resume). Interrupts and updates do not end the wait.
   */
  waitFd(fd: number, events: number): boolean {
    const p = this.poll;
    for (;;) {
      if (!this.block(BLOCKED_IO)) return false;
      p.set(0, fd, events);
      let ready: number;
      try {
        ready = p.waitInterruptible(1, -1);
      } finally {
        this.unblock();
      }
      if (ready > 0) return true;
    }
  }

  /**
   * A read(2) that blocks in the kernel (no poll first: the cheapest wait for a device's reply) and
   * that a kick still ends: n >= 0, -errno (-EINTR for any wake, so re-check), or 'kicked'.
   */
  readWakeable(fd: number, buf: Uint8Array, len: number): number | 'kicked' {
    if (!this.block(BLOCKED_IO)) return 'kicked';
    try {
      return readInterruptible(fd, buf, len);
    } finally {
      this.unblock();
    }
  }

  /** Block until the attention word has any of `bits` (interrupts for hlt); false when kicked. */
  waitAttention(bits: number): boolean {
    for (;;) {
      if (!this.block(BLOCKED_HLT)) return false;
      try {
        if (Atomics.load(this.attn, ATTN_INDEX) & bits) return true;
        sleepUntilSignal(-1);
      } finally {
        this.unblock();
      }
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
  }

  // ---- the guest's instruction set ---------------------------------------------------------------

  private boundary(): void {
    if (Atomics.load(this.attn, ATTN_INDEX) !== 0) this.attention();
  }

  pause(): void {
    this.boundary();
  }

  read(gpa: bigint, size: AccessSize): bigint {
    this.boundary();
    const s = this.mem.find(gpa, size);
    if (s) return loadLE(s.view, Number(gpa - s.gpa), size);
    if ((Number(gpa & 0xfffn) + size) > PAGE_SIZE) {
      const b = new Uint8Array(size);
      this.readBytes(gpa, b);
      return loadLE(new DataView(b.buffer), 0, size);
    }
    return this.mmioRead(gpa, size);
  }

  write(gpa: bigint, size: AccessSize, value: bigint): void {
    this.boundary();
    const s = this.mem.find(gpa, size);
    if (s && !s.readonly) return storeLE(s.view, Number(gpa - s.gpa), size, value);
    if ((Number(gpa & 0xfffn) + size) > PAGE_SIZE) {
      const b = new Uint8Array(size);
      storeLE(new DataView(b.buffer), 0, size, value);
      return this.writeBytes(gpa, b);
    }
    this.mmioWrite(gpa, size, value);
  }

  /** One MMIO load of <= 8 bytes inside a page: the bus, else KVM_EXIT_MMIO. */
  private mmioRead(gpa: bigint, len: number): bigint {
    const e = busRead(this.mmioBus, gpa, len, this.rr);
    if (e === 0) return this.rr.value;
    this.run.setBigUint64(RUN.mmio_phys_addr, gpa, true);
    this.run.setBigUint64(RUN.mmio_data, 0n, true);
    this.run.setUint32(RUN.mmio_len, len, true);
    this.run.setUint8(RUN.mmio_is_write, 0);
    let value = 0n;
    if (!this.failureExit(e)) this.setExit(KVM_EXIT_MMIO);
    this.exitToUser(() => {
      value = loadLE(this.run, this.exitDataOffset(), len);
    });
    return value;
  }

  private mmioWrite(gpa: bigint, len: number, value: bigint): void {
    // The EPT-misconfig fast path: exact address, no length, no data.
    if (this.fastMmioBus.devCount && busWrite(this.fastMmioBus, gpa, 0, 0n) === 0) return;
    const e = busWrite(this.mmioBus, gpa, len, value);
    if (e === 0) return;
    this.run.setBigUint64(RUN.mmio_phys_addr, gpa, true);
    this.run.setBigUint64(RUN.mmio_data, 0n, true);
    storeLE(this.run, RUN.mmio_data, len, value);
    this.run.setUint32(RUN.mmio_len, len, true);
    this.run.setUint8(RUN.mmio_is_write, 1);
    if (!this.failureExit(e)) this.setExit(KVM_EXIT_MMIO);
    this.exitToUser();
  }

  /**
   * A device failure (an errno, not EOPNOTSUPP / DEVICE_GONE) becomes KVM_EXIT_IOREGIONFD_FAILURE when
   * the VM opted in. Otherwise the caller's ordinary KVM_EXIT_MMIO / KVM_EXIT_IO stands, as in the RFC.
   */
  private failureExit(e: number): boolean {
    const f = this.ioFailure;
    this.ioFailure = undefined;
    if (e === EOPNOTSUPP || e === DEVICE_GONE || !this.config.failureExit || !f) return false;
    const r = this.run;
    r.setBigUint64(RUN.iofail_addr, f.addr, true);
    r.setBigUint64(RUN.iofail_data, f.isWrite ? f.data : 0n, true);
    r.setUint32(RUN.iofail_len, f.len, true);
    r.setUint8(RUN.iofail_is_write, f.isWrite ? 1 : 0);
    r.setUint8(RUN.iofail_is_pio, f.isPio ? 1 : 0);
    r.setBigUint64(RUN.iofail_user_data, f.userData, true);
    r.setInt32(RUN.iofail_errno, f.errno, true);
    this.setExit(KVM_EXIT_IOREGIONFD_FAILURE);
    return true;
  }

  /** Where the completing data of the current exit lives (mmio.data, or the failure exit's data). */
  private exitDataOffset(): number {
    return this.run.getUint32(RUN.exit_reason, true) === KVM_EXIT_MMIO ? RUN.mmio_data : RUN.iofail_data;
  }

  readBytes(gpa: bigint, out: Uint8Array): void {
    this.copy(gpa, out, false);
  }

  writeBytes(gpa: bigint, data: Uint8Array): void {
    this.copy(gpa, data, true);
  }

  /** x86-style split: page fragments; RAM directly, MMIO in chunks of at most 8 bytes. */
  private copy(gpa: bigint, buf: Uint8Array, isWrite: boolean): void {
    this.boundary();
    let done = 0;
    while (done < buf.length) {
      // An MMIO fragment may have waited for a device: take memslot changes before the next fragment.
      if (done && Atomics.load(this.attn, ATTN_INDEX) & EMU_ATTN_UPDATE) this.applyUpdates();
      const addr = gpa + BigInt(done);
      const inPage = PAGE_SIZE - Number(addr & 0xfffn);
      const frag = Math.min(inPage, buf.length - done);
      const s = this.mem.find(addr, frag);
      if (s && !(isWrite && s.readonly)) {
        const off = Number(addr - s.gpa);
        if (isWrite) s.bytes.set(buf.subarray(done, done + frag), off);
        else buf.set(s.bytes.subarray(off, off + frag), done);
        done += frag;
        continue;
      }
      for (let c = 0; c < frag; c += 8) {
        const len = Math.min(8, frag - c);
        const a = addr + BigInt(c);
        const view = new DataView(buf.buffer, buf.byteOffset + done + c, len);
        if (isWrite) this.mmioWrite(a, len, loadLE(view, 0, len));
        else storeLE(view, 0, len, this.mmioRead(a, len));
      }
      done += frag;
    }
  }

  ram(gpa: bigint, length: number): Uint8Array {
    const s = this.mem.find(gpa, length);
    if (!s) throw new RangeError(`guest RAM [0x${gpa.toString(16)}, +${length}) is not inside one memslot`);
    // A read-only slot is mapped read-only: a store through a view would fault the kernel-model.
    if (s.readonly) throw new RangeError(`guest RAM [0x${gpa.toString(16)}, +${length}) is a KVM_MEM_READONLY slot: use readBytes()`);
    const off = Number(gpa - s.gpa);
    return s.bytes.subarray(off, off + length);
  }

  inPort(port: number, size: PortSize): number {
    this.boundary();
    const e = busRead(this.pioBus, BigInt(port), size, this.rr);
    let value = 0;
    // in writes al/ax/eax.
    const setRax = (): void => {
      const rax = REGS.indexOf('rax');
      const mask = (1n << BigInt(8 * size)) - 1n;
      this.regs[rax] = (this.regs[rax] & ~mask) | BigInt(value);
    };
    if (e === 0) {
      value = Number(this.rr.value);
      setRax();
    } else {
      this.setPioExit(KVM_EXIT_IO_IN, port, size, 1);
      // emulator_pio_in_out zeroes the data userspace is to fill.
      this.runBytes.fill(0, PIO_DATA, PIO_DATA + size);
      if (!this.failureExit(e)) this.setExit(KVM_EXIT_IO);
      // complete_fast_pio_in: RAX is written when the next KVM_RUN completes the access, even if
      // that KVM_RUN then returns EINTR (immediate_exit), so KVM_GET_REGS sees it at once.
      this.exitToUser(() => {
        value = Number(loadLE(this.run, this.run.getUint32(RUN.exit_reason, true) === KVM_EXIT_IO ? PIO_DATA : RUN.iofail_data, size));
        setRax();
      });
    }
    return value;
  }

  outPort(port: number, size: PortSize, value: number): void {
    this.boundary();
    const v = BigInt(value) & ((1n << BigInt(8 * size)) - 1n);
    const e = busWrite(this.pioBus, BigInt(port), size, v);
    if (e === 0) return;
    this.setPioExit(KVM_EXIT_IO_OUT, port, size, 1);
    storeLE(this.run, PIO_DATA, size, v);
    // (io.data_offset shares its offset with the failure exit's data: failureExit() writes that.)
    if (!this.failureExit(e)) this.setExit(KVM_EXIT_IO);
    this.exitToUser();
  }

  private setPioExit(direction: number, port: number, size: number, count: number): void {
    this.run.setUint8(RUN.io_direction, direction);
    this.run.setUint8(RUN.io_size, size);
    this.run.setUint16(RUN.io_port, port, true);
    this.run.setUint32(RUN.io_count, count, true);
    this.run.setBigUint64(RUN.io_data_offset, BigInt(PIO_DATA), true);
  }

  insPort(port: number, size: PortSize, gpa: bigint, count: number): void {
    this.stringPio(port, size, gpa, count, true);
  }

  outsPort(port: number, size: PortSize, gpa: bigint, count: number): void {
    this.stringPio(port, size, gpa, count, false);
  }

  /**
   * rep ins/outs in x86's emulator's batches (measured on a real /dev/kvm): ins reads ahead into its
   * 1024-byte cache, at most to the end of the destination page, so one exit carries up to 1024 / size
   * elements; outs goes one element per exit. Each element is offered to the PIO bus; if the first of
   * a batch is not handled in the kernel, the batch exits to the VMM, as emulator_pio_in_out does.
   */
  private stringPio(port: number, size: PortSize, gpa: bigint, count: number, isIn: boolean): void {
    let i = 0;
    while (i < count) {
      // The emulator re-enters the guest between batches: an instruction boundary.
      this.boundary();
      const addr = gpa + BigInt(i * size);
      // pio_in_emulated: min3(bytes left in the page, cache size / size, count), bytes against elements.
      const chunk = isIn ? Math.min(count - i, PIO_READ_AHEAD / size, PAGE_SIZE - Number(addr & 0xfffn)) : 1;
      const el = new Uint8Array(size);
      const elView = new DataView(el.buffer);
      let e: number;
      if (isIn) {
        e = busRead(this.pioBus, BigInt(port), size, this.rr);
        if (e === 0) storeLE(elView, 0, size, this.rr.value);
      } else {
        this.copy(addr, el, false);
        e = busWrite(this.pioBus, BigInt(port), size, loadLE(elView, 0, size));
      }
      if (e === 0) {
        if (isIn) this.copy(addr, el, true);
        // Later elements stay in the kernel; one that fails there is dropped (reads as 0).
        for (let j = 1; j < chunk; j++) {
          const a = addr + BigInt(j * size);
          if (isIn) {
            const r = busRead(this.pioBus, BigInt(port), size, this.rr);
            storeLE(elView, 0, size, r === 0 ? this.rr.value : 0n);
            this.copy(a, el, true);
          } else {
            this.copy(a, el, false);
            busWrite(this.pioBus, BigInt(port), size, loadLE(elView, 0, size));
          }
        }
      } else {
        this.setPioExit(isIn ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT, port, size, chunk);
        this.setExit(KVM_EXIT_IO);
        const bytes = this.runBytes.subarray(PIO_DATA, PIO_DATA + chunk * size);
        if (isIn) {
          const got = new Uint8Array(chunk * size);
          bytes.fill(0);
          this.exitToUser(() => got.set(bytes));
          this.copy(addr, got, true);
        } else {
          const data = new Uint8Array(chunk * size);
          this.copy(addr, data, false);
          bytes.set(data);
          this.exitToUser();
        }
      }
      i += chunk;
    }
  }

  hlt(): void {
    const taken = this.apic?.delivered ?? 0;
    this.boundary();
    if (this.config.irqchip) {
      // With an irqchip the vCPU sleeps in the kernel until it takes an interrupt (one taken at this
      // very boundary counts: sti; hlt does not lose a wakeup). A kick returns EINTR and the vCPU
      // stays halted; updates are applied while halted; with interrupts disabled only a kick ends it.
      while ((this.apic?.delivered ?? 0) === taken) {
        if (this.waitAttention(EMU_ATTN_IRQ | EMU_ATTN_UPDATE)) this.attention();
        else this.interrupted();
      }
      return;
    }
    this.setExit(KVM_EXIT_HLT);
    this.exitToUser();
  }

  setInterruptsEnabled(on: boolean): void {
    this.interruptsEnabled = on;
    // sti: interrupts that stayed pending while disabled are taken at this boundary.
    if (on && this.config.irqchip) Atomics.or(this.attn, ATTN_INDEX, EMU_ATTN_IRQ);
    this.boundary();
  }

  setInterruptHandler(vector: number, handler: ((vector: number) => void) | undefined): void {
    if (handler) this.handlers.set(vector, handler);
    else this.handlers.delete(vector);
  }
}


if (workerData && (workerData as { vcpuThread?: boolean }).vcpuThread) {
  new VcpuThread(workerData as VcpuWorkerData).serve();
}
