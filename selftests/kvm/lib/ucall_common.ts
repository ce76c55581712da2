// ucall: how guest code calls the host (GUEST_SYNC, GUEST_ASSERT, GUEST_DONE), the x86 way: the guest
// fills a struct ucall in guest memory, puts its GPA in RDI and executes `in` on port 0x1000.
//
// This file is shared by both sides: the layout and constants, the host's get_ucall(), and (in
// lib/guest.ts) the guest's ucall().

import { KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_IO_IN } from '../../../proto/kvm-uapi';
import { addr_gpa2hva, exit_reason, guest_failure, KvmVcpu, run_io, vcpu_regs_get, vcpu_run_complete_io } from './kvm_util';
import { TEST_FAIL } from './test_util';

export const UCALL_NONE = 0n;
export const UCALL_SYNC = 1n;
export const UCALL_ABORT = 2n;
export const UCALL_PRINTF = 3n;
export const UCALL_DONE = 4n;
export const UCALL_UNHANDLED = 5n;
export const UCALL_MAX_ARGS = 7;
export const UCALL_BUFFER_LEN = 1024;
export const UCALL_PIO_PORT = 0x1000;
/** GUEST_ASSERT's args: [expression-string index, file index, line]; here args[GUEST_LINE] holds the line. */
export const GUEST_LINE = 2;

/** struct ucall { u64 cmd; u64 args[7]; char buffer[1024]; u64 hva; }. */
export const UCALL_SIZE = 8 + 8 * UCALL_MAX_ARGS + UCALL_BUFFER_LEN + 8;
export const UCALL_OFF_ARGS = 8;
export const UCALL_OFF_BUFFER = 8 + 8 * UCALL_MAX_ARGS;

/** The ucall pool in guest memory (inside vm_create()'s slot 0): a 512-bit in-use bitmap, then the slots. */
export const UCALL_POOL_GPA = 0x100000n;
export const UCALL_POOL_SLOTS = 512;
export const UCALL_POOL_BITMAP_BYTES = UCALL_POOL_SLOTS / 8;

export interface Ucall {
  cmd: bigint;
  args: bigint[];
  buffer: string;
}

/** Decode a struct ucall from its bytes. */
export function decode_ucall(bytes: Uint8Array): Ucall {
  const v = new DataView(bytes.buffer, bytes.byteOffset, UCALL_SIZE);
  const args = [];
  for (let i = 0; i < UCALL_MAX_ARGS; i++) args.push(v.getBigUint64(UCALL_OFF_ARGS + 8 * i, true));
  const buf = bytes.subarray(UCALL_OFF_BUFFER, UCALL_OFF_BUFFER + UCALL_BUFFER_LEN);
  const nul = buf.indexOf(0);
  return { cmd: v.getBigUint64(0, true), args, buffer: Buffer.from(buf.subarray(0, nul < 0 ? buf.length : nul)).toString('utf8') };
}

/**
 * get_ucall(): if the current exit is a ucall, copy it out, complete the `in` without running more
 * guest code, and return it; otherwise a UCALL_NONE record.
 */
export function get_ucall(vcpu: KvmVcpu): Ucall {
  // The guest code threw (or returned early): report its exception, not a puzzling missing ucall.
  if (exit_reason(vcpu) === KVM_EXIT_INTERNAL_ERROR) TEST_FAIL(`the guest stopped with KVM_EXIT_INTERNAL_ERROR${guest_failure(vcpu) || ' (no detail)'}`);
  if (exit_reason(vcpu) !== KVM_EXIT_IO) return { cmd: UCALL_NONE, args: [], buffer: '' };
  const io = run_io(vcpu);
  if (io.port !== UCALL_PIO_PORT || io.direction !== KVM_EXIT_IO_IN) return { cmd: UCALL_NONE, args: [], buffer: '' };
  const gpa = vcpu_regs_get(vcpu).rdi;
  const uc = decode_ucall(addr_gpa2hva(vcpu.vm, gpa, UCALL_SIZE));
  vcpu_run_complete_io(vcpu);
  return uc;
}

/** REPORT_GUEST_ASSERT(uc): fail the test with the guest's file:line and message. */
export function REPORT_GUEST_ASSERT(uc: Ucall): never {
  return TEST_FAIL(`guest assertion failed: ${uc.buffer}`);
}

/** The UCALL_* name of a ucall command, for messages. */
export function ucall_name(cmd: bigint): string {
  return ['UCALL_NONE', 'UCALL_SYNC', 'UCALL_ABORT', 'UCALL_PRINTF', 'UCALL_DONE', 'UCALL_UNHANDLED'][Number(cmd)] ?? `ucall ${cmd}`;
}
