// A device's eventfds: the far end of an ioeventfd (the guest rang a doorbell) or of an irqfd (raise
// an interrupt in the guest, without the VMM).

import { eventfdRead, eventfdWrite, PollSet, POLLIN } from '../../proto/os';

/** Something a device can signal: an irqfd, or a recorder in unit tests. */
export interface EventSignal {
  signal(count?: bigint): void;
}

/**
 * An input a model waits on by itself, with a timeout, instead of through the serve loop's `listen`
 * list (e.g. the rendezvous device waiting for its partner). Test doubles implement it too.
 */
export interface EventWaiter {
  /** Wait up to timeoutMs for the counter to become non-zero, then read and reset it; undefined on timeout. */
  waitFor(timeoutMs: number): bigint | undefined;
}

/** True when a device's named eventfd can also be waited on (a real Eventfd, or a test double that can). */
export function isEventWaiter(e: unknown): e is EventWaiter {
  return typeof (e as Partial<EventWaiter> | undefined)?.waitFor === 'function';
}

export class Eventfd implements EventSignal, EventWaiter {
  private pollSet: PollSet | undefined;

  constructor(readonly fd: number, readonly name: string) {}

  /** Add to the counter: for an irqfd, this raises its GSI in the guest. */
  signal(count = 1n): void {
    eventfdWrite(this.fd, count);
  }

  /** Block until the counter is non-zero, then read and reset it (how many doorbell writes happened). */
  wait(): bigint {
    return eventfdRead(this.fd) ?? 0n;
  }

  /** poll(2) up to timeoutMs for the counter to become non-zero, then read and reset it; undefined on timeout. */
  waitFor(timeoutMs: number): bigint | undefined {
    this.pollSet ??= new PollSet(1);
    this.pollSet.set(0, this.fd, POLLIN);
    if (this.pollSet.wait(1, Math.max(0, Math.floor(timeoutMs))) === 0 || !(this.pollSet.revents(0) & POLLIN)) return undefined;
    return eventfdRead(this.fd);
  }
}
