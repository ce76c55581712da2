// A guest NVMe driver for selftests: guest code that brings up an NVMe controller the way Linux's
// nvme driver does (disable, wait !RDY, AQA/ASQ/ACQ, enable, wait RDY, Identify, Number of Queues,
// CQ then SQ pairs, optionally Doorbell Buffer Config), submits commands with any PRP layout, reaps
// completions by interrupt or by polling, and shuts down with CC.SHN.
//
// It talks to the controller only through BAR0 (readl/writel) and guest RAM, and takes every limit
// from CAP and Identify, so it drives any NVMe controller: this project's device task or QEMU's
// hw/nvme. Its constants are its own, written from the specification, not shared with the device
// model, so the two check each other.
//
// Interrupts: 'msix' mode gives each CQ its own vector (vector v arrives as GSI gsi_base + v and its
// handler reaps the CQs on it); 'intx' mode puts every CQ on vector 0 and one handler scans them all
// (one level-triggered line, as QEMU's controller has behind its INTx pin); 'none' polls. A CQ reaps
// in exactly one context: its interrupt handler, or the code waiting on it (IEN 0 or mode 'none').
// Handlers run at instruction boundaries with interrupts off, so the JS between two CPU calls is
// atomic with respect to them.

import { cpu_relax, guest_ram, hlt, readl, set_interrupt_handler, sti, writel } from './guest';

export const NVME_REG_CAP = 0x00;
export const NVME_REG_VS = 0x08;
export const NVME_REG_INTMS = 0x0c;
export const NVME_REG_INTMC = 0x10;
export const NVME_REG_CC = 0x14;
export const NVME_REG_CSTS = 0x1c;
export const NVME_REG_AQA = 0x24;
export const NVME_REG_ASQ = 0x28;
export const NVME_REG_ACQ = 0x30;
export const NVME_DOORBELLS = 0x1000;

export const NVME_CC_EN = 1;
export const NVME_CSTS_RDY = 1;
export const NVME_CSTS_CFS = 2;
export const NVME_CSTS_SHST_MASK = 0xc;
export const NVME_CSTS_SHST_CMPLT = 0x8;

export const nvme_admin = {
  delete_sq: 0x00, create_sq: 0x01, get_log_page: 0x02, delete_cq: 0x04, create_cq: 0x05, identify: 0x06, abort: 0x08,
  set_features: 0x09, get_features: 0x0a, async_event: 0x0c, dbbuf: 0x7c,
} as const;
export const nvme_cmd = { flush: 0x00, write: 0x01, read: 0x02, write_zeroes: 0x08, dsm: 0x09 } as const;

/** Status field values: (SCT << 8) | SC; DNR is bit 14. */
export const NVME_SC_SUCCESS = 0x0;
export const NVME_SC_INVALID_OPCODE = 0x1;
export const NVME_SC_INVALID_FIELD = 0x2;
export const NVME_SC_CMDID_CONFLICT = 0x3;
export const NVME_SC_DATA_XFER_ERROR = 0x4;
export const NVME_SC_INVALID_NS = 0xb;
export const NVME_SC_CMD_SEQ_ERROR = 0xc;
export const NVME_SC_PRP_INVALID_OFFSET = 0x13;
export const NVME_SC_LBA_RANGE = 0x80;
export const NVME_SC_CQ_INVALID = 0x100;
export const NVME_SC_QID_INVALID = 0x101;
export const NVME_SC_QUEUE_SIZE = 0x102;
export const NVME_SC_ASYNC_LIMIT = 0x105;
export const NVME_SC_INVALID_VECTOR = 0x108;
export const NVME_SC_INVALID_LOG_PAGE = 0x109;
export const NVME_SC_DELETE_INVALID = 0x10c;
export const NVME_SC_FEATURE_NOT_SAVEABLE = 0x10d;
export const NVME_SC_DNR = 0x4000;
/** Not a controller status: the driver gave up waiting for the completion. */
export const NVME_SC_DRIVER_TIMEOUT = -1;

/** Status without DNR/More/CRD: what tests compare. */
export function nvme_sc(status: number): number {
  return status & 0x7ff;
}

export interface NvmeCqe {
  dw0: number;
  dw1: number;
  sqhd: number;
  sqid: number;
  cid: number;
  /** The 15-bit status field. */
  status: number;
}

export interface NvmeCommand {
  opcode: number;
  /** Byte 1: FUSE (1:0), PSDT (7:6). */
  flags?: number;
  /** Force a command identifier (normally the SQ assigns one). */
  cid?: number;
  nsid?: number;
  mptr?: bigint;
  prp1?: bigint;
  prp2?: bigint;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
}

const now_ms = () => Number(process.hrtime.bigint() / 1_000_000n);

