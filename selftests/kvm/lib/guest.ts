// The guest side of the selftest library (processor.h + the guest half of ucall): what guest code
// calls. It runs inside a vCPU thread of the kernel-model, on the CPU from proto/guest-cpu.

import { AccessSize, cpu, PortSize } from '../../../proto/guest-cpu';
import { REGS } from '../../../proto/kvm-uapi';
import {
  GUEST_LINE, UCALL_ABORT, UCALL_BUFFER_LEN, UCALL_DONE, UCALL_MAX_ARGS, UCALL_OFF_ARGS, UCALL_OFF_BUFFER,
  UCALL_PIO_PORT, UCALL_POOL_BITMAP_BYTES, UCALL_POOL_GPA, UCALL_POOL_SLOTS, UCALL_PRINTF, UCALL_SIZE, UCALL_SYNC,
} from './ucall_common';

export const readb = (gpa: bigint) => cpu().read(gpa, 1);
export const readw = (gpa: bigint) => cpu().read(gpa, 2);
export const readl = (gpa: bigint) => cpu().read(gpa, 4);
export const readq = (gpa: bigint) => cpu().read(gpa, 8);
export const writeb = (gpa: bigint, v: bigint) => cpu().write(gpa, 1, v);
export const writew = (gpa: bigint, v: bigint) => cpu().write(gpa, 2, v);
export const writel = (gpa: bigint, v: bigint) => cpu().write(gpa, 4, v);
export const writeq = (gpa: bigint, v: bigint) => cpu().write(gpa, 8, v);
export const mmio_read = (gpa: bigint, size: AccessSize) => cpu().read(gpa, size);
export const mmio_write = (gpa: bigint, size: AccessSize, v: bigint) => cpu().write(gpa, size, v);
export const inb = (port: number) => cpu().inPort(port, 1);
export const inw = (port: number) => cpu().inPort(port, 2);
export const inl = (port: number) => cpu().inPort(port, 4);
export const outb = (port: number, v: number) => cpu().outPort(port, 1, v);
export const outw = (port: number, v: number) => cpu().outPort(port, 2, v);
export const outl = (port: number, v: number) => cpu().outPort(port, 4, v);
export const ins = (port: number, size: PortSize, gpa: bigint, count: number) => cpu().insPort(port, size, gpa, count);
export const outs = (port: number, size: PortSize, gpa: bigint, count: number) => cpu().outsPort(port, size, gpa, count);
export const hlt = () => cpu().hlt();
export const sti = () => cpu().setInterruptsEnabled(true);
export const cli = () => cpu().setInterruptsEnabled(false);
export const cpu_relax = () => cpu().pause();
/** Install (or with undefined, remove) the handler of an interrupt vector; with an irqchip, GSI n is vector n. */
export const set_interrupt_handler = (vector: number, handler: ((vector: number) => void) | undefined) => cpu().setInterruptHandler(vector, handler);
/** Copy bytes to/from guest physical memory of any length (split like x86: pages, <= 8-byte MMIO chunks). */
export const write_bytes = (gpa: bigint, data: Uint8Array) => cpu().writeBytes(gpa, data);
export const read_bytes = (gpa: bigint, out: Uint8Array) => cpu().readBytes(gpa, out);
/** A direct view of guest RAM (must lie in one memslot). */
export const guest_ram = (gpa: bigint, len: number) => cpu().ram(gpa, len);
export const vcpu_id = () => cpu().vcpuId;

/** Claim a slot of the ucall pool with an atomic bit-test-and-set, like ucall_alloc(). */
function ucall_alloc(): number {
  const bitmap = guest_ram(UCALL_POOL_GPA, UCALL_POOL_BITMAP_BYTES);
  const words = new Int32Array(bitmap.buffer, bitmap.byteOffset, UCALL_POOL_BITMAP_BYTES / 4);
  for (let i = 0; i < UCALL_POOL_SLOTS; i++) {
    const bit = 1 << (i % 32);
    if (!(Atomics.or(words, i >> 5, bit) & bit)) return i;
  }
  throw new Error('guest failed to allocate a ucall struct');
}

