// The NVMe controller: BAR0 registers and their handshakes, doorbells (MMIO writes, or shadow doorbells
// woken by an ioeventfd), queue arbitration, command execution, completion posting, interrupts and
// asynchronous events. Admin and NVM commands live in admin.ts and io.ts.
//
// How work flows: every doorbell (or ioeventfd ring) runs one processing pass, synchronously inside the
// serve loop's call: post completions that waited for room, then pick submission queues by the
// arbitration in force (round robin, or weighted round robin with an urgent class) and execute their
// commands one burst at a time while their completion queue has room; with shadow doorbells, publish
// each queue's EventIdx and re-read the shadow tails before stopping, so a submission that raced the
// pass is never left waiting. Interrupts: a completion posted to a CQ the host had emptied interrupts
// at once; while the host is still behind, later completions wait, and a pass that leaves unconsumed
// entries posted after the last interrupt ends with one more (a few interrupts per batch, none
// lost: the host may have scanned past a slot just before it was written). With
// Interrupt Coalescing set, an I/O vector is instead raised every THR + 1 completions and at the end
// of a pass (the aggregation time cannot be timed: there is no timer). A command's completion is posted
// before the next command is fetched, except AERs (held until an event) and completions that find
// their queue full (kept in order until the host frees entries; the SQ is not fetched meanwhile).
//
// Bad input never throws: a register access nobody decodes is ignored, an invalid doorbell raises an
// Error async event, a command gets the status the specification gives, and what the specification
// calls fatal (a bad CC.EN, queue memory outside guest RAM) sets CSTS.CFS.

import type { DeviceContext, DeviceModel } from '../../sdk/device-model';
import type { EventSignal } from '../../sdk/eventfd';
import type { GuestMemoryDma } from '../../sdk/guest-memory';
import { RegisterSpace } from '../../sdk/register-space';
import { executeAdmin } from './admin';
import type { NvmeConfig } from './config';
import {
  AER_INFO_INVALID_DOORBELL_REGISTER, AER_INFO_INVALID_DOORBELL_VALUE, AER_TYPE_ERROR, AMS_RR, AMS_WRR, CC_AMS_SHIFT,
  CC_CSS_SHIFT, CC_EN, CC_IOCQES_SHIFT, CC_IOSQES_SHIFT, CC_MPS_SHIFT, CC_SHN_SHIFT, CQE_SHIFT, CQE_SIZE, CSTS_CFS,
  CSTS_RDY, CSTS_SHST_SHIFT, DNR, DOORBELL_BASE, LID, NVME_VERSION, REG, SC, SHST_COMPLETE, SHST_NORMAL, SQE_SHIFT,
  SQE_SIZE,
} from './defs';
import { Features } from './features';
import { AERL, ELPE, ErrorEntry, Namespace, SmartCounters } from './identify';
import { executeIo } from './io';
import { walkPrps } from './prp';
import { CompletionQueue, readShadow, ShadowSlot, SubmissionQueue, writeEventIdx } from './queues';

/** BAR0: the register page, then doorbells for up to 1535 queue pairs (DSTRD 0). */
export const BAR0_SIZE = 0x4000;
/** CAP.DSTRD: doorbells are 4 bytes apart. */
export const DSTRD = 0;
/** CAP.TO: CSTS.RDY follows CC.EN at once here, so the smallest worst case (500 ms) is advertised. */
export const CAP_TIMEOUT = 1;
/** Memory page sizes: 4 KiB (MPSMIN 0) to 64 KiB (MPSMAX 4). */
export const MPSMIN = 0;
export const MPSMAX = 4;
/** A command the controller keeps (an AER): no completion now. */
export const HELD = -1;
/** Async events queued while no AER is outstanding, at most. */
const MAX_QUEUED_EVENTS = 16;

export interface NvmeStats {
  /** MMIO doorbell writes received (each 4-byte doorbell counts once). */
  doorbellWrites: number;
  /** ioeventfd rings received (the eventfd counter's sum). */
  eventfdRings: number;
  /** Doorbell writes to no queue, of an invalid value, or of the wrong width. */
  invalidDoorbells: number;
  /** Register accesses ignored (outside BAR0, straddling registers, doorbells read or written oddly). */
  ignoredAccesses: number;
  commands: number;
  completions: number;
  /** Interrupts raised (eventfd signals), and those whose eventfd is missing. */
  interrupts: number;
  lostInterrupts: number;
  passes: number;
}

interface AsyncEvent {
  type: number;
  info: number;
  lid: number;
}

