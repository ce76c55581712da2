// The guest's instruction set: what guest code calls through proto/guest-cpu (loads, stores, port
// I/O, string I/O, hlt, interrupts), on top of a vCPU thread (the CpuHost) that owns kvm_run, the
// buses, guest memory and the KVM_RUN state machine.
//
// Every call is an instruction boundary. An access goes to RAM if a memslot covers it, else to the
// bus; what no device takes (or a device fails) becomes a KVM_EXIT_MMIO / KVM_EXIT_IO, or the opt-in
// KVM_EXIT_IOREGIONFD_FAILURE, completed by the next KVM_RUN as x86's complete_userspace_io does.

import { EOPNOTSUPP } from '../proto/errno';
import { AccessSize, GuestCpu, PortSize } from '../proto/guest-cpu';
import {
  KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_IOREGIONFD_FAILURE, KVM_EXIT_MMIO, KVM_PIO_PAGE_OFFSET,
  PAGE_SIZE, REGS, RUN,
} from '../proto/kvm-uapi';
import { GuestMemory, loadLE, storeLE } from './guest-memory';
import { AccessResult, busRead, busWrite, DEVICE_GONE, IoBus, IoDevice, IoFailure, ReadResult } from './io-bus';
import { IRQCHIP_SHARED, InterruptibleCpu, LocalApic } from './irqchip-state';
import type { VcpuConfig } from './vcpu-contract';
import type { DeferredWrites } from './vcpu-port';

const PIO_DATA = KVM_PIO_PAGE_OFFSET * PAGE_SIZE;
/** x86 emulator's string-I/O read-ahead cache (struct read_cache's data[1024]). */
const PIO_READ_AHEAD = 1024;
const RAX = REGS.indexOf('rax');

/** What the instruction set needs from the vCPU thread it runs on. */
export interface CpuHost {
  readonly config: Readonly<VcpuConfig>;
  readonly mem: GuestMemory;
  readonly mmioBus: IoBus<IoDevice>;
  readonly pioBus: IoBus<IoDevice>;
  /** x86's KVM_FAST_MMIO_BUS: len-0 ioeventfds and size-0 ioregions, probed first for MMIO writes. */
  readonly fastMmioBus: IoBus<IoDevice>;
  /** The kvm_run page the VMM maps: exits are written here. */
  readonly run: DataView;
  readonly runBytes: Uint8Array;
  /** An instruction boundary: take a pending kick, memslot and device updates, an interrupt. */
  boundary(): void;
  /** Posted writes a device holds back (vcpu-port.ts DeferredWrites); cleared by the CPU as it sends them. */
  deferred: DeferredWrites | undefined;
  /** Whether the next boundary has something to take (then held writes go out first). */
  attentionPending(): boolean;
  /** Apply waiting memslot updates now (between the fragments of one long access). */
  takeUpdates(): void;
  /**
   * Exit to the VMM with `reason` (the exit's fields are already in kvm_run) and return when a KVM_RUN
   * resumes the guest; `complete` runs at that KVM_RUN first, even if it then returns EINTR.
   */
  exit(reason: number, complete?: () => void): void;
  /** hlt with an irqchip: sleep until `woken()`; kicks return KVM_EXIT_INTR meanwhile. */
  haltUntil(woken: () => boolean): void;
  /** Look for interrupts again at the next boundary (sti with interrupts pending). */
  requestInterruptCheck(): void;
  shared(name: string): SharedArrayBuffer | undefined;
}

export class Cpu implements GuestCpu, InterruptibleCpu {
  /** The register file in struct kvm_regs order, shared with KVM_GET/SET_REGS. */
  readonly regs = new BigUint64Array(REGS.length);
  interruptsEnabled = false;
  readonly handlers = new Map<number, (vector: number) => void>();
  private readonly rr: ReadResult = { value: 0n };
  private localApic: LocalApic | undefined;

  constructor(readonly vcpuId: number, private readonly host: CpuHost) {
    this.regs[REGS.indexOf('rflags')] = 2n;
  }

  /** This vCPU's side of the irqchip, once the VM has one. */
  private get apic(): LocalApic | undefined {
    const state = this.host.shared(IRQCHIP_SHARED);
    if (state && !this.localApic) this.localApic = new LocalApic(state);
    return this.localApic;
  }

  /**
   * Interrupt delivery at a boundary: one pending GSI runs the guest's handler (irqchip-state.ts).
   * Returns true when another interrupt is ready for the next boundary.
   */
  takeInterrupt(): boolean {
    return this.host.config.irqchip && this.apic !== undefined && this.apic.deliver(this);
  }