// ---- guest memory --------------------------------------------------------------------------------

/** A bump allocator over guest RAM the host set aside for the driver (queues, PRP lists, buffers). */
export class NvmeDmaArena {
  private next: bigint;
  constructor(readonly base: bigint, readonly size: number) {
    this.next = base;
  }

  /** `bytes` of zeroed guest memory aligned to `align`. */
  alloc(bytes: number, align = 4096): bigint {
    const a = BigInt(align);
    const gpa = (this.next + a - 1n) / a * a;
    if (gpa + BigInt(bytes) > this.base + BigInt(this.size)) throw new Error(`nvme arena: ${bytes} bytes do not fit (${this.size} in all)`);
    this.next = gpa + BigInt(bytes);
    guest_ram(gpa, bytes).fill(0);
    return gpa;
  }

  /** Where the next allocation would start; give it back to free everything allocated since. */
  mark(): bigint {
    return this.next;
  }

  release(mark: bigint): void {
    this.next = mark;
  }
}

/** A PRP1/PRP2 pair and the list pages built for it. */
export interface NvmePrps {
  prp1: bigint;
  prp2: bigint;
  lists: bigint[];
}

/**
 * PRP entries for a transfer of `len` bytes: it starts `offset` bytes into pages[0] and continues
 * at the start of pages[1], pages[2], ... (page aligned, `pageSize` each). With more than two pages
 * a PRP list is built in `arena`, starting `listOffset` bytes into its first page (qword aligned): a
 * list that reaches the end of its page chains to a new page through its last slot.
 */
export function nvme_build_prps(arena: NvmeDmaArena, pages: bigint[], offset: number, len: number, pageSize: number, listOffset = 0): NvmePrps {
  const first = Math.min(len, pageSize - offset);
  const needed = len <= first ? 1 : 1 + Math.ceil((len - first) / pageSize);
  if (pages.length < needed) throw new Error(`nvme_build_prps: ${len} bytes at offset ${offset} need ${needed} pages, got ${pages.length}`);
  const prp1 = pages[0] + BigInt(offset);
  if (needed === 1) return { prp1, prp2: 0n, lists: [] };
  if (needed === 2) return { prp1, prp2: pages[1], lists: [] };
  const lists: bigint[] = [];
  let page = arena.alloc(pageSize, pageSize);
  lists.push(page);
  let slot = page + BigInt(listOffset);
  const prp2 = slot;
  for (let i = 1; i < needed; i++) {
    const pageEnd = page + BigInt(pageSize);
    // The last slot of a list page chains onwards unless this entry is the final one.
    if (slot + 8n === pageEnd && i < needed - 1) {
      const next = arena.alloc(pageSize, pageSize);
      lists.push(next);
      write_u64(slot, next);
      page = next;
      slot = next;
    }
    write_u64(slot, pages[i]);
    slot += 8n;
  }
  return { prp1, prp2, lists };
}

function write_u64(gpa: bigint, v: bigint): void {
  const b = guest_ram(gpa, 8);
  new DataView(b.buffer, b.byteOffset, 8).setBigUint64(0, v, true);
}

// ---- queues ---------------------------------------------------------------------------------------