/** The 64-byte submission entry being executed, with field accessors. */
export class Command {
  readonly bytes = new Uint8Array(SQE_SIZE);
  private readonly view = new DataView(this.bytes.buffer);
  get opcode(): number {
    return this.bytes[0];
  }
  get fuse(): number {
    return this.bytes[1] & 0x3;
  }
  get psdt(): number {
    return (this.bytes[1] >> 6) & 0x3;
  }
  get cid(): number {
    return this.view.getUint16(2, true);
  }
  get nsid(): number {
    return this.view.getUint32(4, true);
  }
  get prp1(): bigint {
    return this.view.getBigUint64(24, true);
  }
  get prp2(): bigint {
    return this.view.getBigUint64(32, true);
  }
  /** Command dword n (10..15; 2..3 too). */
  cdw(n: number): number {
    return this.view.getUint32(4 * n, true);
  }
}

export class NvmeController implements DeviceModel {
  readonly regs: RegisterSpace;
  readonly cap: bigint;
  readonly vectors: number;
  readonly features: Features;
  readonly stats: NvmeStats = newStats();
  readonly sqs: (SubmissionQueue | undefined)[];
  readonly cqs: (CompletionQueue | undefined)[];
  /** Existing SQs by id, for arbitration. */
  private sqList: SubmissionQueue[] = [];
  private readonly irqs: (EventSignal | undefined)[];
  private readonly vectorPending: Int32Array;

  /** Operational state (CC.EN latched values). */
  private cc = 0;
  ready = false;
  fatal = false;
  private shst = SHST_NORMAL;
  /** After a shutdown nothing is processed until the controller is reset. */
  private halted = false;
  private intMask = 0;
  pageSize = 4096;
  private ams = AMS_RR;

  /** Shadow doorbell and EventIdx pages, once configured. */
  private shadowDb: Uint32Array | undefined;
  private shadowEi: Uint32Array | undefined;

  /** The result dwords of the command being executed (handlers set them). */
  dw0 = 0;
  dw1 = 0;
  /** The LBA and NSID an I/O error is about (for the error log). */
  errorLba = 0n;
  readonly command = new Command();

  /** Held AER command ids, queued events, and event types masked until their log page is read. */
  private readonly aers: number[] = [];
  private readonly events: AsyncEvent[] = [];
  private readonly maskedEvents = new Set<number>();
  readonly errorLog: ErrorEntry[] = [];
  errorCount = 0n;
  readonly smart: SmartCounters;

  private running = false;
  private rerun = false;
  private rrCursor = 0;
  private readonly wrrCredits = [0, 0, 0, 0];
  private readonly wrrCursor = [0, 0, 0, 0];
  private loggedUnusableRing = false;
  private loggedFault = false;

  constructor(
    readonly ctx: DeviceContext,
    readonly config: NvmeConfig,
    readonly namespaces: Namespace[],
  ) {
    this.vectors = config.vectors ?? countIrqEventfds(ctx.eventfds);
    this.irqs = Array.from({ length: this.vectors }, (_, v) => ctx.eventfds.get(`irq${v}`));
    this.vectorPending = new Int32Array(this.vectors);
    this.features = new Features({ vectors: this.vectors, maxQueues: config.queues, volatileWriteCache: config.volatileWriteCache });
    this.sqs = new Array<SubmissionQueue | undefined>(config.queues + 1);
    this.cqs = new Array<CompletionQueue | undefined>(config.queues + 1);
    this.smart = newSmart();
    this.cap = BigInt(config.queueEntries - 1) // MQES
      | (1n << 16n) // CQR: queues must be physically contiguous
      | (config.weightedRoundRobin ? 1n << 17n : 0n) // AMS: weighted round robin with urgent class
      | (BigInt(CAP_TIMEOUT) << 24n)
      | (BigInt(DSTRD) << 32n)
      | (1n << 37n) // CSS: NVM command set
      | (BigInt(MPSMIN) << 48n)
      | (BigInt(MPSMAX) << 52n);
    const U64 = 0xffff_ffff_ffff_ffffn;
    this.regs = new RegisterSpace([
      { name: 'CAP', offset: REG.CAP, size: 8, reset: this.cap, writable: 0n },
      { name: 'VS', offset: REG.VS, size: 4, reset: BigInt(NVME_VERSION), writable: 0n },
      // Write 1s to mask (INTMS) or unmask (INTMC); both read as the mask. The stored value stays 0,
      // so onWrite sees exactly the bits of the lanes written.
      { name: 'INTMS', offset: REG.INTMS, size: 4, onRead: () => BigInt(this.intMask >>> 0), onWrite: (v) => this.maskWrite(Number(v), true) },
      { name: 'INTMC', offset: REG.INTMC, size: 4, onRead: () => BigInt(this.intMask >>> 0), onWrite: (v) => this.maskWrite(Number(v), false) },
      { name: 'CC', offset: REG.CC, size: 4, writable: 0x01ff_fff1n, onWrite: (v) => this.ccWrite(Number(v)) },
      { name: 'CSTS', offset: REG.CSTS, size: 4, writable: 0n, onRead: () => BigInt(this.csts()) },
      { name: 'NSSR', offset: REG.NSSR, size: 4, writable: 0n },
      { name: 'AQA', offset: REG.AQA, size: 4, writable: 0x0fff_0fffn },
      { name: 'ASQ', offset: REG.ASQ, size: 8, writable: U64 & ~0xfffn },
      { name: 'ACQ', offset: REG.ACQ, size: 8, writable: U64 & ~0xfffn },
      { name: 'CMBLOC', offset: REG.CMBLOC, size: 4, writable: 0n },
      { name: 'CMBSZ', offset: REG.CMBSZ, size: 4, writable: 0n },
    ]);
  }

