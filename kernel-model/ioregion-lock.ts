// The serialization of one ioregionfd context (the regions that share a read fd): a FIFO ticket lock
// in VM-shared memory, held by one vCPU thread per access, so one command is in flight per context
// and each response reaches the vCPU that sent the command (docs/ioregionfd.md §5.3).
//
// The hand-off: a waiter on a SEQPACKET write fd leaves its encoded command in a mailbox slot; the
// holder, once its own reply is in, sends that command for it before passing the lock. The device
// then works on the waiter's command while the waiter is still waking up, instead of after. The
// order on the fd is the ticket order either way, and the waiter only reads its reply.

import { IOREGIONFD_MSG_SIZE } from '../proto/ioregionfd-wire';
import { MSG_DONTWAIT, sendRaw } from '../proto/os';
import {
  CONTEXT_WORDS, CTX, HANDOFF, HANDOFF_EMPTY, HANDOFF_PUBLISHED, HANDOFF_SENT, HANDOFF_SLOTS, HANDOFF_TAKEN,
  HANDOFF_WORDS, handoffWords, MAX_CONTEXTS,
} from './ioregionfd-shared';
import type { VcpuPort } from './vcpu-port';

/** How long a waiter sleeps on the lock word before it looks for a kick again. */
const LOCK_POLL_MS = 5;

/** A command a waiter offers to the holder before it: its bytes as words, and the fd to send them on. */
export interface LeftCommand {
  words: Int32Array;
  writeFd: number;
}

export class ContextLock {
  private readonly words: Int32Array;
  private readonly serving: number;
  private readonly nextTicket: number;
  private readonly orphans: number;
  private readonly handoff: Int32Array;
  private readonly forNext = new Uint8Array(IOREGIONFD_MSG_SIZE);
  private readonly forNextWords = new Int32Array(this.forNext.buffer);
  private ticket = 0;
  held = false;

  /** `onKick` runs when a kick comes while waiting: it returns when KVM_RUN resumes the access. */
  constructor(shared: SharedArrayBuffer, private readonly context: number, private readonly vcpu: VcpuPort,
    private readonly onKick: () => void) {
    this.words = new Int32Array(shared, 0, MAX_CONTEXTS * CONTEXT_WORDS);
    this.handoff = handoffWords(shared);
    this.serving = CONTEXT_WORDS * context + CTX.serving;
    this.nextTicket = CONTEXT_WORDS * context + CTX.next;
    this.orphans = CONTEXT_WORDS * context + CTX.orphans;
  }

  /**
   * Take a ticket and wait for it; a kick returns to the VMM without losing the place. With `left`,
   * a waiter leaves that command for the holder: true when the holder has sent it already, and only
   * the reply is left to wait for.
   */
  acquire(left?: LeftCommand): boolean {
    const ticket = Atomics.add(this.words, this.nextTicket, 1);
    let slot = -1;
    try {
      for (;;) {
        const now = Atomics.load(this.words, this.serving);
        if (now === ticket) break;
        if (left && slot < 0) slot = this.leave(ticket, now, left);
        // Waiting for the lock touches no guest memory: a memslot change need not wait for us.
        this.vcpu.quiesce(true);
        this.waitTurn(ticket, now);
        this.vcpu.quiesce(false);
        if (this.vcpu.checkSignal()) {
          // A kicked waiter has sent nothing, as in the kernel: take the command back unless the
          // holder is already sending it (then the kick simply came after the send).
          slot = this.withdraw(slot);
          this.onKick();
        }
      }
    } catch (e) {
      // This thread is leaving (its vCPU fd closed, or the VM is going): a ticket nobody serves
      // would stop every vCPU queued behind it, so take the turn and pass it on.
      this.vcpu.quiesce(false);
      this.passTurn(ticket, slot);
      throw e;
    }
    this.held = true;
    this.ticket = ticket;
    return this.takeBack(slot);
  }

  release(): void {
    const next = (Atomics.add(this.words, this.serving, 1) + 1) | 0;
    // Wake the next ticket's vCPU only, on its slot's wake word (see waitTurn). vCPUs that were too far
    // back for a slot (ticket >= next - 1 + HANDOFF_SLOTS) sleep on the serving word: wake them when
    // there are any, so the one that has just come within reach moves onto its slot's word.
    const wake = this.slotOf(next) + HANDOFF.wake;
    Atomics.add(this.handoff, wake, 1);
    Atomics.notify(this.handoff, wake, 1);
    if (((Atomics.load(this.words, this.nextTicket) - next) | 0) >= HANDOFF_SLOTS) Atomics.notify(this.words, this.serving);
    this.held = false;
  }

