// The narrow view of a vCPU thread that a bus device gets while it serves a guest access: how to
// block (and stay wakeable by a kick or by the VM's destruction), how to say it touches no guest
// memory while it waits, and how to hand an interrupted access back to the VMM.

import type { IoFailure } from './io-bus';
import type { VcpuConfig } from './vcpu-contract';

/**
 * Posted writes a device holds back to send several per system call. The CPU sends them before any
 * operation other than a further posted write the same device takes (so they reach the device's fd
 * before the vCPU's next load, store to RAM, port access, hlt or exit to the VMM, in program order).
 */
export interface DeferredWrites {
  /** Whether a posted write at this address (port with pio) would join the held writes. */
  joins(pio: boolean, addr: bigint): boolean;
  /** Send the held writes; those that could not be sent come back, in order, for ordinary exits. */
  flush(): IoFailure[];
}

export interface VcpuPort {
  /** The VM's settings as this thread applied them (the ioregionfd wire layout, ...). */
  readonly config: Readonly<VcpuConfig>;
  /** A VM-wide shared block a feature created (see Vm.sharedBuffer), once it reached this thread. */
  shared(name: string): SharedArrayBuffer | undefined;
  /** Block until fd is ready for `events` (poll(2) events); false when a kick came first. */
  waitFd(fd: number, events: number): boolean;
  /**
   * recv(MSG_DONTWAIT) on a socket, spun for the VM's ioregionfd poll window (proto/spin-poll.ts):
   * n >= 0, -errno, or -EAGAIN when the caller should block instead (nothing came, polling is off,
   * a kick, stop or update wants this thread, or `giveUp` said so).
   */
  recvPolled(fd: number, buf: Uint8Array, len: number, giveUp: () => boolean): number;
  /** read(2) blocked in the kernel yet wakeable: n >= 0, -errno (-EINTR: look again), or 'kicked'. */
  readWakeable(fd: number, buf: Uint8Array, len: number): number | 'kicked';
  /**
   * Say that this thread is (true) or is no longer (false) waiting outside guest memory, so a memslot
   * change need not wait for it. For waits the device does itself (a lock word).
   */
  quiesce(blocked: boolean): void;
  /** Consume a pending kick: true if there was one. Throws when the vCPU is being stopped. */
  checkSignal(): boolean;
  /** The VM is being destroyed or the vCPU fd closed: stop waiting for anything. */
  stopRequested(): boolean;
  /** The device now holds posted writes back (see DeferredWrites); the CPU sends them. */
  defer(writes: DeferredWrites): void;
  /**
   * A kick interrupted the access: KVM_RUN returns -EINTR / KVM_EXIT_INTR now, and this call returns
   * when the next KVM_RUN resumes the access, which then carries on where it was.
   */
  interrupted(): void;
}