/** Linux's nvme_dbbuf_need_event: did the index move past EventIdx (16-bit, wrap-safe)? */
export function nvme_dbbuf_need_event(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

interface ShadowSlot {
  db: Uint32Array;
  ei: Uint32Array;
  index: number;
}

export interface NvmeQueueStats {
  /** MMIO doorbell writes (SQ tail, CQ head). */
  sqDoorbells: number;
  cqDoorbells: number;
  /** Doorbell updates that stayed in the shadow page (EventIdx said no ring was needed). */
  shadowOnly: number;
  submitted: number;
  completed: number;
}

export class NvmeCq {
  head = 0;
  phase = 1;
  /** Completions reaped and not yet claimed, by (sqid << 16 | cid). */
  readonly done = new Map<number, NvmeCqe>();
  /** Called for each completion as it is reaped (instead of keeping it in `done`). */
  onComplete: ((c: NvmeCqe) => void) | undefined;
  readonly sqs = new Map<number, NvmeSq>();
  shadow: ShadowSlot | undefined;
  private readonly words: Int32Array;
  private readonly view: DataView;
  private reaping = false;

  constructor(
    readonly qid: number,
    readonly gpa: bigint,
    readonly entries: number,
    /** Interrupts enabled, and the vector. */
    readonly ien: boolean,
    readonly vector: number,
    readonly doorbell: bigint,
    readonly stats: NvmeQueueStats,
  ) {
    const bytes = guest_ram(gpa, entries * 16);
    this.words = new Int32Array(bytes.buffer, bytes.byteOffset, entries * 4);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, entries * 16);
  }

  /** Take every new entry (phase tag matches), update the SQs' heads, ring the head doorbell once. */
  reap(): number {
    if (this.reaping) return 0;
    this.reaping = true;
    let n = 0;
    try {
      for (;;) {
        // DW3 first (acquire): once its phase is new, the rest of the entry is there.
        const dw3 = Atomics.load(this.words, this.head * 4 + 3);
        if (((dw3 >>> 16) & 1) !== this.phase) break;
        const off = this.head * 16;
        const dw2 = this.view.getUint32(off + 8, true);
        const c: NvmeCqe = {
          dw0: this.view.getUint32(off, true), dw1: this.view.getUint32(off + 4, true),
          sqhd: dw2 & 0xffff, sqid: dw2 >>> 16, cid: dw3 & 0xffff, status: dw3 >>> 17,
        };
        if (++this.head === this.entries) {
          this.head = 0;
          this.phase ^= 1;
        }
        const sq = this.sqs.get(c.sqid);
        if (sq) sq.completed(c);
        n++;
        this.stats.completed++;
        if (this.onComplete) this.onComplete(c);
        else this.done.set((c.sqid << 16) | c.cid, c);
      }
      if (n) this.ring();
    } finally {
      this.reaping = false;
    }
    return n;
  }

  private ring(): void {
    const s = this.shadow;
    if (s) {
      const old = s.db[s.index];
      Atomics.store(s.db, s.index, this.head);
      if (!nvme_dbbuf_need_event(Atomics.load(s.ei, s.index), this.head, old)) {
        this.stats.shadowOnly++;
        return;
      }
    }
    this.stats.cqDoorbells++;
    writel(this.doorbell, BigInt(this.head));
  }

  /** Claim a completion reaped earlier. */
  take(sqid: number, cid: number): NvmeCqe | undefined {
    const key = (sqid << 16) | cid;
    const c = this.done.get(key);
    if (c) this.done.delete(key);
    return c;
  }
}

export class NvmeSq {
  tail = 0;
  /** The controller's head as last reported in a completion. */
  head = 0;
  shadow: ShadowSlot | undefined;
  /** Command identifiers in flight. */
  readonly inflight = new Set<number>();
  private nextCid = 0;
  private readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(
    readonly qid: number,
    readonly gpa: bigint,
    readonly entries: number,
    readonly cq: NvmeCq,
    readonly doorbell: bigint,
    readonly stats: NvmeQueueStats,
  ) {
    this.bytes = guest_ram(gpa, entries * 64);
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, entries * 64);
    cq.sqs.set(qid, this);
  }

  /** Slots the host may still fill (a queue of N holds N - 1). */
  get free(): number {
    return this.entries - 1 - ((this.tail - this.head + this.entries) % this.entries);
  }

  completed(c: NvmeCqe): void {
    this.head = c.sqhd;
    this.inflight.delete(c.cid);
  }

  /** Write a command at the tail without ringing; returns its CID, or -1 when the queue is full. */
  push(cmd: NvmeCommand): number {
    if (this.free === 0) return -1;
    let cid = cmd.cid;
    if (cid === undefined) {
      do cid = this.nextCid = (this.nextCid + 1) & 0xffff;
      while (this.inflight.has(cid));
    }
    const v = this.view;
    const o = this.tail * 64;
    this.bytes.fill(0, o, o + 64);
    v.setUint8(o, cmd.opcode);
    v.setUint8(o + 1, cmd.flags ?? 0);
    v.setUint16(o + 2, cid, true);
    v.setUint32(o + 4, cmd.nsid ?? 0, true);
    if (cmd.mptr) v.setBigUint64(o + 16, cmd.mptr, true);
    if (cmd.prp1) v.setBigUint64(o + 24, cmd.prp1, true);
    if (cmd.prp2) v.setBigUint64(o + 32, cmd.prp2, true);
    if (cmd.cdw10) v.setUint32(o + 40, cmd.cdw10 >>> 0, true);
    if (cmd.cdw11) v.setUint32(o + 44, cmd.cdw11 >>> 0, true);
    if (cmd.cdw12) v.setUint32(o + 48, cmd.cdw12 >>> 0, true);
    if (cmd.cdw13) v.setUint32(o + 52, cmd.cdw13 >>> 0, true);
    if (cmd.cdw14) v.setUint32(o + 56, cmd.cdw14 >>> 0, true);
    if (cmd.cdw15) v.setUint32(o + 60, cmd.cdw15 >>> 0, true);
    this.tail = this.tail + 1 === this.entries ? 0 : this.tail + 1;
    this.inflight.add(cid);
    this.stats.submitted++;
    return cid;
  }

  /** Tell the controller about the new tail: MMIO, or the shadow page and MMIO only past EventIdx. */
  ring(): void {
    const s = this.shadow;
    if (s) {
      const old = s.db[s.index];
      Atomics.store(s.db, s.index, this.tail);
      if (!nvme_dbbuf_need_event(Atomics.load(s.ei, s.index), this.tail, old)) {
        this.stats.shadowOnly++;
        return;
      }
    }
    this.stats.sqDoorbells++;
    writel(this.doorbell, BigInt(this.tail));
  }

  submit(cmd: NvmeCommand): number {
    const cid = this.push(cmd);
    if (cid >= 0) this.ring();
    return cid;
  }
}