function ucall_free(i: number): void {
  const bitmap = guest_ram(UCALL_POOL_GPA, UCALL_POOL_BITMAP_BYTES);
  Atomics.and(new Int32Array(bitmap.buffer, bitmap.byteOffset, UCALL_POOL_BITMAP_BYTES / 4), i >> 5, ~(1 << (i % 32)));
}

/** ucall(cmd, args, text): fill a struct ucall and exit through `in` on UCALL_PIO_PORT with RDI = its GPA. */
export function ucall(cmd: bigint, args: bigint[] = [], text = ''): void {
  const c = cpu();
  const slot = ucall_alloc();
  const gpa = UCALL_POOL_GPA + BigInt(UCALL_POOL_BITMAP_BYTES + slot * UCALL_SIZE);
  const bytes = guest_ram(gpa, UCALL_SIZE);
  const v = new DataView(bytes.buffer, bytes.byteOffset, UCALL_SIZE);
  v.setBigUint64(0, cmd, true);
  for (let i = 0; i < UCALL_MAX_ARGS; i++) v.setBigUint64(UCALL_OFF_ARGS + 8 * i, BigInt.asUintN(64, args[i] ?? 0n), true);
  const encoded = Buffer.from(text, 'utf8').subarray(0, UCALL_BUFFER_LEN - 1);
  bytes.set(encoded, UCALL_OFF_BUFFER);
  bytes[UCALL_OFF_BUFFER + encoded.length] = 0;
  c.regs[REGS.indexOf('rdi')] = gpa;
  try {
    c.inPort(UCALL_PIO_PORT, 1);
  } finally {
    ucall_free(slot);
  }
}

/** GUEST_SYNC(stage): args[0] = 0 (the kernel passes "hello"), args[1] = stage. */
export function GUEST_SYNC(stage: bigint | number): void {
  ucall(UCALL_SYNC, [0n, BigInt(stage)]);
}

/** GUEST_SYNC_ARGS(stage, a1..a4). */
export function GUEST_SYNC_ARGS(stage: bigint | number, ...rest: (bigint | number)[]): void {
  ucall(UCALL_SYNC, [0n, BigInt(stage), ...rest.map(BigInt)]);
}

export function GUEST_DONE(): void {
  ucall(UCALL_DONE);
}

export function GUEST_PRINTF(text: string): void {
  ucall(UCALL_PRINTF, [], text);
}

/** The caller of a GUEST_* macro as file:line, from the stack (source-mapped when enabled). */
function callerLocation(): { file: string; line: number } {
  const stack = new Error().stack?.split('\n') ?? [];
  // [0] "Error", [1] callerLocation, [2] guestAbort, [3] the GUEST_* function, [4] guest code.
  const m = /\(?([^()\s]+):(\d+):\d+\)?$/.exec(stack[4] ?? '');
  return m ? { file: m[1].replace(/^.*\/selftests\/kvm\//, ''), line: Number(m[2]) } : { file: '?', line: 0 };
}

function guestAbort(message: string): void {
  const { file, line } = callerLocation();
  const args = [0n, 0n, 0n];
  args[GUEST_LINE] = BigInt(line);
  ucall(UCALL_ABORT, args, `${file}:${line}: ${message}`);
}

/** GUEST_ASSERT(cond, message): reports UCALL_ABORT with file:line; the host fails the test. */
export function GUEST_ASSERT(cond: unknown, message = 'assertion failed'): void {
  if (!cond) guestAbort(message);
}

/** GUEST_ASSERT_EQ(a, b): message "<a> != <b>" in hex, as the kernel prints it. */
export function GUEST_ASSERT_EQ(a: bigint | number, b: bigint | number, what = ''): void {
  if (BigInt(a) !== BigInt(b)) guestAbort(`${what ? `${what}: ` : ''}0x${BigInt(a).toString(16)} != 0x${BigInt(b).toString(16)}`);
}

export function GUEST_FAIL(message: string): void {
  guestAbort(`Unconditional guest failure: ${message}`);
}
