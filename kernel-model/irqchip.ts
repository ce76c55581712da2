// The in-kernel interrupt controller of KVM_CREATE_IRQCHIP: 24 GSI lines, KVM_IRQ_LINE, and delivery
// of pending interrupts to the guest's handlers at instruction boundaries.
//
// The model is deliberately small (no PIC/IOAPIC/LAPIC registers) but keeps the rules guests and
// irqfds depend on:
// * GSIs 0..23 exist (the x86 default routing: IOAPIC pins 0..23); a GSI beyond that has no route,
//   so raising it is accepted and does nothing, as kvm_set_irq() does for an unrouted GSI.
// * GSI n is delivered as vector n: the guest installs its handler for vector n (there is no IDT
//   or redirection table to program).
// * Every GSI is edge-triggered, active-high: the reset state of the PIC (ELCR 0) and of IOAPIC
//   redirection entries, which this guest cannot reprogram. Each source (KVM_IRQ_LINE and irqfds
//   share the user source id, resample irqfds have their own, as in kvm_set_irq) drives its own
//   bit of the line; a rising edge of the OR of the sources makes the GSI pending (IRR), once, so a
//   line held asserted fires once and a pulse (irqfd, KVM_IRQ_LINE 1 then 0) fires once however the
//   guest's EOI interleaves with it. Delivery moves the GSI to in-service (ISR) with interrupts
//   disabled, as an interrupt gate does; the handler's return is the EOI. A resample irqfd keeps its
//   source asserted until that EOI (further writes coalesce), then drops it and its resamplefd is
//   signalled: level-triggered until the guest acknowledges, as KVM_IRQFD_FLAG_RESAMPLE means.
// * Interrupts go to the first vCPU created (kvm_get_vcpu(kvm, 0), where the PIC's output goes);
//   it takes at most one per instruction boundary, the lowest pending GSI first, and only with
//   interrupts enabled (sti); hlt() sleeps until one is taken.
// * A GSI delivered with interrupts enabled but no handler installed is a guest bug: the vCPU stops
//   with KVM_EXIT_INTERNAL_ERROR naming the vector (real hardware would triple-fault).
//
// State lives in a VM-wide shared buffer (vm.sharedBuffer(IRQCHIP_SHARED)) and is changed with
// Atomics only: the main thread drives the lines, the target vCPU thread takes and ends interrupts.

import { EEXIST, EINVAL, ENXIO } from '../proto/errno';
import { EMU_ATTN_IRQ, IRQ_LEVEL, KVM_CAP_IRQCHIP, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE } from '../proto/kvm-uapi';
import type { KvmFeature } from './kvm';
import { fail } from './server';
import type { Vm } from './vm';

/** GSIs with a route (x86 default routing: IOAPIC pins 0..23). */
export const NR_GSIS = 24;

/** Name of the irqchip's VM-wide shared buffer (see Vm.sharedBuffer). */
export const IRQCHIP_SHARED = 'irqchip';
const IRQCHIP_WORDS = 64;

/** Word indices inside the irqchip block. */
const W_IRR = 0; // pending GSIs, bit per GSI
const W_RESAMPLE = 1; // GSIs that have at least one resample irqfd
const W_ACK = 2; // GSIs EOI'd since the main thread last looked (for resamplefds)
const W_EOI_SEQ = 3; // bumped and notified at each such EOI
const W_TARGET = 4; // vCPU id interrupts go to
const W_LINE = 8; // W_LINE + gsi: bit per source currently asserting the line

/** kvm_set_irq's source ids as line bits: KVM_USERSPACE_IRQ_SOURCE_ID and KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID. */
export const SOURCE_USER = 1 << 0;
export const SOURCE_RESAMPLE = 1 << 1;

/** A fresh irqchip state block (the VM creates it as a shared buffer; unit tests directly). */
export function newIrqchipState(): SharedArrayBuffer {
  return new SharedArrayBuffer(IRQCHIP_WORDS * 4);
}