/** What another vCPU needs to drive a queue pair: written to guest RAM by nvme_export_pair. */
export const NVME_PAIR_DESC_SIZE = 64;

// ---- the controller ----------------------------------------------------------------------------------

export type NvmeInterruptMode = 'msix' | 'intx' | 'none';

export interface NvmeProbeOptions {
  bar0: bigint;
  arena: NvmeDmaArena;
  /** Admin queue entries (default 32, as Linux). */
  adminEntries?: number;
  interrupts?: NvmeInterruptMode;
  /** GSI of vector 0 (default 0): vector v arrives as GSI gsiBase + v. */
  gsiBase?: number;
  /** Select weighted round robin if CAP offers it. */
  wrr?: boolean;
}

export interface NvmeIdentity {
  serial: string;
  model: string;
  firmware: string;
  version: number;
  /** Maximum transfer in bytes (Infinity when MDTS is 0). */
  maxTransfer: number;
  mdts: number;
  namespaces: number;
  vwc: number;
  oncs: number;
  oacs: number;
  sqes: number;
  cqes: number;
  aerl: number;
  elpe: number;
}

export interface NvmeNamespaceInfo {
  nsid: number;
  blocks: bigint;
  lbaShift: number;
}

export class NvmeProbeError extends Error {}

export class NvmeController {
  readonly cap: bigint;
  readonly version: number;
  readonly stride: number;
  readonly pageSize: number;
  /** CAP.TO in milliseconds. */
  readonly timeoutMs: number;
  /** CAP.MQES + 1. */
  readonly maxEntries: number;
  readonly stats: NvmeQueueStats = { sqDoorbells: 0, cqDoorbells: 0, shadowOnly: 0, submitted: 0, completed: 0 };
  /** Interrupt handler runs, by vector. */
  readonly interrupts: number[] = [];
  readonly admin: NvmeSq;
  readonly cqs = new Map<number, NvmeCq>();
  readonly sqs = new Map<number, NvmeSq>();
  id: NvmeIdentity | undefined;
  private cc = 0;
  private shadow: { db: Uint32Array; ei: Uint32Array; dbGpa: bigint; eiGpa: bigint } | undefined;

  private constructor(readonly o: Required<NvmeProbeOptions>, cap: bigint, version: number) {
    this.cap = cap;
    this.version = version;
    this.stride = 4 << Number((cap >> 32n) & 0xfn);
    const mpsmin = Number((cap >> 48n) & 0xfn);
    this.pageSize = 1 << (12 + mpsmin);
    this.timeoutMs = Math.max(1, Number((cap >> 24n) & 0xffn)) * 500;
    this.maxEntries = Number(cap & 0xffffn) + 1;
    const entries = Math.min(o.adminEntries, 4096);
    const acq = o.arena.alloc(entries * 16, this.pageSize);
    const asq = o.arena.alloc(entries * 64, this.pageSize);
    const cq = new NvmeCq(0, acq, entries, o.interrupts !== 'none', 0, this.doorbell(0, true), this.stats);
    this.cqs.set(0, cq);
    this.admin = new NvmeSq(0, asq, entries, cq, this.doorbell(0, false), this.stats);
    this.sqs.set(0, this.admin);
  }

  reg32(off: number): number {
    return Number(readl(this.o.bar0 + BigInt(off)));
  }

  private set32(off: number, v: number): void {
    writel(this.o.bar0 + BigInt(off), BigInt(v >>> 0));
  }

  doorbell(qid: number, cq: boolean): bigint {
    return this.o.bar0 + BigInt(NVME_DOORBELLS + (2 * qid + (cq ? 1 : 0)) * this.stride);
  }