  get memory(): GuestMemoryDma {
    return this.ctx.memory;
  }

  // ---- the DeviceModel face ------------------------------------------------------------------------

  /** user_data of a region is its offset inside BAR0 (0 for the registers, 0x1000 for the doorbells). */
  private barOffset(offset: bigint, userData: bigint, size: number): number {
    if (userData >= BigInt(BAR0_SIZE) || offset >= BigInt(BAR0_SIZE)) return -1;
    const o = Number(userData + offset);
    return o + size <= BAR0_SIZE ? o : -1;
  }

  read(offset: bigint, size: number, userData: bigint): bigint {
    try {
      const bar = this.barOffset(offset, userData, size);
      if (bar >= 0 && bar + size <= DOORBELL_BASE) {
        const before = this.regs.unclaimed;
        const v = this.regs.read(BigInt(bar), size);
        this.stats.ignoredAccesses += this.regs.unclaimed - before;
        return v;
      }
      // Doorbells are write-only and read as 0; past BAR0 nothing answers.
      this.stats.ignoredAccesses++;
      return 0n;
    } catch (e) {
      this.fault(e);
      return 0n;
    }
  }

  write(offset: bigint, size: number, value: bigint, userData: bigint): void {
    try {
      const bar = this.barOffset(offset, userData, size);
      if (bar < 0 || (bar < DOORBELL_BASE && bar + size > DOORBELL_BASE)) {
        this.stats.ignoredAccesses++;
        return;
      }
      if (bar < DOORBELL_BASE) {
        const before = this.regs.unclaimed;
        this.regs.write(BigInt(bar), size, value);
        this.stats.ignoredAccesses += this.regs.unclaimed - before;
        return;
      }
      this.doorbellWrite(bar, size, value);
    } catch (e) {
      this.fault(e);
    }
  }

  /** The ioeventfd of the I/O queues' doorbells rang: the values are in the shadow doorbell page. */
  onEventfd(name: string, count: bigint): void {
    try {
      if (name !== 'doorbell') return;
      this.stats.eventfdRings += Number(count);
      if (!this.processing()) return;
      if (!this.shadowDb) {
        // An ioeventfd carries no value: without shadow doorbells the controller cannot know what was written.
        if (!this.loggedUnusableRing) this.ctx.log('nvme: an ioeventfd doorbell rang but no Doorbell Buffer is configured: the value is unknown, ring ignored');
        this.loggedUnusableRing = true;
        return;
      }
      for (const sq of this.sqList) this.refreshTail(sq);
      for (const cq of this.cqs) if (cq) this.refreshHead(cq);
      this.run();
    } catch (e) {
      this.fault(e);
    }
  }

  /** Power-on state: registers at reset values, no queues, features at defaults, counters cleared. */
  reset(): void {
    try {
      this.controllerReset();
      this.regs.reset();
      this.cc = 0;
      Object.assign(this.stats, newStats());
      Object.assign(this.smart, newSmart());
      this.errorLog.length = 0;
      this.errorCount = 0n;
      this.loggedUnusableRing = false;
    } catch (e) {
      this.fault(e);
    }
  }

  /** A bug of this model: say so once and stop the controller (CSTS.CFS) rather than throw at the guest. */
  private fault(e: unknown): void {
    this.fatal = true;
    if (!this.loggedFault) this.ctx.log(`nvme: internal error, controller stopped (CSTS.CFS): ${(e as Error)?.stack ?? String(e)}`);
    this.loggedFault = true;
  }

  // ---- registers -----------------------------------------------------------------------------------

  csts(): number {
    return (this.ready ? CSTS_RDY : 0) | (this.fatal ? CSTS_CFS : 0) | (this.shst << CSTS_SHST_SHIFT);
  }

  private maskWrite(bits: number, set: boolean): void {
    this.regs.set(set ? 'INTMS' : 'INTMC', 0n);
    if (set) {
      this.intMask = (this.intMask | bits) >>> 0;
      return;
    }
    this.intMask = (this.intMask & ~bits) >>> 0;
    // An interrupt that waited behind the mask is raised now.
    for (let v = 0; v < 32 && v < this.vectors; v++) if (bits & (1 << v) && this.vectorPending[v] > 0) this.raise(v);
  }