/**
 * Drive one source of a GSI's line to `level`. Returns true when the line rose (the GSI is now
 * pending and its vCPU must be woken). GSIs without a route are ignored.
 */
export function setLine(words: Int32Array, gsi: number, source: number, level: boolean): boolean {
  if (!(gsi >= 0 && gsi < NR_GSIS)) return false;
  for (;;) {
    const old = Atomics.load(words, W_LINE + gsi);
    const now = level ? old | source : old & ~source;
    if (Atomics.compareExchange(words, W_LINE + gsi, old, now) !== old) continue;
    if (old !== 0 || now === 0) return false;
    Atomics.or(words, W_IRR, 1 << gsi);
    return true;
  }
}

/** What delivery needs from a vCPU (VcpuThread implements it). */
export interface InterruptibleCpu {
  readonly vcpuId: number;
  interruptsEnabled: boolean;
  readonly handlers: Map<number, (vector: number) => void>;
}

/** One vCPU thread's side of the irqchip: its in-service set and the delivery loop. */
export class LocalApic {
  /** GSIs whose handler is running (the ISR). */
  private inService = 0;
  /** Interrupts taken so far; hlt() watches it to know an interrupt ended the halt. */
  delivered = 0;

  private readonly words: Int32Array;

  constructor(state: SharedArrayBuffer) {
    this.words = new Int32Array(state);
  }

  /** Pending GSIs this vCPU could take now (ignoring the interrupt flag). */
  pending(vcpuId: number): number {
    if (Atomics.load(this.words, W_TARGET) !== vcpuId) return 0;
    return Atomics.load(this.words, W_IRR) & ~this.inService;
  }

  /**
   * Take one pending interrupt if the vCPU accepts it, as x86 injects at most one per instruction
   * boundary (so a storm of level-triggered interrupts still lets kicks in between): the lowest GSI,
   * its handler run with interrupts disabled, its return the EOI. Returns true when another
   * interrupt is ready to be taken at the next boundary. Throws (a guest error) when no handler exists.
   */
  deliver(cpu: InterruptibleCpu): boolean {
    if (!cpu.interruptsEnabled) return false;
    const ready = this.pending(cpu.vcpuId);
    if (!ready) return false;
    const gsi = 31 - Math.clz32(ready & -ready);
    const bit = 1 << gsi;
    Atomics.and(this.words, W_IRR, ~bit);
    const handler = cpu.handlers.get(gsi);
    if (!handler) throw new Error(`interrupt vector ${gsi} (GSI ${gsi}) was delivered with interrupts enabled, but the guest installed no handler for it`);
    this.inService |= bit;
    this.delivered++;
    cpu.interruptsEnabled = false;
    handler(gsi);
    // iret restores the interrupt flag the gate cleared.
    cpu.interruptsEnabled = true;
    this.eoi(gsi);
    return this.pending(cpu.vcpuId) !== 0;
  }

  /** End of interrupt: resamplers drop their level and get notified (irqfd_resampler_ack). */
  private eoi(gsi: number): void {
    const bit = 1 << gsi;
    this.inService &= ~bit;
    if (Atomics.load(this.words, W_RESAMPLE) & bit) {
      Atomics.and(this.words, W_LINE + gsi, ~SOURCE_RESAMPLE);
      Atomics.or(this.words, W_ACK, bit);
      Atomics.add(this.words, W_EOI_SEQ, 1);
      Atomics.notify(this.words, W_EOI_SEQ);
    }
  }
}

// Atomics.waitAsync is in Node 20 but not in the ES2022 lib this project compiles against.
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** A VM's irqchip on the main thread: drives lines, picks the target vCPU, hears EOIs for resamplers. */
export class Irqchip {
  readonly words: Int32Array;
  private ackListener: ((acked: number) => void) | undefined;
  private watching = false;
  private destroyed = false;

  constructor(private readonly vm: Vm) {
    this.words = new Int32Array(vm.sharedBuffer(IRQCHIP_SHARED, IRQCHIP_WORDS * 4));
  }