  /**
   * Bring the controller up as Linux's probe does, up to Identify Controller. Throws NvmeProbeError
   * (no device, no NVM command set, unsupported page size, RDY timeout, CFS) with what went wrong.
   */
  static probe(opts: NvmeProbeOptions): NvmeController {
    const o: Required<NvmeProbeOptions> = { adminEntries: 32, interrupts: 'none', gsiBase: 0, wrr: false, ...opts };
    const bar = (off: number) => Number(readl(o.bar0 + BigInt(off)));
    if (bar(NVME_REG_CSTS) === 0xffff_ffff) throw new NvmeProbeError('CSTS reads all ones: no controller');
    const cap = BigInt(bar(NVME_REG_CAP)) | (BigInt(bar(NVME_REG_CAP + 4)) << 32n);
    const version = bar(NVME_REG_VS);
    if (!((cap >> 37n) & 1n)) throw new NvmeProbeError(`CAP 0x${cap.toString(16)}: no NVM command set`);
    if (((cap >> 48n) & 0xfn) > ((cap >> 52n) & 0xfn)) throw new NvmeProbeError(`CAP 0x${cap.toString(16)}: MPSMIN > MPSMAX`);
    const c = new NvmeController(o, cap, version);
    c.disable();
    const entries = c.admin.entries;
    c.set32(NVME_REG_AQA, ((entries - 1) << 16) | (entries - 1));
    c.set32(NVME_REG_ASQ, Number(c.admin.gpa & 0xffff_ffffn));
    c.set32(NVME_REG_ASQ + 4, Number(c.admin.gpa >> 32n));
    c.set32(NVME_REG_ACQ, Number(c.admin.cq.gpa & 0xffff_ffffn));
    c.set32(NVME_REG_ACQ + 4, Number(c.admin.cq.gpa >> 32n));
    const ams = o.wrr && (cap >> 17n) & 1n ? 1 : 0;
    const mps = Number((cap >> 48n) & 0xfn);
    c.cc = (4 << 20) | (6 << 16) | (ams << 11) | (mps << 7);
    // As Linux: CC without EN first, CAP again (it may change after the first CC write), then EN.
    c.set32(NVME_REG_CC, c.cc);
    bar(NVME_REG_CAP);
    c.set32(NVME_REG_CC, c.cc | NVME_CC_EN);
    const csts = c.waitCsts((s) => (s & (NVME_CSTS_RDY | NVME_CSTS_CFS)) !== 0);
    if (csts === undefined || csts & NVME_CSTS_CFS) {
      throw new NvmeProbeError(csts === undefined ? `CSTS.RDY not set within CAP.TO (${c.timeoutMs} ms)` : `CSTS.CFS after CC.EN (CSTS 0x${csts.toString(16)})`);
    }
    c.installInterrupts();
    c.id = c.identifyController();
    return c;
  }

  /** Poll CSTS until `done` holds, up to CAP.TO; the last value, or undefined on timeout. */
  waitCsts(done: (csts: number) => boolean, timeoutMs = this.timeoutMs): number | undefined {
    const deadline = now_ms() + timeoutMs;
    for (;;) {
      const s = this.reg32(NVME_REG_CSTS);
      if (done(s)) return s;
      if (now_ms() > deadline) return undefined;
      cpu_relax();
    }
  }

  /** CC.EN = 0 and wait for RDY = 0 (also when EN was already clear but RDY still set). */
  disable(): void {
    const cc = this.reg32(NVME_REG_CC);
    if (cc & NVME_CC_EN) this.set32(NVME_REG_CC, cc & ~NVME_CC_EN);
    if (this.waitCsts((s) => (s & NVME_CSTS_RDY) === 0) === undefined) throw new NvmeProbeError(`CSTS.RDY still set ${this.timeoutMs} ms after CC.EN = 0`);
  }

  private installInterrupts(): void {
    const mode = this.o.interrupts;
    if (mode === 'none') return;
    const handler = (gsi: number): void => {
      const vector = gsi - this.o.gsiBase;
      this.interrupts[vector] = (this.interrupts[vector] ?? 0) + 1;
      // intx: one line for every CQ, so look at all of them.
      for (const cq of this.cqs.values()) if (cq.ien && (mode === 'intx' || cq.vector === vector)) cq.reap();
    };
    if (mode === 'intx') set_interrupt_handler(this.o.gsiBase, handler);
    else for (let v = 0; v < 24 - this.o.gsiBase; v++) set_interrupt_handler(this.o.gsiBase + v, handler);
    sti();
  }

  /** Whether a CQ is reaped by interrupts (else the waiting code polls it). */
  private interruptDriven(cq: NvmeCq): boolean {
    return cq.ien && this.o.interrupts !== 'none';
  }

  /**
   * Wait until `done()` holds: sleeping in hlt() for a CQ reaped by interrupts, else polling it.
   * False after timeoutMs (only a polled wait can time out: hlt() wakes for interrupts and kicks).
   */
  wait(cq: NvmeCq, done: () => boolean, timeoutMs = this.timeoutMs * 4): boolean {
    if (this.interruptDriven(cq)) {
      while (!done()) hlt();
      return true;
    }
    const deadline = now_ms() + timeoutMs;
    for (let spins = 0; ; spins++) {
      cq.reap();
      if (done()) return true;
      if ((spins & 255) === 255 && now_ms() > deadline) return false;
      cpu_relax();
    }
  }

