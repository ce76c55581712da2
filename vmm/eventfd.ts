// EventFd: an eventfd(2) a VMM hands to KVM (KVM_IOEVENTFD, KVM_IRQFD) and to device tasks.

import { closeQuietly, EFD_NONBLOCK, eventfd, eventfdRead, eventfdWrite } from '../proto/os';

export class EventFd {
  private constructor(readonly fd: number) {}

  /** A new eventfd, close-on-exec, non-blocking unless `blocking`. */
  static create(blocking = false): EventFd {
    return new EventFd(eventfd(0, blocking ? 0 : EFD_NONBLOCK));
  }

  /** Add `n` to the counter (for an irqfd: raise its GSI). */
  signal(n = 1n): void {
    eventfdWrite(this.fd, n);
  }

  /** Read and reset the counter: 0n when it is zero (non-blocking), else the count. */
  take(): bigint {
    return eventfdRead(this.fd) ?? 0n;
  }

  close(): void {
    closeQuietly(this.fd);
  }
}
