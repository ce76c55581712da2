// The contract between the kernel-model's main thread (VM, VcpuHandle) and a vCPU worker thread: what
// the worker is started with, the updates it is sent, and the words both sides share.
//
// Nothing here is visible to the VMM: the kvm_run page it maps holds only what struct kvm_run defines
// plus its own kick request, so no value a VMM writes there can steer the kernel-model.

import type { MessagePort } from 'worker_threads';
import { closeQuietly } from '../proto/os';
import type { MemslotDesc } from './guest-memory';
import type { DeviceDesc } from './device-desc';

export interface VcpuWorkerData {
  vcpuId: number;
  sock: number;
  runFd: number;
  port: MessagePort;
  /** Words shared with the VcpuHandle (SYNC). */
  sync: Int32Array;
}

export interface VcpuConfig {
  /** Wire layout of ioregionfd commands: 'v3' (default) or 'v1'. */
  wire: 'v3' | 'v1';
  /** Report ioregionfd failures as KVM_EXIT_IOREGIONFD_FAILURE instead of falling back to MMIO/IO exits. */
  failureExit: boolean;
  irqchip: boolean;
  /** How long a vCPU spins for an ioregionfd reply before it blocks (ns, 0 = never): the kernel-model's --ioregionfd-poll-ns. */
  pollNs: number;
}

/**
 * Messages from the VM (main thread); fds in them were dup'ed for this thread and are owned by it once
 * it applied the message (it acknowledges `seq`).
 */
export type VcpuUpdate = { seq?: number } & (
  | { type: 'memslots'; slots: MemslotDesc[]; fds: [number, number][]; gen: number }
  | { type: 'devices'; add: DeviceDesc[]; remove: number[] }
  | { type: 'config'; config: Partial<VcpuConfig> }
  | { type: 'shared'; name: string; buffer: SharedArrayBuffer });

/** Close the fds of an update nobody will apply. */
export function releaseUpdate(u: VcpuUpdate): void {
  if (u.type === 'memslots') u.fds.forEach(([, fd]) => closeQuietly(fd));
  else if (u.type === 'devices') u.add.forEach((d) => d.fds.forEach(closeQuietly));
}

/**
 * Int32 words shared between a vCPU thread and its handle: the memslot generation the thread applied
 * last; whether it is blocked outside guest code (1) or may be using guest memory (0); its kernel
 * thread id; whether it sits in a wakeable blocking syscall (BLOCKED_*); the last update it applied;
 * and the attention word (ATTN_*), which the thread looks at in every instruction boundary.
 */
export const SYNC = { applied: 0, quiescent: 1, tid: 2, blocked: 3, acked: 4, attn: 5 } as const;
export const SYNC_WORDS = 6;

/**
 * Attention bits: why the thread must leave guest code or its blocking syscall. A VMM's kick is not
 * among them: it is the VMM's own request word in kvm_run (EMU_ATTN_KICK at RUN.emu_kick), of which
 * the kernel-model reads and clears that one bit only.
 */
export const ATTN_STOP = 1 << 1;
export const ATTN_UPDATE = 1 << 2;
export const ATTN_IRQ = 1 << 3;

/** Blocked waiting for a device or room to send: a kick or destruction must wake it. */
export const BLOCKED_IO = 1;
/** Halted (hlt with an irqchip): interrupts and updates wake it too. */
export const BLOCKED_HLT = 2;
/**
 * Waiting for the VMM's next ioctl: updates wake it, so a deassigned region's fds are released at
 * once (the device task sees EOF) rather than at the next KVM_RUN.
 */
export const BLOCKED_IDLE = 3;