  /** Wait for one command's completion; NVME_SC_DRIVER_TIMEOUT as status if it does not come. */
  waitFor(sq: NvmeSq, cid: number, timeoutMs?: number): NvmeCqe {
    let got: NvmeCqe | undefined;
    const ok = this.wait(sq.cq, () => (got ??= sq.cq.take(sq.qid, cid)) !== undefined, timeoutMs);
    return ok && got ? got : { dw0: 0, dw1: 0, sqhd: 0, sqid: sq.qid, cid, status: NVME_SC_DRIVER_TIMEOUT };
  }

  /** Submit on an SQ and wait for the completion. */
  exec(sq: NvmeSq, cmd: NvmeCommand, timeoutMs?: number): NvmeCqe {
    const cid = sq.submit(cmd);
    if (cid < 0) return { dw0: 0, dw1: 0, sqhd: 0, sqid: sq.qid, cid: 0, status: NVME_SC_DRIVER_TIMEOUT };
    return this.waitFor(sq, cid, timeoutMs);
  }

  /** An admin command, waited for. */
  adminCmd(cmd: NvmeCommand, timeoutMs?: number): NvmeCqe {
    return this.exec(this.admin, cmd, timeoutMs);
  }

  /** Run `fn` with a scratch buffer of `bytes` from the arena, freed afterwards. */
  withBuffer<T>(bytes: number, fn: (gpa: bigint) => T): T {
    const mark = this.o.arena.mark();
    try {
      return fn(this.o.arena.alloc(bytes, this.pageSize));
    } finally {
      this.o.arena.release(mark);
    }
  }

  /** Identify into a 4 KiB buffer: the status and a copy of the data. */
  identify(cns: number, nsid = 0, cdw11 = 0): { status: number; data: DataView } {
    return this.withBuffer(4096, (buf) => {
      const c = this.adminCmd({ opcode: nvme_admin.identify, nsid, prp1: buf, cdw10: cns, cdw11 });
      return { status: c.status, data: new DataView(guest_ram(buf, 4096).slice().buffer) };
    });
  }

  identifyController(): NvmeIdentity {
    const { status, data } = this.identify(1);
    if (status !== 0) throw new NvmeProbeError(`Identify Controller failed with status 0x${status.toString(16)}`);
    const text = (off: number, len: number) => String.fromCharCode(...new Uint8Array(data.buffer, off, len)).replace(/[\s\0]+$/, '');
    const mdts = data.getUint8(0x4d);
    return {
      serial: text(4, 20), model: text(0x18, 40), firmware: text(0x40, 8), version: data.getUint32(0x50, true),
      mdts, maxTransfer: mdts ? 2 ** mdts * this.pageSize : Infinity, namespaces: data.getUint32(0x204, true),
      vwc: data.getUint8(0x20d), oncs: data.getUint16(0x208, true), oacs: data.getUint16(0x100, true),
      sqes: data.getUint8(0x200), cqes: data.getUint8(0x201), aerl: data.getUint8(0x103), elpe: data.getUint8(0x106),
    };
  }

  /** Active namespace IDs (Identify CNS 02h), all of them. */
  activeNamespaces(): number[] {
    const out: number[] = [];
    for (let after = 0; ;) {
      const { status, data } = this.identify(2, after);
      if (status !== 0) return out;
      let i = 0;
      for (; i < 1024; i++) {
        const id = data.getUint32(4 * i, true);
        if (!id) return out;
        out.push(id);
      }
      after = out[out.length - 1];
    }
  }

  identifyNamespace(nsid: number): NvmeNamespaceInfo | number {
    const { status, data } = this.identify(0, nsid);
    if (status !== 0) return status;
    const flbas = data.getUint8(0x1a);
    const format = (flbas & 0xf) | (((flbas >> 5) & 3) << 4);
    return { nsid, blocks: data.getBigUint64(0, true), lbaShift: data.getUint8(0x80 + 4 * format + 2) };
  }

  /** Set Features Number of Queues: returns the granted counts (1-based) or the status. */
  setNumQueues(sqs: number, cqs = sqs): { sqs: number; cqs: number } | number {
    const c = this.adminCmd({ opcode: nvme_admin.set_features, cdw10: 0x07, cdw11: ((cqs - 1) << 16) | (sqs - 1) });
    if (c.status !== 0) return c.status;
    return { sqs: (c.dw0 & 0xffff) + 1, cqs: (c.dw0 >>> 16) + 1 };
  }

