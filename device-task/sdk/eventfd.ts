// A device's eventfds: the far end of an ioeventfd (the guest rang a doorbell) or of an irqfd (raise
// an interrupt in the guest, without the VMM).

import { eventfdRead, eventfdWrite } from '../../proto/os';

/** Something a device can signal: an irqfd, or a recorder in unit tests. */
export interface EventSignal {
  signal(count?: bigint): void;
}

export class Eventfd implements EventSignal {
  constructor(readonly fd: number, readonly name: string) {}

  /** Add to the counter: for an irqfd, this raises its GSI in the guest. */
  signal(count = 1n): void {
    eventfdWrite(this.fd, count);
  }

  /** Block until the counter is non-zero, then read and reset it (how many doorbell writes happened). */
  wait(): bigint {
    return eventfdRead(this.fd) ?? 0n;
  }
}
