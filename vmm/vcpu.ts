// Vcpu: a vCPU fd, its kvm_run page and its kick eventfd (api.rst section 4: vCPU ioctls, section 5:
// struct kvm_run). run() is KVM_RUN: the guest runs on the kernel-model's vCPU thread until it needs
// the VMM, and the exit comes back as a VcpuExit.

import { encodeRequest, GuestEntryType, ioctlAwaitReply, ioctlMessage, ioctlRaw, IoctlResult } from '../proto/control';
import { EINTR, EINVAL } from '../proto/errno';
import {
  EMU_ATTN_KICK, KVM_EMU_SET_GUEST_ENTRY, KVM_EMU_SET_VCPU_AFFINITY, KVM_GET_REGS, KVM_RUN, KVM_SET_REGS, REGS, RegName, RUN,
} from '../proto/kvm-uapi';
import { closeQuietly, CPU_SETSIZE, cpuMask, eventfdWrite, mapShared, Mapping, sendMessage, unmapWhenUnreachable } from '../proto/os';
import { decodeExit, VcpuExit } from './exit';
import { GuestCode, GuestEntry, guestEntryOf } from './guest-entry';
import { KvmError } from '../proto/errors';
import { check } from './kvm';
import type { Vm } from './vm';

export type Regs = Record<RegName, bigint>;

const RUN_MESSAGE = encodeRequest({ request: KVM_RUN });
const ARG_REGS: RegName[] = ['rdi', 'rsi', 'rdx', 'rcx', 'r8', 'r9'];

export class Vcpu {
  readonly fd: number;
  /** The kvm_run memfd (KVM_GET_VCPU_MMAP_SIZE bytes) and our mapping of it. */
  readonly runFd: number;
  readonly runMapping: Mapping;
  /** struct kvm_run, as the VMM reads it (exit fields) and writes it (immediate_exit, exit data). */
  readonly kvmRun: DataView;
  readonly kvmRunBytes: Uint8Array;
  /** Written by kick() to signal the vCPU thread. */
  readonly kickFd: number;
  /** The text of the last KVM_RUN reply: for an internal error, the guest's exception and stack. */
  exitDetail = '';
  private readonly kickWord: Int32Array;
  private closed = false;

  /** From KVM_CREATE_VCPU's reply fds: the vCPU socket, the kvm_run memfd, the kick eventfd. */
  constructor(readonly vm: Vm, readonly id: number, fds: number[]) {
    [this.fd, this.runFd, this.kickFd] = fds;
    this.runMapping = mapShared(this.runFd, vm.kvm.vcpuMmapSize());
    this.kvmRun = new DataView(this.runMapping.buffer);
    this.kvmRunBytes = new Uint8Array(this.runMapping.buffer);
    this.kickWord = new Int32Array(this.runMapping.buffer, RUN.emu_kick, 1);
  }

  /** The raw ioctl on the vCPU fd. */
  ioctl(request: number, arg: bigint | number | Uint8Array = 0n): IoctlResult {
    return ioctlRaw(this.fd, request, arg);
  }

  /** KVM_EMU_SET_GUEST_ENTRY: the guest code this vCPU runs from its next KVM_RUN (see guest-entry.ts). */
  setEntry(code: GuestCode | GuestEntry): void {
    const { module, exportName } = typeof code === 'function' ? guestEntryOf(code) : code;
    check(this.ioctl(KVM_EMU_SET_GUEST_ENTRY, GuestEntryType.encode({ module, export: exportName }).finish()), 'KVM_EMU_SET_GUEST_ENTRY');
  }

  /**
   * KVM_EMU_SET_VCPU_AFFINITY: run this vCPU's thread on these CPUs only, as a VMM pins its vCPU
   * threads (here they live in the kernel-model). Lasts until the vCPU is closed.
   */
  setAffinity(cpus: readonly number[]): void {
    const mask = cpuMask(cpus);
    if (!mask) throw new KvmError('KVM_EMU_SET_VCPU_AFFINITY', EINVAL, `CPU numbers must be integers in 0..${CPU_SETSIZE - 1}, got [${cpus.join(', ')}]`);
    check(this.ioctl(KVM_EMU_SET_VCPU_AFFINITY, mask), 'KVM_EMU_SET_VCPU_AFFINITY');
  }

  /** KVM_GET_REGS. */
  getRegs(): Regs {
    const r = check(this.ioctl(KVM_GET_REGS), 'KVM_GET_REGS');
    const regs = {} as Regs;
    REGS.forEach((name, i) => (regs[name] = r.data.readBigUInt64LE(8 * i)));
    return regs;
  }

  /** KVM_SET_REGS. */
  setRegs(regs: Regs): void {
    const b = Buffer.alloc(8 * REGS.length);
    REGS.forEach((name, i) => b.writeBigUInt64LE(BigInt.asUintN(64, regs[name]), 8 * i));
    check(this.ioctl(KVM_SET_REGS, b), 'KVM_SET_REGS');
  }

  /** Up to 6 arguments for the guest code, in the x86-64 argument registers. */
  setArgs(...args: (bigint | number)[]): void {
    if (args.length > ARG_REGS.length) throw new RangeError(`at most ${ARG_REGS.length} guest arguments, got ${args.length}`);
    const regs = this.getRegs();
    args.forEach((a, i) => (regs[ARG_REGS[i]] = BigInt(a)));
    this.setRegs(regs);
  }

  /** KVM_RUN, raw: ret 0 (exit in kvm_run) or -1 with errno (EINTR: a kick or immediate_exit). */
  runRaw(): IoctlResult {
    const r = ioctlMessage(this.fd, RUN_MESSAGE);
    this.exitDetail = r.detail;
    return r;
  }

  /** KVM_RUN until the guest needs the VMM; EINTR is the exit { reason: 'intr' }. */
  run(): VcpuExit {
    const r = this.runRaw();
    if (r.ret < 0 && r.errno === EINTR) return { reason: 'intr' };
    check(r, 'KVM_RUN');
    return this.exit();
  }

  /** The exit currently in kvm_run. */
  exit(): VcpuExit {
    return decodeExit(this.kvmRun, this.kvmRunBytes, this.exitDetail);
  }

  /** Send KVM_RUN without waiting (for a VMM that kicks a vCPU blocked in KVM_RUN); then runWait(). */
  runStart(): void {
    sendMessage(this.fd, RUN_MESSAGE);
  }

  /** The reply of a KVM_RUN sent with runStart(). */
  runWait(): IoctlResult {
    const r = ioctlAwaitReply(this.fd);
    this.exitDetail = r.detail;
    return r;
  }

  /** Complete a pending MMIO/PIO exit without running guest code (immediate_exit = 1). */
  completeIo(): void {
    this.kvmRun.setUint8(RUN.immediate_exit, 1);
    const r = this.runRaw();
    this.kvmRun.setUint8(RUN.immediate_exit, 0);
    if (!(r.ret === -1 && r.errno === EINTR)) throw new Error(`KVM_RUN with immediate_exit did not return EINTR (ret ${r.ret}, errno ${r.errno})`);
  }

  /** Signal the vCPU thread: a blocked (or the next) KVM_RUN returns EINTR with KVM_EXIT_INTR. */
  kick(): void {
    Atomics.or(this.kickWord, 0, EMU_ATTN_KICK);
    eventfdWrite(this.kickFd);
  }

  /** Close the vCPU's fds (the vCPU itself lives until its VM goes); idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    unmapWhenUnreachable(this.runMapping);
    closeQuietly(this.fd);
    closeQuietly(this.runFd);
    closeQuietly(this.kickFd);
  }
}