  /** Create I/O CQ: returns the queue or the status. */
  createCq(qid: number, entries: number, opts: { ien?: boolean; vector?: number } = {}): NvmeCq | number {
    const ien = opts.ien ?? this.o.interrupts !== 'none';
    // IV 0 without interrupts or with one line: the spec wants IV 0 for pin-based interrupts, and
    // a controller may check IV even when IEN is 0 (QEMU's does).
    const vector = this.o.interrupts === 'intx' || !ien ? 0 : opts.vector ?? qid;
    const gpa = this.o.arena.alloc(entries * 16, this.pageSize);
    const c = this.adminCmd({ opcode: nvme_admin.create_cq, prp1: gpa, cdw10: ((entries - 1) << 16) | qid, cdw11: (vector << 16) | (ien ? 2 : 0) | 1 });
    if (c.status !== 0) return c.status;
    const cq = new NvmeCq(qid, gpa, entries, ien, vector, this.doorbell(qid, true), this.stats);
    this.attachShadow(cq, 2 * qid + 1);
    this.cqs.set(qid, cq);
    return cq;
  }

  /** Create I/O SQ on an existing CQ: returns the queue or the status. */
  createSq(qid: number, entries: number, cq: NvmeCq, prio = 2): NvmeSq | number {
    const gpa = this.o.arena.alloc(entries * 64, this.pageSize);
    const c = this.adminCmd({ opcode: nvme_admin.create_sq, prp1: gpa, cdw10: ((entries - 1) << 16) | qid, cdw11: (cq.qid << 16) | (prio << 1) | 1 });
    if (c.status !== 0) return c.status;
    const sq = new NvmeSq(qid, gpa, entries, cq, this.doorbell(qid, false), this.stats);
    this.attachShadow(sq, 2 * qid);
    this.sqs.set(qid, sq);
    return sq;
  }

  /** A CQ then an SQ with the same id (as Linux creates them); throws with the status on failure. */
  createPair(qid: number, entries: number, opts: { ien?: boolean; vector?: number; prio?: number } = {}): NvmeSq {
    const n = Math.min(entries, this.maxEntries);
    const cq = this.createCq(qid, n, opts);
    if (typeof cq === 'number') throw new Error(`Create I/O CQ ${qid}: status 0x${cq.toString(16)}`);
    const sq = this.createSq(qid, n, cq, opts.prio);
    if (typeof sq === 'number') throw new Error(`Create I/O SQ ${qid}: status 0x${sq.toString(16)}`);
    return sq;
  }

  /** Delete an SQ (then its CQ, unless other SQs use it); returns the first failing status or 0. */
  deletePair(sq: NvmeSq): number {
    let s = this.adminCmd({ opcode: nvme_admin.delete_sq, cdw10: sq.qid }).status;
    if (s !== 0) return s;
    this.sqs.delete(sq.qid);
    sq.cq.sqs.delete(sq.qid);
    if (sq.cq.sqs.size) return 0;
    s = this.adminCmd({ opcode: nvme_admin.delete_cq, cdw10: sq.cq.qid }).status;
    if (s === 0) this.cqs.delete(sq.cq.qid);
    return s;
  }

  /**
   * Doorbell Buffer Config (if OACS bit 8): I/O queues then ring MMIO only when EventIdx asks (the
   * admin queue keeps plain doorbells, as Linux does). Returns the status, or -1 when not offered.
   */
  configureShadowDoorbells(): number {
    if (!this.id || !(this.id.oacs & (1 << 8))) return -1;
    const dbs = this.o.arena.alloc(this.pageSize, this.pageSize);
    const eis = this.o.arena.alloc(this.pageSize, this.pageSize);
    const c = this.adminCmd({ opcode: nvme_admin.dbbuf, prp1: dbs, prp2: eis });
    if (c.status !== 0) return c.status;
    const words = this.pageSize / 4;
    const db = guest_ram(dbs, this.pageSize);
    const ei = guest_ram(eis, this.pageSize);
    this.shadow = { db: new Uint32Array(db.buffer, db.byteOffset, words), ei: new Uint32Array(ei.buffer, ei.byteOffset, words), dbGpa: dbs, eiGpa: eis };
    for (const [qid, sq] of this.sqs) if (qid) this.attachShadow(sq, 2 * qid);
    for (const [qid, cq] of this.cqs) if (qid) this.attachShadow(cq, 2 * qid + 1);
    return 0;
  }

  private attachShadow(q: NvmeSq | NvmeCq, slot: number): void {
    const index = (slot * this.stride) / 4;
    if (!this.shadow || index >= this.shadow.db.length) return;
    // Start the slot at the queue's current value (0 for a new queue), as the controller does.
    this.shadow.db[index] = q instanceof NvmeSq ? q.tail : q.head;
    q.shadow = { db: this.shadow.db, ei: this.shadow.ei, index };
  }

