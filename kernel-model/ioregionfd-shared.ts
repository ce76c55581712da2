// The ioregionfd state every vCPU thread of a VM shares with the main thread, and how a region is
// described to the data plane: the layout of the VM-wide shared block (serialization contexts and
// per-region counters) and the fields of an 'ioregion' device description.
//
// Both halves import this file: the VM half (ioregionfd.ts, control plane) and the data plane
// (ioregion-device.ts, in vCPU threads), which therefore loads nothing of the control plane.

/** Name of the VM's shared block (Vm.sharedBuffer). */
export const IOREGION_SHARED = 'ioregionfd';
/**
 * Serialization contexts: Int32 words per context: the next ticket, the ticket now served (a FIFO
 * ticket lock), and replies still owed for commands of regions deassigned mid-access ("orphans").
 */
export const MAX_CONTEXTS = 4096;
export const CONTEXT_WORDS = 3;
export const CTX = { next: 0, serving: 1, orphans: 2 } as const;
/** Per-region counters: BigInt64 x STAT_WORDS per stats slot, after the locks. */
export const MAX_STAT_SLOTS = 4096;
export const STAT = { reads: 0, writes: 1, posted: 2, failures: 3, lastErrno: 4, interrupted: 5 } as const;
export const STAT_WORDS = 6;
export const CONTEXT_BYTES = MAX_CONTEXTS * CONTEXT_WORDS * 4;
const STATS_BYTES = MAX_STAT_SLOTS * STAT_WORDS * 8;
/**
 * Lock hand-off mailboxes, after the counters: per context HANDOFF_SLOTS slots, slot = ticket % HANDOFF_SLOTS,
 * of HANDOFF_WORDS Int32 words: the ticket, the state (HANDOFF_*), the waiter's write fd, the slot's wake
 * word and the waiter's 32-byte command. A vCPU waiting for the lock leaves its command there; the
 * holder, once its own reply is in, sends it for the waiter before passing the lock, so the device
 * starts on it while the waiter is still waking. The waiter sleeps on its slot's wake word, which the
 * holder bumps when it passes the lock, so only the next vCPU wakes, not every waiter.
 */
export const HANDOFF_SLOTS = 4;
export const HANDOFF = { ticket: 0, state: 1, writeFd: 2, wake: 3, cmd: 4 } as const;
export const HANDOFF_WORDS = 4 + 8;
export const HANDOFF_EMPTY = 0;
export const HANDOFF_PUBLISHED = 1;
export const HANDOFF_TAKEN = 2;
export const HANDOFF_SENT = 3;
export const SHARED_BYTES = CONTEXT_BYTES + STATS_BYTES + MAX_CONTEXTS * HANDOFF_SLOTS * HANDOFF_WORDS * 4;

/** All hand-off mailboxes, as a view on the shared block. */
export function handoffWords(shared: SharedArrayBuffer): Int32Array {
  return new Int32Array(shared, CONTEXT_BYTES + STATS_BYTES, MAX_CONTEXTS * HANDOFF_SLOTS * HANDOFF_WORDS);
}

/** The counters of one stats slot, as a view on the shared block. */
export function statCounters(shared: SharedArrayBuffer, slot: number): BigInt64Array {
  return new BigInt64Array(shared, CONTEXT_BYTES + slot * STAT_WORDS * 8, STAT_WORDS);
}

/** How the data plane talks to one fd. */
export type FdTransport = 'seqpacket' | 'stream' | 'pipe';

/** Kind-specific fields of an 'ioregion' device description (fds[0] = read fd, fds[1] = write fd). */
export interface IoregionFields {
  kind: 'ioregion';
  size: bigint;
  userData: bigint;
  posted: boolean;
  pio: boolean;
  readTransport: FdTransport;
  writeTransport: FdTransport;
  /** Serialization context (ticket lock index), -1 for size-0 regions (never serialized). */
  context: number;
  statSlot: number;
  /** For a size-0 MMIO region: the key of its primary MMIO-bus entry (this is the FAST_MMIO twin). */
  twinOf?: number;
}