  private ccWrite(value: number): void {
    const old = this.cc;
    this.cc = value;
    if (old & CC_EN && !(value & CC_EN)) this.controllerReset();
    else if (!(old & CC_EN) && value & CC_EN) this.enable();
    const oldShn = (old >> CC_SHN_SHIFT) & 3;
    const shn = (value >> CC_SHN_SHIFT) & 3;
    if (shn && !oldShn) this.shutdown();
    else if (!shn && oldShn) this.shst = SHST_NORMAL;
  }

  /** CC.EN 0 -> 1: check what the host configured, create the admin queues, set CSTS.RDY (or CFS). */
  private enable(): void {
    const cc = this.cc;
    const mps = (cc >> CC_MPS_SHIFT) & 0xf;
    const css = (cc >> CC_CSS_SHIFT) & 0x7;
    const ams = (cc >> CC_AMS_SHIFT) & 0x7;
    const iosqes = (cc >> CC_IOSQES_SHIFT) & 0xf;
    const iocqes = (cc >> CC_IOCQES_SHIFT) & 0xf;
    const aqa = Number(this.regs.get('AQA'));
    const asqs = (aqa & 0xfff) + 1;
    const acqs = ((aqa >> 16) & 0xfff) + 1;
    const asq = this.regs.get('ASQ');
    const acq = this.regs.get('ACQ');
    const pageSize = 1 << (12 + mps);
    const pageMask = BigInt(pageSize - 1);
    const ok = mps >= MPSMIN && mps <= MPSMAX
      && css === 0 // only the NVM command set
      && (ams === AMS_RR || (ams === AMS_WRR && this.config.weightedRoundRobin))
      && asqs > 1 && acqs > 1
      // Entry sizes may still be 0 (set later, before I/O queues are created), else must be 64/16 bytes.
      && (iosqes === 0 || iosqes === SQE_SHIFT) && (iocqes === 0 || iocqes === CQE_SHIFT)
      && !(asq & pageMask) && !(acq & pageMask);
    const sqBytes = ok ? this.memory.view(asq, asqs * SQE_SIZE) : undefined;
    const cqBytes = ok ? this.memory.view(acq, acqs * CQE_SIZE) : undefined;
    if (!sqBytes || !cqBytes) {
      this.fatal = true;
      return;
    }
    this.pageSize = pageSize;
    this.ams = ams;
    this.cqs[0] = new CompletionQueue(0, acq, acqs, true, 0, cqBytes);
    this.addSq(new SubmissionQueue(0, asq, asqs, 0, 0, sqBytes));
    this.ready = true;
  }

  /** CC.EN 1 -> 0: forget every queue, held command and event; features back to defaults. AQA/ASQ/ACQ stay. */
  private controllerReset(): void {
    this.sqs.fill(undefined);
    this.cqs.fill(undefined);
    this.sqList = [];
    this.aers.length = 0;
    this.events.length = 0;
    this.maskedEvents.clear();
    this.shadowDb = undefined;
    this.shadowEi = undefined;
    this.intMask = 0;
    this.vectorPending.fill(0);
    this.ready = false;
    this.fatal = false;
    this.halted = false;
    this.shst = SHST_NORMAL;
    this.features.reset();
    this.rrCursor = 0;
  }

  /** CC.SHN: make everything written durable, then report the shutdown complete. */
  private shutdown(): void {
    for (const ns of this.namespaces) ns.store.flush();
    this.shst = SHST_COMPLETE;
    this.halted = true;
  }

  /** Whether commands are processed now. */
  private processing(): boolean {
    return this.ready && !this.fatal && !this.halted;
  }

  // ---- doorbells -----------------------------------------------------------------------------------

  private doorbellWrite(bar: number, size: number, value: bigint): void {
    const rel = bar - DOORBELL_BASE;
    if (rel % 4 !== 0 || (size !== 4 && size !== 8)) {
      // Doorbells are 32-bit registers; other accesses are undefined and ignored.
      this.stats.ignoredAccesses++;
      return;
    }
    this.ring(rel >> 2, Number(value & 0xffff_ffffn));
    // An 8-byte write covers two adjacent doorbells (DSTRD 0).
    if (size === 8) this.ring((rel >> 2) + 1, Number(value >> 32n));
  }