  /** Shut down: delete I/O queues, CC.SHN = normal, wait for SHST complete. Returns CSTS, or undefined on timeout. */
  shutdown(): number | undefined {
    for (const [qid, sq] of [...this.sqs]) if (qid) this.deletePair(sq);
    this.set32(NVME_REG_CC, (this.reg32(NVME_REG_CC) & ~(3 << 14)) | (1 << 14));
    return this.waitCsts((s) => (s & NVME_CSTS_SHST_MASK) === NVME_CSTS_SHST_CMPLT);
  }

  /**
   * Hand a queue pair to another vCPU: write what it needs to guest RAM at `gpa` and stop looking at
   * its CQ here. The pair must be polled (IEN 0): interrupts reach only the first vCPU.
   */
  exportPair(sq: NvmeSq, gpa: bigint): void {
    const b = guest_ram(gpa, NVME_PAIR_DESC_SIZE);
    const v = new DataView(b.buffer, b.byteOffset, NVME_PAIR_DESC_SIZE);
    v.setBigUint64(0, this.o.bar0, true);
    v.setBigUint64(8, sq.gpa, true);
    v.setBigUint64(16, sq.cq.gpa, true);
    v.setUint32(24, sq.qid, true);
    v.setUint32(28, sq.entries, true);
    v.setUint32(32, sq.cq.qid, true);
    v.setUint32(36, sq.cq.entries, true);
    v.setUint32(40, this.stride, true);
    v.setBigUint64(48, this.shadow?.dbGpa ?? 0n, true);
    v.setBigUint64(56, this.shadow?.eiGpa ?? 0n, true);
    v.setUint32(44, this.pageSize, true);
    this.cqs.delete(sq.cq.qid);
    this.sqs.delete(sq.qid);
  }
}

/** The other side of exportPair: a polled queue pair another vCPU drives on its own. */
export function nvme_import_pair(gpa: bigint): { sq: NvmeSq; cq: NvmeCq; stats: NvmeQueueStats } {
  const b = guest_ram(gpa, NVME_PAIR_DESC_SIZE);
  const v = new DataView(b.buffer, b.byteOffset, NVME_PAIR_DESC_SIZE);
  const bar0 = v.getBigUint64(0, true);
  const stride = v.getUint32(40, true);
  const qid = v.getUint32(24, true);
  const cqid = v.getUint32(32, true);
  const stats: NvmeQueueStats = { sqDoorbells: 0, cqDoorbells: 0, shadowOnly: 0, submitted: 0, completed: 0 };
  const db = (slot: number) => bar0 + BigInt(NVME_DOORBELLS + slot * stride);
  const cq = new NvmeCq(cqid, v.getBigUint64(16, true), v.getUint32(36, true), false, 0, db(2 * cqid + 1), stats);
  const sq = new NvmeSq(qid, v.getBigUint64(8, true), v.getUint32(28, true), cq, db(2 * qid), stats);
  // With shadow doorbells configured, this pair's slots live in the controller's shadow pages.
  const dbGpa = v.getBigUint64(48, true);
  if (dbGpa) {
    const page = v.getUint32(44, true);
    const words = (gpa: bigint) => {
      const r = guest_ram(gpa, page);
      return new Uint32Array(r.buffer, r.byteOffset, page / 4);
    };
    const dbw = words(dbGpa);
    const eiw = words(v.getBigUint64(56, true));
    sq.shadow = { db: dbw, ei: eiw, index: (2 * qid * stride) / 4 };
    cq.shadow = { db: dbw, ei: eiw, index: ((2 * cqid + 1) * stride) / 4 };
  }
  return { sq, cq, stats };
}

/** Poll a CQ until `done()` holds or timeoutMs passes (for queues without a controller object here). */
export function nvme_poll(cq: NvmeCq, done: () => boolean, timeoutMs: number): boolean {
  const deadline = now_ms() + timeoutMs;
  for (let spins = 0; ; spins++) {
    cq.reap();
    if (done()) return true;
    if ((spins & 255) === 255 && now_ms() > deadline) return false;
    cpu_relax();
  }
}

/** Read or Write command fields for `nlb` blocks at `slba`. */
export function nvme_rw(opcode: number, nsid: number, slba: bigint, nlb: number, prps: { prp1: bigint; prp2: bigint }, cdw12 = 0): NvmeCommand {
  return {
    opcode, nsid, prp1: prps.prp1, prp2: prps.prp2,
    cdw10: Number(slba & 0xffff_ffffn), cdw11: Number(slba >> 32n), cdw12: ((nlb - 1) & 0xffff) | cdw12,
  };
}
