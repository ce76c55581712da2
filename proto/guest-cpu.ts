// The instruction set guest code runs on: what a vCPU offers to the guest module it executes.
//
// Guest code is a compiled JS module loaded inside the kernel-model's vCPU worker thread; it reaches
// the CPU through cpu(). Each call is an "instruction boundary": a pending kick (signal) or interrupt
// is taken there, never in the middle of a JS statement, much like a real vCPU only exits between
// instructions. Guest code that loops without calling the CPU cannot be interrupted.

/** Access sizes of a single MMIO load/store. */
export type AccessSize = 1 | 2 | 4 | 8;
/** Access sizes of a port I/O instruction. */
export type PortSize = 1 | 2 | 4;

export interface GuestCpu {
  readonly vcpuId: number;
  /** The register file in struct kvm_regs order (rax .. r15, rip, rflags), shared with KVM_GET/SET_REGS. */
  readonly regs: BigUint64Array;

  /** A load of `size` bytes at a guest physical address: RAM if a memslot covers it, else the MMIO bus or a KVM_EXIT_MMIO. */
  read(gpa: bigint, size: AccessSize): bigint;
  /** A store; value is truncated to `size` bytes. */
  write(gpa: bigint, size: AccessSize, value: bigint): void;
  /** Copy guest memory of any length (split into pages and <= 8-byte accesses like x86's emulator). */
  readBytes(gpa: bigint, out: Uint8Array): void;
  writeBytes(gpa: bigint, data: Uint8Array): void;
  /** A view straight into RAM, for bulk work; throws RangeError unless one writable memslot holds all of it. */
  ram(gpa: bigint, length: number): Uint8Array;

  /** in al/ax/eax, port. */
  inPort(port: number, size: PortSize): number;
  /** out port, al/ax/eax. */
  outPort(port: number, size: PortSize, value: number): void;
  /** rep ins: `count` elements of `size` bytes from the port into guest memory at gpa. */
  insPort(port: number, size: PortSize, gpa: bigint, count: number): void;
  /** rep outs: `count` elements of `size` bytes from guest memory at gpa to the port. */
  outsPort(port: number, size: PortSize, gpa: bigint, count: number): void;

  /** Halt until an interrupt (with an irqchip) or exit with KVM_EXIT_HLT (without). */
  hlt(): void;
  /** Interrupt flag: sti / cli. */
  setInterruptsEnabled(on: boolean): void;
  /** Install the handler for an interrupt vector (GSI); undefined removes it. */
  setInterruptHandler(vector: number, handler: ((vector: number) => void) | undefined): void;
  /** An instruction boundary with no other effect (lets pending kicks and interrupts in). */
  pause(): void;
}

let current: GuestCpu | undefined;
let guestContext = false;

/**
 * Mark this thread as a vCPU thread: what it loads from now on is guest code, and guest code that
 * tries to act as a VMM (open /dev/kvm, print a test plan) is stopped with a clear error.
 */
export function enterGuestContext(): void {
  guestContext = true;
}

/** True on a vCPU thread of the kernel-model, where guest modules run. */
export function inGuestContext(): boolean {
  return guestContext;
}

/** Thrown by VMM-side code that finds itself running as guest code. */
export class GuestContextError extends Error {
  override name = 'GuestContextError';
}

let violation: string | undefined;

/**
 * VMM-side entry points (opening /dev/kvm, printing a test plan, spawning a device task) call this:
 * on a vCPU thread it throws, and the vCPU thread reports the first such violation when it set up the
 * guest entry point. That happens when a program's top-level code starts its test on load: the
 * kernel-model loads the program's module for its guest code, which would then open /dev/kvm again,
 * start another kernel-model, and so on.
 */
export function refuseInGuestContext(what: string): void {
  if (!guestContext) return;
  const message = `${what} was called on a vCPU thread: the kernel-model loaded this program's module for its guest code ` +
    'and its top-level code started the test again. Start it only when it is the main module: `if (require.main === module) main();`';
  violation ??= message;
  throw new GuestContextError(message);
}

/** The first refuseInGuestContext() message since the last call, if any (vCPU threads report it). */
export function takeGuestContextViolation(): string | undefined {
  const v = violation;
  violation = undefined;
  return v;
}

/** The vCPU this thread is running; only valid inside guest code. */
export function cpu(): GuestCpu {
  if (!current) throw new Error('cpu(): not running as guest code inside a vCPU');
  return current;
}

/** Called once by the vCPU worker before it runs any guest code. */
export function installCpu(c: GuestCpu): void {
  current = c;
}
