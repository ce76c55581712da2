// How a vCPU thread waits: blocking syscalls (a device's reply, room to send, hlt) that a kick, the
// VM's destruction or (for hlt) an interrupt can end, and the words that tell the VcpuHandle on the
// main thread what would wake the thread and whether it may be touching guest memory.

import { EMU_ATTN_KICK } from '../proto/kvm-uapi';
import { MSG_DONTWAIT, PollSet, readInterruptible, ReceivedMessage, receiveMessageWakeable, recvRaw, sleepUntilSignal } from '../proto/os';
import { SpinPolicy } from '../proto/spin-poll';
import { ATTN_STOP, ATTN_UPDATE, BLOCKED_HLT, BLOCKED_IDLE, BLOCKED_IO, SYNC } from './vcpu-contract';

/** Unwinds guest code when the VM is destroyed or the vCPU fd is closed. */
export class VcpuStopped extends Error {}

export class VcpuWaits {
  private readonly poll = new PollSet(1);
  private spinner = new SpinPolicy(0);

  constructor(
    /** Words shared with the VcpuHandle, the attention word among them (vcpu-contract.ts). */
    readonly sync: Int32Array,
    /** The VMM's kick request word in kvm_run: only its EMU_ATTN_KICK bit means anything. */
    private readonly kickRequest: Int32Array,
  ) {}

  /** Whether an instruction boundary has anything to take (a kick, an update, an interrupt, a stop). */
  attentionPending(): boolean {
    return Atomics.load(this.sync, SYNC.attn) !== 0 || (Atomics.load(this.kickRequest, 0) & EMU_ATTN_KICK) !== 0;
  }

  stopRequested(): boolean {
    return (Atomics.load(this.sync, SYNC.attn) & ATTN_STOP) !== 0;
  }

  /** Take the VMM's pending kick (the "signal"); true if there was one. */
  consumeKick(): boolean {
    return (Atomics.and(this.kickRequest, 0, ~EMU_ATTN_KICK) & EMU_ATTN_KICK) !== 0;
  }

  /**
   * Mark this thread as blocked outside guest code (or back from it). A VM changing memslots waits
   * until each vCPU thread has applied the change or is blocked like this: such a thread touches guest
   * memory again only after an instruction boundary, which applies the change first.
   */
  quiesce(blocked: boolean): void {
    Atomics.store(this.sync, SYNC.quiescent, blocked ? 1 : 0);
    if (blocked) Atomics.notify(this.sync, SYNC.applied);
  }

  /**
   * Enter a wakeable blocking section: tell the handle what would wake us, then look at the attention
   * word (in that order, so a wake posted after the look finds us marked). Throws on destruction;
   * false when a kick was pending (consumed). Every true must be followed by unblock().
   */
  private block(kind: number): boolean {
    Atomics.store(this.sync, SYNC.blocked, kind);
    const stop = this.stopRequested();
    if (stop || this.consumeKick()) {
      Atomics.store(this.sync, SYNC.blocked, 0);
      if (stop) throw new VcpuStopped();
      return false;
    }
    this.quiesce(true);
    return true;
  }

  private unblock(): void {
    this.quiesce(false);
    Atomics.store(this.sync, SYNC.blocked, 0);
  }

  /** Block until fd is ready for `events` or a kick / destruction arrives; false when kicked. */
  waitFd(fd: number, events: number): boolean {
    const p = this.poll;
    for (;;) {
      if (!this.block(BLOCKED_IO)) return false;
      p.set(0, fd, events);
      let ready: number;
      try {
        ready = p.waitInterruptible(1, -1);
      } finally {
        this.unblock();
      }
      if (ready > 0) return true;
    }
  }

  /**
   * See VcpuPort.recvPolled. Spins outside any blocking section, so it looks for what would end a
   * blocked read itself: a kick, a stop or an update (an interrupt waits for the access, as there).
   */
  recvPolled(fd: number, buf: Uint8Array, len: number, windowNs: number, giveUp: () => boolean): number {
    if (this.spinner.windowNs !== windowNs) this.spinner = new SpinPolicy(windowNs);
    const wanted = () => (Atomics.load(this.sync, SYNC.attn) & (ATTN_STOP | ATTN_UPDATE)) !== 0 || (Atomics.load(this.kickRequest, 0) & EMU_ATTN_KICK) !== 0;
    return this.spinner.spin(() => recvRaw(fd, buf, len, MSG_DONTWAIT), () => wanted() || giveUp());
  }

  /**
   * A read(2) that blocks in the kernel (no poll(2) first: the cheapest blocking wait for a device's
   * reply, after recvPolled's spin) and that a kick still ends: n >= 0, -errno (-EINTR for any wake, so re-check), or 'kicked'.
   */
  readWakeable(fd: number, buf: Uint8Array, len: number): number | 'kicked' {
    if (!this.block(BLOCKED_IO)) return 'kicked';
    try {
      return readInterruptible(fd, buf, len);
    } finally {
      this.unblock();
    }
  }

  /**
   * Receive the VMM's next ioctl message; `onUpdate` runs whenever VM updates arrive meanwhile (they
   * wake the wait). null at EOF; throws on destruction.
   */
  receiveIoctl(sock: number, onUpdate: () => void): ReceivedMessage | null {
    for (;;) {
      Atomics.store(this.sync, SYNC.blocked, BLOCKED_IDLE);
      this.quiesce(true);
      let msg: ReceivedMessage | null | 'interrupted';
      try {
        // Looked at after marking ourselves blocked, so an update posted later wakes the recvmsg.
        msg = Atomics.load(this.sync, SYNC.attn) & (ATTN_STOP | ATTN_UPDATE) ? 'interrupted' : receiveMessageWakeable(sock);
      } catch {
        msg = null;
      } finally {
        this.unblock();
      }
      if (msg !== 'interrupted') return msg;
      if (this.stopRequested()) throw new VcpuStopped();
      if (Atomics.load(this.sync, SYNC.attn) & ATTN_UPDATE) onUpdate();
    }
  }

  /** Block (halted) until the attention word has any of `bits`; false when kicked. */
  waitAttention(bits: number): boolean {
    for (;;) {
      if (!this.block(BLOCKED_HLT)) return false;
      try {
        if (Atomics.load(this.sync, SYNC.attn) & bits) return true;
        sleepUntilSignal(-1);
      } finally {
        this.unblock();
      }
    }
  }
}
