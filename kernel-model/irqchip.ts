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
import { IRQ_LEVEL, KVM_CAP_IRQCHIP, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE } from '../proto/kvm-uapi';
import { IRQCHIP_SHARED, IRQCHIP_WORDS, NR_GSIS, setLine, SOURCE_USER, W_ACK, W_EOI_SEQ, W_RESAMPLE, W_TARGET } from './irqchip-state';
import { ATTN_IRQ } from './vcpu-contract';
import type { KvmFeature } from './kvm';
import { fail } from './server';
import type { Vm } from './vm';

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
    if (setLine(this.words, gsi, source, level) && target) target.signal(ATTN_IRQ);
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
