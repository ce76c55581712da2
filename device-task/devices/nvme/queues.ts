// Submission and completion queues: ring arithmetic, the phase tag, posting a completion entry, and the
// shadow doorbell / EventIdx slots of a queue once the host configured a Doorbell Buffer.
//
// A queue of N entries holds at most N - 1 items: empty when head == tail, full when tail + 1 == head
// (mod N). The controller owns an SQ's head and a CQ's tail; the host owns the others and moves them
// with doorbell writes (or, with shadow doorbells, by writing them to memory).

import { CQE_SIZE, SQE_SIZE } from './defs';

/** (b - a) mod n: how far b is ahead of a on a ring of n slots. */
export function ringDistance(a: number, b: number, n: number): number {
  return (b - a + n) % n;
}

/** A queue's slots in the host's Doorbell Buffer Config pages (Doorbell Buffer Config, admin 0x7c). */
export interface ShadowSlot {
  /** The host writes the new tail/head here (shadow doorbell). */
  db: Uint32Array;
  /** The controller writes here the value past which the host must ring the MMIO doorbell (EventIdx). */
  ei: Uint32Array;
  index: number;
}

/** Read a shadow doorbell (acquire: the host's entries written before it are visible). */
export function readShadow(s: ShadowSlot): number {
  return Atomics.load(s.db, s.index) & 0xffff;
}

/** Write an EventIdx (a full barrier: the re-read of the shadow doorbell that follows sees newer writes). */
export function writeEventIdx(s: ShadowSlot, value: number): void {
  Atomics.store(s.ei, s.index, value);
}

export interface SqArbitration {
  /** QPRIO from Create I/O SQ: 0 urgent, 1 high, 2 medium, 3 low (the admin SQ counts as urgent). */
  prio: number;
}

export class SubmissionQueue implements SqArbitration {
  head = 0;
  tail = 0;
  /** Command identifiers of commands fetched but not yet completed (held AERs, backlogged completions). */
  readonly outstanding = new Set<number>();
  shadow: ShadowSlot | undefined;
  /** The last invalid shadow tail reported (each bad value is reported once). */
  badShadow = -1;

  constructor(
    readonly id: number,
    readonly base: bigint,
    readonly size: number,
    readonly cqid: number,
    readonly prio: number,
    /** The whole queue's guest memory, checked once at creation. */
    readonly bytes: Uint8Array,
  ) {}

  get empty(): boolean {
    return this.head === this.tail;
  }

  /** Entries the host submitted that the controller has not fetched. */
  get pending(): number {
    return ringDistance(this.head, this.tail, this.size);
  }

  /**
   * Whether `tail` is a value the host may write: inside the queue, and not moving the tail back
   * past entries the controller has not fetched yet (which is what overfilling the queue looks like).
   */
  validTail(tail: number): boolean {
    return tail < this.size && ringDistance(this.head, tail, this.size) >= this.pending;
  }

  /** Copy out the entry at the head and advance the head. */
  fetch(into: Uint8Array): void {
    const off = this.head * SQE_SIZE;
    into.set(this.bytes.subarray(off, off + SQE_SIZE));
    this.head = this.head + 1 === this.size ? 0 : this.head + 1;
  }
}

/** A completion waiting for room in its CQ. */
export interface Completion {
  sqid: number;
  sqhd: number;
  cid: number;
  status: number;
  dw0: number;
  dw1: number;
}

export class CompletionQueue {
  head = 0;
  tail = 0;
  /** The phase tag the next posted entry carries; a new queue starts at 1. */
  phase = 1;
  /** Completions that found the queue full, posted in order when the host frees entries. */
  readonly backlog: Completion[] = [];
  /** SQs that complete into this queue. */
  readonly sqs = new Set<number>();
  shadow: ShadowSlot | undefined;
  badShadow = -1;
  /** No interrupt outstanding: the host emptied the queue since the last one, so the next entry interrupts. */
  irqArmed = true;
  /** Entries posted since the last interrupt. */
  unsignalled = 0;
  private readonly words: Int32Array;
  private readonly view: DataView;

  constructor(
    readonly id: number,
    readonly base: bigint,
    readonly size: number,
    /** Interrupts enabled (IEN) and the vector they use (IV). */
    readonly ien: boolean,
    readonly vector: number,
    bytes: Uint8Array,
  ) {
    this.words = new Int32Array(bytes.buffer, bytes.byteOffset, (size * CQE_SIZE) / 4);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, size * CQE_SIZE);
  }

  /** Entries posted that the host has not released. */
  get used(): number {
    return ringDistance(this.head, this.tail, this.size);
  }

  get full(): boolean {
    return this.used === this.size - 1;
  }

  /** Whether `head` is a value the host may write: inside the queue and not past the posted entries. */
  validHead(head: number): boolean {
    return head < this.size && ringDistance(this.head, head, this.size) <= this.used;
  }

  /**
   * Write one entry at the tail: DW0-DW2 first, then DW3 (command id, phase, status) with one atomic
   * store, so a host that sees the new phase sees the whole entry. The caller checked it is not full.
   */
  post(c: Completion): void {
    this.postEntry(c.sqid, c.sqhd, c.cid, c.status, c.dw0, c.dw1);
  }

  /** post() without a Completion object (the hot path). */
  postEntry(sqid: number, sqhd: number, cid: number, status: number, dw0: number, dw1: number): void {
    const off = this.tail * CQE_SIZE;
    this.view.setUint32(off, dw0 >>> 0, true);
    this.view.setUint32(off + 4, dw1 >>> 0, true);
    this.view.setUint32(off + 8, ((sqid << 16) | sqhd) >>> 0, true);
    Atomics.store(this.words, off / 4 + 3, (cid & 0xffff) | (((status << 1) | this.phase) << 16));
    this.tail++;
    if (this.tail === this.size) {
      this.tail = 0;
      this.phase ^= 1;
    }
  }
}