  private ring(index: number, value: number): void {
    this.stats.doorbellWrites++;
    if (!this.processing()) return;
    const qid = index >> 1;
    const isCq = (index & 1) === 1;
    const q = isCq ? this.cqs[qid] : this.sqs[qid];
    if (!q) return this.doorbellError(AER_INFO_INVALID_DOORBELL_REGISTER, qid);
    // Bits 31:16 are reserved.
    const v = value & 0xffff;
    if (q instanceof SubmissionQueue) {
      // With shadow doorbells an I/O queue's MMIO write is a kick: the shadow page holds the value.
      // The admin queue's MMIO value is authoritative (Linux never shadows it) and mirrored there.
      if (q.shadow && qid !== 0) this.refreshTail(q);
      else if (!q.validTail(v)) return this.doorbellError(AER_INFO_INVALID_DOORBELL_VALUE, qid);
      else {
        q.tail = v;
        if (q.shadow) Atomics.store(q.shadow.db, q.shadow.index, v);
      }
    } else {
      if (q.shadow && qid !== 0) this.refreshHead(q);
      else if (!q.validHead(v)) return this.doorbellError(AER_INFO_INVALID_DOORBELL_VALUE, qid);
      else if (v !== q.head) {
        q.head = v;
        if (q.shadow) Atomics.store(q.shadow.db, q.shadow.index, v);
        this.headMoved(q);
      }
    }
    this.run();
  }

  /** Take an SQ's tail from its shadow doorbell; true when it moved. A bad value is reported once. */
  private refreshTail(sq: SubmissionQueue): boolean {
    if (!sq.shadow) return false;
    const t = readShadow(sq.shadow);
    if (t === sq.tail) return false;
    if (!sq.validTail(t)) {
      if (sq.badShadow !== t) this.doorbellError(AER_INFO_INVALID_DOORBELL_VALUE, sq.id);
      sq.badShadow = t;
      return false;
    }
    sq.tail = t;
    return true;
  }

  private refreshHead(cq: CompletionQueue): boolean {
    if (!cq.shadow) return false;
    const h = readShadow(cq.shadow);
    if (h === cq.head) return false;
    if (!cq.validHead(h)) {
      if (cq.badShadow !== h) this.doorbellError(AER_INFO_INVALID_DOORBELL_VALUE, cq.id);
      cq.badShadow = h;
      return false;
    }
    cq.head = h;
    this.headMoved(cq);
    return true;
  }

  /**
   * The host consumed entries of a CQ. Once it has emptied the queue, the next entry interrupts at
   * once; if it is still behind, the end of the pass announces what it has not seen.
   */
  private headMoved(cq: CompletionQueue): void {
    if (cq.used === 0) cq.irqArmed = true;
  }

  private doorbellError(info: number, qid: number): void {
    this.stats.invalidDoorbells++;
    this.logError({ sqid: qid, cid: 0xffff, status: 0, location: 0xffff, lba: 0n, nsid: 0 });
    this.queueEvent(AER_TYPE_ERROR, info, LID.ERROR_INFO);
  }

  // ---- the processing pass -------------------------------------------------------------------------

  /** One pass: see the top of the file. Re-entry (a handler causing more work) extends the running pass. */
  run(): void {
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.running = true;
    this.stats.passes++;
    try {
      do {
        this.rerun = false;
        this.drainBacklogs();
        for (let sq = this.nextSq(); sq && this.processing(); sq = this.nextSq()) {
          const burst = this.burst();
          for (let i = 0; i < burst && this.canFetch(sq) && this.processing(); i++) this.execute(sq);
        }
        if (this.shadowDb && this.processing() && this.publishEventIdx()) this.rerun = true;
      } while (this.rerun && this.processing());
      this.endOfPassInterrupts();
    } finally {
      this.running = false;
    }
  }

  /** Raise every vector with completions waiting (coalesced vectors, or a completion posted outside a pass). */
  private raisePending(): void {
    for (let v = 0; v < this.vectors; v++) if (this.vectorPending[v] > 0) this.raise(v);
  }

  /** End of a pass: no entry may stay posted, unconsumed and unannounced. */
  private endOfPassInterrupts(): void {
    for (const cq of this.cqs) {
      if (!cq || !cq.ien || cq.unsignalled === 0 || this.coalesced(cq)) continue;
      if (cq.shadow) this.refreshHead(cq);
      if (cq.unsignalled > 0 && cq.used > 0) this.interrupt(cq);
    }
    this.raisePending();
  }

  /** Whether Interrupt Coalescing applies to a CQ: an I/O queue, THR set, not disabled for its vector. */
  private coalesced(cq: CompletionQueue): boolean {
    return cq.id !== 0 && (this.features.coalescing & 0xff) > 0 && !this.features.coalescingDisabled.has(cq.vector);
  }

  /** Interrupt for a CQ's entries: its vector, and nothing more until the host consumes entries. */
  private interrupt(cq: CompletionQueue): void {
    cq.irqArmed = false;
    cq.unsignalled = 0;
    this.raise(cq.vector);
  }

