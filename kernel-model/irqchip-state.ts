// The irqchip's state as the VM's threads share it: the words of the VM-wide shared block, how a
// source drives a GSI's line, and one vCPU thread's side of delivery (its in-service set, taking
// interrupts at instruction boundaries, EOIs). The VM half (KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, the
// main thread's view) is irqchip.ts; the model itself is described there.

/** GSIs with a route (x86 default routing: IOAPIC pins 0..23). */
export const NR_GSIS = 24;

/** Name of the irqchip's VM-wide shared buffer (see Vm.sharedBuffer). */
export const IRQCHIP_SHARED = 'irqchip';
export const IRQCHIP_WORDS = 64;

/** Word indices inside the irqchip block. */
const W_IRR = 0; // pending GSIs, bit per GSI
export const W_RESAMPLE = 1; // GSIs that have at least one resample irqfd
export const W_ACK = 2; // GSIs EOI'd since the main thread last looked (for resamplefds)
export const W_EOI_SEQ = 3; // bumped and notified at each such EOI
export const W_TARGET = 4; // vCPU id interrupts go to
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