  /**
   * An instruction boundary as the CPU takes it: held posted writes go out first (an ordinary exit for
   * each one that fails, in program order), unless this operation is a posted write that joins them
   * (`port`: a write to that MMIO address or port); then whatever is pending (kicks, interrupts).
   */
  private boundary(pio?: boolean, addr?: bigint): void {
    const held = this.host.deferred;
    if (held && !(addr !== undefined && held.joins(pio!, addr) && !this.host.attentionPending())) this.flushPosted();
    this.host.boundary();
  }

  /** Send the writes a device holds back; each that cannot go becomes its own exit, in order. */
  flushPosted(): void {
    const held = this.host.deferred;
    if (!held) return;
    this.host.deferred = undefined;
    for (const f of held.flush()) this.exitForWrite(f);
  }

  /** The exit of a write no device took (errno 0: its region went away) or one a device failed. */
  private exitForWrite(f: IoFailure): void {
    const run = this.host.run;
    const outcome: AccessResult = f.errno ? f : DEVICE_GONE;
    if (f.isPio) {
      this.setPioExit(KVM_EXIT_IO_OUT, Number(f.addr), f.len, 1);
      storeLE(run, PIO_DATA, f.len, f.data);
      this.host.exit(this.reportFailure(outcome) ? KVM_EXIT_IOREGIONFD_FAILURE : KVM_EXIT_IO);
      return;
    }
    run.setBigUint64(RUN.mmio_phys_addr, f.addr, true);
    run.setBigUint64(RUN.mmio_data, 0n, true);
    storeLE(run, RUN.mmio_data, f.len, f.data);
    run.setUint32(RUN.mmio_len, f.len, true);
    run.setUint8(RUN.mmio_is_write, 1);
    this.host.exit(this.reportFailure(outcome) ? KVM_EXIT_IOREGIONFD_FAILURE : KVM_EXIT_MMIO);
  }

  pause(): void {
    this.boundary();
  }

  read(gpa: bigint, size: AccessSize): bigint {
    this.boundary();
    const s = this.host.mem.find(gpa, size);
    if (s) return loadLE(s.view, Number(gpa - s.gpa), size);
    if ((Number(gpa & 0xfffn) + size) > PAGE_SIZE) {
      const b = new Uint8Array(size);
      this.readBytes(gpa, b);
      return loadLE(new DataView(b.buffer), 0, size);
    }
    return this.mmioRead(gpa, size);
  }

  write(gpa: bigint, size: AccessSize, value: bigint): void {
    this.boundary(false, gpa);
    const s = this.host.mem.find(gpa, size);
    if (s && !s.readonly) {
      // A store to RAM is ordered after every posted write before it.
      this.flushPosted();
      return storeLE(s.view, Number(gpa - s.gpa), size, value);
    }
    if ((Number(gpa & 0xfffn) + size) > PAGE_SIZE) {
      const b = new Uint8Array(size);
      storeLE(new DataView(b.buffer), 0, size, value);
      return this.writeBytes(gpa, b);
    }
    this.mmioWrite(gpa, size, value);
  }

  /** One MMIO load of <= 8 bytes inside a page: the bus, else KVM_EXIT_MMIO. */
  private mmioRead(gpa: bigint, len: number): bigint {
    const e = busRead(this.host.mmioBus, gpa, len, this.rr);
    if (e === 0) return this.rr.value;
    const run = this.host.run;
    run.setBigUint64(RUN.mmio_phys_addr, gpa, true);
    run.setBigUint64(RUN.mmio_data, 0n, true);
    run.setUint32(RUN.mmio_len, len, true);
    run.setUint8(RUN.mmio_is_write, 0);
    // Where the VMM puts the data depends on the exit we chose, never on what kvm_run says later.
    const failed = this.reportFailure(e);
    const dataAt = failed ? RUN.iofail_data : RUN.mmio_data;
    let value = 0n;
    this.host.exit(failed ? KVM_EXIT_IOREGIONFD_FAILURE : KVM_EXIT_MMIO, () => {
      value = loadLE(run, dataAt, len);
    });
    return value;
  }