  /** Commands per arbitration turn: 2^AB, AB 7 meaning no limit. */
  private burst(): number {
    const ab = this.features.arbitration & 0x7;
    return ab === 7 ? Infinity : 1 << ab;
  }

  /** Whether an SQ has a command to fetch and its CQ room for the completion. */
  private canFetch(sq: SubmissionQueue): boolean {
    if (sq.empty) return false;
    const cq = this.cqs[sq.cqid];
    return cq !== undefined && cq.backlog.length === 0 && !this.cqFull(cq);
  }

  /** Full, after looking at the host's shadow head; a full shadowed CQ asks for a ring when it frees entries. */
  private cqFull(cq: CompletionQueue): boolean {
    if (!cq.full) return false;
    if (!cq.shadow) return true;
    this.refreshHead(cq);
    if (!cq.full) return false;
    writeEventIdx(cq.shadow, cq.head);
    this.refreshHead(cq);
    return cq.full;
  }

  /** The next SQ to serve, by the arbitration selected at CC.EN. */
  private nextSq(): SubmissionQueue | undefined {
    const list = this.sqList;
    if (list.length === 0) return undefined;
    if (this.ams === AMS_WRR) return this.nextWrr();
    for (let k = 1; k <= list.length; k++) {
      const sq = list[(this.rrCursor + k) % list.length];
      if (this.canFetch(sq)) {
        this.rrCursor = (this.rrCursor + k) % list.length;
        return sq;
      }
    }
    return undefined;
  }

  /**
   * Weighted round robin with urgent priority class: the admin SQ first, then urgent SQs (QPRIO 0),
   * round robin; then high, medium and low SQs get HPW+1, MPW+1 and LPW+1 turns per round.
   */
  private nextWrr(): SubmissionQueue | undefined {
    const admin = this.sqs[0];
    if (admin && this.canFetch(admin)) return admin;
    const pick = (prio: number): SubmissionQueue | undefined => {
      const list = this.sqList.filter((s) => s.id !== 0 && s.prio === prio);
      for (let k = 1; k <= list.length; k++) {
        const sq = list[(this.wrrCursor[prio] + k) % list.length];
        if (this.canFetch(sq)) {
          this.wrrCursor[prio] = (this.wrrCursor[prio] + k) % list.length;
          return sq;
        }
      }
      return undefined;
    };
    const urgent = pick(0);
    if (urgent) return urgent;
    for (let attempt = 0; attempt < 2; attempt++) {
      for (let prio = 1; prio <= 3; prio++) {
        if (this.wrrCredits[prio] <= 0) continue;
        const sq = pick(prio);
        if (sq) {
          this.wrrCredits[prio]--;
          return sq;
        }
      }
      // Every class with work used its turns: a new round.
      const arb = this.features.arbitration;
      this.wrrCredits[1] = ((arb >>> 24) & 0xff) + 1;
      this.wrrCredits[2] = ((arb >>> 16) & 0xff) + 1;
      this.wrrCredits[3] = ((arb >>> 8) & 0xff) + 1;
    }
    return undefined;
  }

  /** Fetch, execute and complete the command at an SQ's head. */
  private execute(sq: SubmissionQueue): void {
    const cmd = this.command;
    sq.fetch(cmd.bytes);
    this.stats.commands++;
    const cid = cmd.cid;
    this.dw0 = 0;
    this.dw1 = 0;
    this.errorLba = 0n;
    let status: number;
    if (sq.outstanding.has(cid)) status = SC.CID_CONFLICT | DNR;
    else status = sq.id === 0 ? executeAdmin(this, cmd) : executeIo(this, cmd);
    if (status === HELD) {
      sq.outstanding.add(cid);
      // An AER may complete at once if an event is already waiting.
      this.deliverEvents();
      return;
    }
    if (status !== SC.SUCCESS) {
      this.logError({ sqid: sq.id, cid, status, location: 0xffff, lba: this.errorLba, nsid: cmd.nsid });
    }
    this.complete(sq, cid, status, this.dw0, this.dw1);
    // An admin command may have unmasked an event type (a log page read): after its own completion.
    if (sq.id === 0) this.deliverEvents();
  }

  /** Post a completion for a command of `sq`, or keep it until its CQ has room. */
  complete(sq: SubmissionQueue, cid: number, status: number, dw0: number, dw1: number): void {
    const cq = this.cqs[sq.cqid];
    if (!cq) return;
    if (cq.backlog.length || this.cqFull(cq)) {
      cq.backlog.push({ sqid: sq.id, sqhd: sq.head, cid, status, dw0, dw1 });
      sq.outstanding.add(cid);
      return;
    }
    this.post(cq, sq.id, sq.head, cid, status, dw0, dw1);
  }