  /** kvm_set_irq(kvm, source, gsi, level): wakes the target vCPU when the GSI becomes pending. */
  setIrq(gsi: number, source: number, level: boolean): void {
    // Once the VM is going away its vCPUs' kvm_run pages and kick eventfds may already be gone.
    if (this.destroyed || this.vm.destroying) return;
    const target = this.vm.vcpus.values().next().value;
    if (target) Atomics.store(this.words, W_TARGET, target.id);
    if (setLine(this.words, gsi, source, level) && target) target.signal(EMU_ATTN_IRQ);
  }

  /** Mark whether a GSI has resample irqfds (the vCPU then reports its EOIs). */
  setResample(gsi: number, on: boolean): void {
    if (gsi >= NR_GSIS) return;
    if (on) Atomics.or(this.words, W_RESAMPLE, 1 << gsi);
    else Atomics.and(this.words, W_RESAMPLE, ~(1 << gsi));
  }

  /** Be told (on the main thread) which GSIs were EOI'd while they had resamplers. */
  onAck(listener: (acked: number) => void): void {
    this.ackListener = listener;
    if (!this.watching) this.watchAcks();
  }

  private watchAcks(): void {
    if (this.destroyed) return;
    this.watching = true;
    const seq = Atomics.load(this.words, W_EOI_SEQ);
    const acked = Atomics.exchange(this.words, W_ACK, 0);
    if (acked) this.ackListener?.(acked);
    const w = waitAsync(this.words, W_EOI_SEQ, seq);
    if (w.async) void (w.value as Promise<string>).then(() => this.watchAcks());
    else setImmediate(() => this.watchAcks());
  }

  /** Stop listening for EOIs (VM destruction). */
  destroy(): void {
    this.destroyed = true;
    Atomics.add(this.words, W_EOI_SEQ, 1);
    Atomics.notify(this.words, W_EOI_SEQ);
  }
}

/** The VM's irqchip, if KVM_CREATE_IRQCHIP made one. */
export function irqchipOf(vm: Vm): Irqchip | undefined {
  return vm.state.get('irqchip') as Irqchip | undefined;
}

/** KVM_CREATE_IRQCHIP: x86's order, EEXIST if one exists, then EINVAL once vCPUs exist. */
function createIrqchip(vm: Vm): { ret: number } {
  if (irqchipOf(vm)) throw fail(EEXIST, 'the VM already has an irqchip');
  if (vm.vcpus.size) throw fail(EINVAL, `KVM_CREATE_IRQCHIP after ${vm.vcpus.size} vCPU(s) were created`);
  vm.state.set('irqchip', new Irqchip(vm));
  vm.setConfig({ irqchip: true });
  return { ret: 0 };
}

/**
 * KVM_IRQ_LINE (struct kvm_irq_level): ENXIO without an irqchip; otherwise always 0, even for a GSI
 * without a route or a level other than 0/1 (non-zero means asserted), as measured on x86.
 */
function irqLine(vm: Vm, data: Buffer): { ret: number } {
  const chip = irqchipOf(vm);
  if (!chip) throw fail(ENXIO, 'KVM_IRQ_LINE needs an irqchip (KVM_CREATE_IRQCHIP)');
  const gsi = data.readUInt32LE(IRQ_LEVEL.irq);
  const level = data.readUInt32LE(IRQ_LEVEL.level) !== 0;
  chip.setIrq(gsi, SOURCE_USER, level);
  return { ret: 0 };
}

export const irqchip: KvmFeature = {
  caps: () => ({ [KVM_CAP_IRQCHIP]: 1 }),
  ioctls: {
    [KVM_CREATE_IRQCHIP]: (vm) => createIrqchip(vm),
    [KVM_IRQ_LINE]: (vm, req) => irqLine(vm, req.data),
  },
  destroy: (vm) => irqchipOf(vm)?.destroy(),
};