  private mmioWrite(gpa: bigint, len: number, value: bigint): void {
    // The EPT-misconfig fast path: exact address, no length, no data. A doorbell that failed there
    // is not offered to its MMIO-bus entry again: the one failure is the access's outcome.
    const fast = this.host.fastMmioBus.devCount ? busWrite(this.host.fastMmioBus, gpa, 0, 0n) : EOPNOTSUPP;
    if (fast === 0) return;
    const e = fast !== EOPNOTSUPP ? fast : busWrite(this.host.mmioBus, gpa, len, value);
    if (e === 0) return;
    const run = this.host.run;
    run.setBigUint64(RUN.mmio_phys_addr, gpa, true);
    run.setBigUint64(RUN.mmio_data, 0n, true);
    storeLE(run, RUN.mmio_data, len, value);
    run.setUint32(RUN.mmio_len, len, true);
    run.setUint8(RUN.mmio_is_write, 1);
    this.host.exit(this.reportFailure(e) ? KVM_EXIT_IOREGIONFD_FAILURE : KVM_EXIT_MMIO);
  }

  /**
   * A device failure becomes KVM_EXIT_IOREGIONFD_FAILURE (its fields written here) when the VM opted
   * in; otherwise the caller's ordinary KVM_EXIT_MMIO / KVM_EXIT_IO stands, as in the RFC. An access
   * nobody took, or one whose region went away under it, is never a failure.
   */
  private reportFailure(e: AccessResult): boolean {
    if (typeof e === 'number' || !this.host.config.failureExit) return false;
    const r = this.host.run;
    r.setBigUint64(RUN.iofail_addr, e.addr, true);
    // The guest's bytes only, as the command carried them.
    r.setBigUint64(RUN.iofail_data, e.isWrite ? BigInt.asUintN(8 * e.len || 8, e.data) : 0n, true);
    r.setUint32(RUN.iofail_len, e.len, true);
    r.setUint8(RUN.iofail_is_write, e.isWrite ? 1 : 0);
    r.setUint8(RUN.iofail_is_pio, e.isPio ? 1 : 0);
    r.setBigUint64(RUN.iofail_user_data, e.userData, true);
    r.setInt32(RUN.iofail_errno, e.errno, true);
    return true;
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
      if (done) this.host.takeUpdates();
      const addr = gpa + BigInt(done);
      const inPage = PAGE_SIZE - Number(addr & 0xfffn);
      const frag = Math.min(inPage, buf.length - done);
      const s = this.host.mem.find(addr, frag);
      if (s && !(isWrite && s.readonly)) {
        this.flushPosted();
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
    this.flushPosted();
    const s = this.host.mem.find(gpa, length);
    if (!s) throw new RangeError(`guest RAM [0x${gpa.toString(16)}, +${length}) is not inside one memslot`);
    // A read-only slot is mapped read-only: a store through a view would fault the kernel-model.
    if (s.readonly) throw new RangeError(`guest RAM [0x${gpa.toString(16)}, +${length}) is a KVM_MEM_READONLY slot: use readBytes()`);
    const off = Number(gpa - s.gpa);
    return s.bytes.subarray(off, off + length);
  }

  /** in writes al/ax/eax. */
  private setRax(value: number, size: PortSize): void {
    const mask = (1n << BigInt(8 * size)) - 1n;
    this.regs[RAX] = (this.regs[RAX] & ~mask) | BigInt(value);
  }

  inPort(port: number, size: PortSize): number {
    this.boundary();
    const e = busRead(this.host.pioBus, BigInt(port), size, this.rr);
    if (e === 0) {
      const value = Number(this.rr.value);
      this.setRax(value, size);
      return value;
    }
    this.setPioExit(KVM_EXIT_IO_IN, port, size, 1);
    // emulator_pio_in_out zeroes the data userspace is to fill.
    this.host.runBytes.fill(0, PIO_DATA, PIO_DATA + size);
    const failed = this.reportFailure(e);
    const dataAt = failed ? RUN.iofail_data : PIO_DATA;
    let value = 0;
    // complete_fast_pio_in: RAX is written when the next KVM_RUN completes the access, even if that
    // KVM_RUN then returns EINTR (immediate_exit), so KVM_GET_REGS sees it at once.
    this.host.exit(failed ? KVM_EXIT_IOREGIONFD_FAILURE : KVM_EXIT_IO, () => {
      value = Number(loadLE(this.host.run, dataAt, size));
      this.setRax(value, size);
    });
    return value;
  }

  outPort(port: number, size: PortSize, value: number): void {
    this.boundary(true, BigInt(port));
    const v = BigInt(value) & ((1n << BigInt(8 * size)) - 1n);
    const e = busWrite(this.host.pioBus, BigInt(port), size, v);
    if (e === 0) return;
    this.setPioExit(KVM_EXIT_IO_OUT, port, size, 1);
    storeLE(this.host.run, PIO_DATA, size, v);
    // (io.data_offset shares its offset with the failure exit's data: reportFailure() writes that.)
    this.host.exit(this.reportFailure(e) ? KVM_EXIT_IOREGIONFD_FAILURE : KVM_EXIT_IO);
  }

  private setPioExit(direction: number, port: number, size: number, count: number): void {
    const run = this.host.run;
    run.setUint8(RUN.io_direction, direction);
    run.setUint8(RUN.io_size, size);
    run.setUint16(RUN.io_port, port, true);
    run.setUint32(RUN.io_count, count, true);
    run.setBigUint64(RUN.io_data_offset, BigInt(PIO_DATA), true);
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
    const bus = this.host.pioBus;
    let i = 0;
    while (i < count) {
      // The emulator re-enters the guest between batches: an instruction boundary.
      this.boundary();
      const addr = gpa + BigInt(i * size);
      // pio_in_emulated: min3(bytes left in the page, cache size / size, count), bytes against elements.
      const chunk = isIn ? Math.min(count - i, PIO_READ_AHEAD / size, PAGE_SIZE - Number(addr & 0xfffn)) : 1;
      const el = new Uint8Array(size);
      const elView = new DataView(el.buffer);
      let e: AccessResult;
      if (isIn) {
        e = busRead(bus, BigInt(port), size, this.rr);
        if (e === 0) storeLE(elView, 0, size, this.rr.value);
      } else {
        this.copy(addr, el, false);
        e = busWrite(bus, BigInt(port), size, loadLE(elView, 0, size));
      }
      if (e === 0) {
        if (isIn) this.copy(addr, el, true);
        // Later elements stay in the kernel; one that fails there is dropped (reads as 0).
        for (let j = 1; j < chunk; j++) {
          const a = addr + BigInt(j * size);
          if (isIn) {
            const r = busRead(bus, BigInt(port), size, this.rr);
            storeLE(elView, 0, size, r === 0 ? this.rr.value : 0n);
            this.copy(a, el, true);
          } else {
            this.copy(a, el, false);
            busWrite(bus, BigInt(port), size, loadLE(elView, 0, size));
          }
        }
      } else if (typeof e !== 'number' && this.host.config.failureExit) {
        // A device failed the element: the opt-in failure exit reports it, one element per exit.
        this.setPioExit(isIn ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT, port, size, 1);
        this.reportFailure(e);
        const got = new Uint8Array(size);
        this.host.exit(KVM_EXIT_IOREGIONFD_FAILURE, () => storeLE(new DataView(got.buffer), 0, size, loadLE(this.host.run, RUN.iofail_data, size)));
        if (isIn) this.copy(addr, got, true);
        i += 1;
        continue;
      } else {
        this.setPioExit(isIn ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT, port, size, chunk);
        const bytes = this.host.runBytes.subarray(PIO_DATA, PIO_DATA + chunk * size);
        if (isIn) {
          const got = new Uint8Array(chunk * size);
          bytes.fill(0);
          this.host.exit(KVM_EXIT_IO, () => got.set(bytes));
          this.copy(addr, got, true);
        } else {
          const data = new Uint8Array(chunk * size);
          this.copy(addr, data, false);
          bytes.set(data);
          this.host.exit(KVM_EXIT_IO);
        }
      }
      i += chunk;
    }
  }

  hlt(): void {
    const taken = this.apic?.delivered ?? 0;
    this.boundary();
    // With an irqchip the vCPU sleeps in the kernel until it takes an interrupt (one taken at this
    // very boundary counts: sti; hlt does not lose a wakeup). A kick returns EINTR and the vCPU
    // stays halted; updates are applied while halted; with interrupts disabled only a kick ends it.
    if (this.host.config.irqchip) return this.host.haltUntil(() => (this.apic?.delivered ?? 0) !== taken);
    this.host.exit(KVM_EXIT_HLT);
  }

  setInterruptsEnabled(on: boolean): void {
    this.interruptsEnabled = on;
    // sti: interrupts that stayed pending while disabled are taken at this boundary.
    if (on && this.host.config.irqchip) this.host.requestInterruptCheck();
    this.boundary();
  }

  setInterruptHandler(vector: number, handler: ((vector: number) => void) | undefined): void {
    if (handler) this.handlers.set(vector, handler);
    else this.handlers.delete(vector);
  }
}