  private post(cq: CompletionQueue, sqid: number, sqhd: number, cid: number, status: number, dw0: number, dw1: number): void {
    const notify = cq.ien && cq.vector < this.vectors;
    // An interrupt is outstanding: has the host emptied the queue since (a shadowed head is cheap to read)?
    if (notify && !cq.irqArmed && cq.shadow) this.refreshHead(cq);
    cq.postEntry(sqid, sqhd, cid, status, dw0, dw1);
    this.stats.completions++;
    if (!notify) return;
    if (this.coalesced(cq)) {
      // Interrupt Coalescing: raised once THR + 1 completions wait on the vector (and at the end of a pass).
      if (++this.vectorPending[cq.vector] > (this.features.coalescing & 0xff)) this.raise(cq.vector);
      return;
    }
    cq.unsignalled++;
    if (cq.irqArmed) this.interrupt(cq);
  }

  private drainBacklogs(): void {
    for (const cq of this.cqs) {
      if (!cq) continue;
      while (cq.backlog.length && !this.cqFull(cq)) {
        const c = cq.backlog.shift()!;
        this.sqs[c.sqid]?.outstanding.delete(c.cid);
        this.post(cq, c.sqid, c.sqhd, c.cid, c.status, c.dw0, c.dw1);
      }
    }
  }

  /**
   * Shadow doorbells: tell the host, per SQ, to ring again once it moves past what was consumed
   * (EventIdx = tail), then look at the shadow tails once more. True if a submission came in meanwhile.
   */
  private publishEventIdx(): boolean {
    let more = false;
    for (const sq of this.sqList) {
      if (!sq.shadow) continue;
      writeEventIdx(sq.shadow, sq.tail);
      if (this.refreshTail(sq) && this.canFetch(sq)) more = true;
    }
    return more;
  }

  /** Signal a vector's eventfd, unless INTMS masks it (it stays pending until INTMC unmasks it). */
  private raise(v: number): void {
    if (v < 32 && this.intMask & (1 << v)) {
      this.vectorPending[v] ||= 1;
      return;
    }
    this.vectorPending[v] = 0;
    const e = this.irqs[v];
    if (!e) {
      this.stats.lostInterrupts++;
      return;
    }
    try {
      e.signal();
      this.stats.interrupts++;
    } catch {
      this.stats.lostInterrupts++;
    }
  }

  // ---- queues (used by the admin commands) -------------------------------------------------------------

  addSq(sq: SubmissionQueue): void {
    this.sqs[sq.id] = sq;
    this.sqList = this.sqs.filter((s): s is SubmissionQueue => s !== undefined);
    this.cqs[sq.cqid]?.sqs.add(sq.id);
    if (this.shadowDb) this.attachShadow(sq);
  }

  addCq(cq: CompletionQueue): void {
    this.cqs[cq.id] = cq;
    if (this.shadowDb) this.attachShadow(cq);
  }

  /** Delete an SQ: completions still waiting for room in its CQ are dropped (the host gave up on them). */
  deleteSq(sq: SubmissionQueue): void {
    const cq = this.cqs[sq.cqid];
    if (cq) {
      cq.sqs.delete(sq.id);
      for (let i = cq.backlog.length - 1; i >= 0; i--) if (cq.backlog[i].sqid === sq.id) cq.backlog.splice(i, 1);
    }
    this.sqs[sq.id] = undefined;
    this.sqList = this.sqs.filter((s): s is SubmissionQueue => s !== undefined);
  }

  deleteCq(cq: CompletionQueue): void {
    this.cqs[cq.id] = undefined;
  }

  ioQueuesExist(): boolean {
    return this.sqList.some((s) => s.id !== 0) || this.cqs.some((c, i) => c !== undefined && i !== 0);
  }

  /** Doorbell Buffer Config: shadow doorbells and EventIdx for every queue, now and later. */
  configureShadow(db: Uint32Array, ei: Uint32Array): void {
    this.shadowDb = db;
    this.shadowEi = ei;
    for (const sq of this.sqList) this.attachShadow(sq);
    for (const cq of this.cqs) if (cq) this.attachShadow(cq);
  }

  /**
   * Give a queue its slots (SQ y at 2y, CQ y at 2y + 1, in doorbell stride units), if the page has
   * them. The current tail/head goes into both slots (a new queue's slot may still hold a value of an
   * earlier queue with this id): the host's next change then crosses EventIdx and rings.
   */
  private attachShadow(q: SubmissionQueue | CompletionQueue): void {
    const index = (2 * q.id + (q instanceof CompletionQueue ? 1 : 0)) << DSTRD;
    if (!this.shadowDb || !this.shadowEi || index >= this.shadowDb.length) return;
    const slot: ShadowSlot = { db: this.shadowDb, ei: this.shadowEi, index };
    const value = q instanceof SubmissionQueue ? q.tail : q.head;
    Atomics.store(slot.db, index, value);
    writeEventIdx(slot, value);
    q.shadow = slot;
  }