  /**
   * Sleep until the serving ticket may have moved past `now` (or the poll interval, for kicks). A
   * ticket within HANDOFF_SLOTS of the served one sleeps on its slot's wake word, read before the
   * serving word is read again, so a release in between changes it and the wait returns at once.
   */
  private waitTurn(ticket: number, now: number): void {
    if (((ticket - now) | 0) >= HANDOFF_SLOTS) {
      Atomics.wait(this.words, this.serving, now, LOCK_POLL_MS);
      return;
    }
    const wake = this.slotOf(ticket) + HANDOFF.wake;
    const seen = Atomics.load(this.handoff, wake);
    if (Atomics.load(this.words, this.serving) !== now) return;
    Atomics.wait(this.handoff, wake, seen, LOCK_POLL_MS);
  }

  /**
   * Our reply is in and we still hold the lock: send the next ticket's command, if it left one.
   * Never blocks: on a full fd the command stays with its owner, who sends it at its turn.
   */
  sendForNext(): void {
    const h = this.handoff;
    const next = (this.ticket + 1) | 0;
    const slot = this.slotOf(next);
    if (Atomics.compareExchange(h, slot + HANDOFF.state, HANDOFF_PUBLISHED, HANDOFF_TAKEN) !== HANDOFF_PUBLISHED) return;
    if (Atomics.load(h, slot + HANDOFF.ticket) !== next) {
      Atomics.store(h, slot + HANDOFF.state, HANDOFF_PUBLISHED);
      return;
    }
    this.forNextWords.set(h.subarray(slot + HANDOFF.cmd, slot + HANDOFF.cmd + IOREGIONFD_MSG_SIZE / 4));
    const n = sendRaw(Atomics.load(h, slot + HANDOFF.writeFd), this.forNext, IOREGIONFD_MSG_SIZE, MSG_DONTWAIT);
    Atomics.store(h, slot + HANDOFF.state, n === IOREGIONFD_MSG_SIZE ? HANDOFF_SENT : HANDOFF_EMPTY);
  }

  /** Whether other vCPUs wait for the lock behind ours. Call with the lock held. */
  queued(): boolean {
    return ((Atomics.load(this.words, this.nextTicket) - this.ticket) | 0) > 1;
  }

  /** A reply will come that nobody reads: the next reader on this context drops it. */
  countOrphan(): void {
    Atomics.add(this.words, this.orphans, 1);
  }

  /** Whether a reply just read belongs to nobody (and is now accounted for). Call with the lock held. */
  takeOrphan(): boolean {
    if (Atomics.load(this.words, this.orphans) <= 0) return false;
    Atomics.sub(this.words, this.orphans, 1);
    return true;
  }

  /**
   * Leave the command in the ticket's mailbox slot: the slot's word index, or -1 when the slot may
   * still be in use (HANDOFF_SLOTS or more tickets ahead: ticket - HANDOFF_SLOTS has not been served).
   * The ticket word tells a holder that a slot still holds an older, abandoned command.
   */
  private leave(ticket: number, now: number, left: LeftCommand): number {
    if (((ticket - now) | 0) >= HANDOFF_SLOTS) return -1;
    const h = this.handoff;
    const slot = this.slotOf(ticket);
    Atomics.store(h, slot + HANDOFF.ticket, ticket);
    Atomics.store(h, slot + HANDOFF.writeFd, left.writeFd);
    h.set(left.words, slot + HANDOFF.cmd);
    Atomics.store(h, slot + HANDOFF.state, HANDOFF_PUBLISHED);
    return slot;
  }

  /** Take a left command back: -1 when it is ours again, else the slot (its command was sent). */
  private withdraw(slot: number): number {
    if (slot < 0) return -1;
    for (;;) {
      const state = Atomics.compareExchange(this.handoff, slot + HANDOFF.state, HANDOFF_PUBLISHED, HANDOFF_EMPTY);
      if (state === HANDOFF_PUBLISHED || state === HANDOFF_EMPTY) return -1;
      if (state === HANDOFF_SENT) return slot;
      // HANDOFF_TAKEN: the holder is copying or sending it right now, without blocking; wait for the outcome.
      Atomics.wait(this.handoff, slot + HANDOFF.state, HANDOFF_TAKEN, 1);
    }
  }

  /** Our turn has come: empty our mailbox slot; true if the holder before us sent the command. */
  private takeBack(slot: number): boolean {
    return slot >= 0 && Atomics.exchange(this.handoff, slot + HANDOFF.state, HANDOFF_EMPTY) === HANDOFF_SENT;
  }

  private slotOf(ticket: number): number {
    return (this.context * HANDOFF_SLOTS + (ticket >>> 0) % HANDOFF_SLOTS) * HANDOFF_WORDS;
  }

  private passTurn(ticket: number, slot: number): void {
    for (;;) {
      if (this.vcpu.stopRequested()) return;
      const now = Atomics.load(this.words, this.serving);
      if (now === ticket) {
        if (this.takeBack(slot)) this.countOrphan();
        return this.release();
      }
      this.waitTurn(ticket, now);
    }
  }
}