  // ---- async events and the error log ------------------------------------------------------------------

  /** An Asynchronous Event Request: held until an event; AERL + 1 may be outstanding. */
  holdAer(cid: number): number {
    // No DNR: the same command succeeds once an outstanding AER has completed.
    if (this.aers.length > AERL) return SC.AER_LIMIT_EXCEEDED;
    this.aers.push(cid);
    return HELD;
  }

  queueEvent(type: number, info: number, lid: number): void {
    if (this.events.some((e) => e.type === type && e.info === info)) return;
    if (this.events.length >= MAX_QUEUED_EVENTS) return;
    this.events.push({ type, info, lid });
    this.deliverEvents();
    // An event raised by a doorbell write happens outside a processing pass: its AER's interrupt too.
    if (!this.running) this.raisePending();
  }

  /** Complete held AERs with queued events of types not masked (a delivered type stays masked until its log is read). */
  deliverEvents(): void {
    const admin = this.sqs[0];
    if (!admin) return;
    while (this.aers.length) {
      const i = this.events.findIndex((e) => !this.maskedEvents.has(e.type));
      if (i < 0) return;
      const [e] = this.events.splice(i, 1);
      const cid = this.aers.shift()!;
      admin.outstanding.delete(cid);
      this.maskedEvents.add(e.type);
      this.complete(admin, cid, SC.SUCCESS, e.type | (e.info << 8) | (e.lid << 16), 0);
    }
  }

  /** A log page was read with RAE 0: events of its type may be reported again. */
  logPageRead(lid: number): void {
    if (lid === LID.ERROR_INFO) this.maskedEvents.delete(AER_TYPE_ERROR);
    if (lid === LID.SMART) this.maskedEvents.delete(1);
  }

  logError(e: Omit<ErrorEntry, 'count'>): void {
    this.errorCount++;
    this.smart.errorCount = this.errorCount;
    this.errorLog.unshift({ ...e, count: this.errorCount });
    if (this.errorLog.length > ELPE + 1) this.errorLog.length = ELPE + 1;
  }

  // ---- data transfers of admin commands -----------------------------------------------------------------

  /** Copy `data` to the host through the command's PRPs; `len` bytes (zero padded). Returns a status. */
  toHost(cmd: Command, data: Uint8Array, len = data.length): number {
    const r = walkPrps(this.memory, cmd.prp1, cmd.prp2, len, this.pageSize);
    if (r.status) return r.status | DNR;
    let off = 0;
    for (const s of r.segments) {
      const part = data.subarray(off, off + s.bytes.length);
      s.bytes.set(part);
      s.bytes.fill(0, part.length);
      off += s.bytes.length;
    }
    return SC.SUCCESS;
  }

  /** `len` bytes from the host through the command's PRPs, or a status. */
  fromHost(cmd: Command, len: number): Uint8Array | number {
    const r = walkPrps(this.memory, cmd.prp1, cmd.prp2, len, this.pageSize);
    if (r.status) return r.status | DNR;
    const out = new Uint8Array(len);
    let off = 0;
    for (const s of r.segments) {
      out.set(s.bytes, off);
      off += s.bytes.length;
    }
    return out;
  }

  /** The transfer limit of MDTS, in bytes (Infinity for MDTS 0). */
  get maxTransfer(): number {
    return this.config.mdts ? (1 << this.config.mdts) * (1 << (12 + MPSMIN)) : Infinity;
  }

  /** CC's I/O queue entry sizes (checked when I/O queues are created). */
  get ioEntrySizes(): { sq: number; cq: number } {
    return { sq: (this.cc >> CC_IOSQES_SHIFT) & 0xf, cq: (this.cc >> CC_IOCQES_SHIFT) & 0xf };
  }
}

function newStats(): NvmeStats {
  return {
    doorbellWrites: 0, eventfdRings: 0, invalidDoorbells: 0, ignoredAccesses: 0, commands: 0, completions: 0,
    interrupts: 0, lostInterrupts: 0, passes: 0,
  };
}

function newSmart(): SmartCounters {
  return {
    bytesRead: 0, bytesWritten: 0, readCommands: 0, writeCommands: 0, busyMs: 0, mediaErrors: 0, errorCount: 0n,
    poweredOnAt: Date.now(),
  };
}

/** irq0, irq1, ... as far as they go without a gap (capped: a test context may offer every name). */
function countIrqEventfds(eventfds: Map<string, EventSignal>): number {
  let n = 0;
  while (n < 64 && eventfds.has(`irq${n}`)) n++;
  return Math.max(n, 1);
}
