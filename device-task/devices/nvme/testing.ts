// A host for the nvme unit tests: plain-memory guest RAM, the model driven through read/write/onEventfd
// exactly as the serve loop would, queues built and completions read by hand (no driver, no process).

import { fakeDeviceContext, FakeDeviceContext, RecordingSignal } from '../../sdk/conformance';
import type { DeviceModel } from '../../sdk/device-model';
import { DOORBELL_BASE, REG } from './defs';
import { nvme } from './index';
import type { NvmeController } from './controller';

export const PAGE = 4096;
/** The default layout of a TestHost's RAM: admin SQ/CQ, then a heap. */
export const ASQ = 0x10000n;
export const ACQ = 0x20000n;
const HEAP = 0x40000n;

export interface Sqe {
  opcode: number;
  cid?: number;
  nsid?: number;
  prp1?: bigint;
  prp2?: bigint;
  /** Byte 1: FUSE (1:0) and PSDT (7:6). */
  flags?: number;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
}

export interface Cqe {
  dw0: number;
  dw1: number;
  sqhd: number;
  sqid: number;
  cid: number;
  phase: number;
  /** The 15-bit status field: (SCT << 8) | SC, DNR 0x4000. */
  status: number;
}

interface HostQueue {
  sq: bigint;
  cq: bigint;
  entries: number;
  tail: number;
  head: number;
  phase: number;
}

export class TestHost {
  readonly fake: FakeDeviceContext;
  readonly dev: NvmeController;
  readonly ram: Uint8Array;
  readonly view: DataView;
  readonly queues = new Map<number, HostQueue>();
  private heap = HEAP;
  private nextCid = 1;

  constructor(config: Record<string, unknown> = {}, ramSize = 4 << 20, eventfds: string[] | 'any' = ['irq0', 'irq1', 'irq2', 'irq3', 'doorbell']) {
    this.fake = fakeDeviceContext({ config, ramSize, eventfds });
    this.dev = nvme.create(this.fake.ctx) as DeviceModel as NvmeController;
    this.ram = this.fake.ram;
    this.view = new DataView(this.ram.buffer);
  }

  /** Page-aligned zeroed guest memory. */
  alloc(bytes: number, align = PAGE): bigint {
    const a = BigInt(align);
    const gpa = (this.heap + a - 1n) / a * a;
    this.heap = gpa + BigInt(bytes);
    this.ram.fill(0, Number(gpa), Number(gpa) + bytes);
    return gpa;
  }

  read(off: number, size = 4): bigint {
    return this.dev.read(BigInt(off), size, 0n);
  }

  write(off: number, value: bigint | number, size = 4): void {
    this.dev.write(BigInt(off), size, BigInt(value), 0n);
  }

  csts(): number {
    return Number(this.read(REG.CSTS));
  }

  /** AQA/ASQ/ACQ, then CC (64-byte SQEs, 16-byte CQEs, 4 KiB pages, `cc` extra bits) with EN. */
  enable(entries = 16, cc = 0): void {
    this.write(REG.AQA, ((entries - 1) << 16) | (entries - 1));
    this.write(REG.ASQ, ASQ, 8);
    this.write(REG.ACQ, ACQ, 8);
    this.ram.fill(0, Number(ACQ), Number(ACQ) + entries * 16);
    this.queues.set(0, { sq: ASQ, cq: ACQ, entries, tail: 0, head: 0, phase: 1 });
    this.write(REG.CC, (4 << 20) | (6 << 16) | cc | 1);
  }

  /** The submission entry bytes. */
  static encode(e: Sqe, cid: number): Uint8Array {
    const b = new Uint8Array(64);
    const v = new DataView(b.buffer);
    b[0] = e.opcode;
    b[1] = e.flags ?? 0;
    v.setUint16(2, cid, true);
    v.setUint32(4, e.nsid ?? 0, true);
    v.setBigUint64(24, e.prp1 ?? 0n, true);
    v.setBigUint64(32, e.prp2 ?? 0n, true);
    const dws = [e.cdw10, e.cdw11, e.cdw12, e.cdw13, e.cdw14, e.cdw15];
    dws.forEach((d, i) => v.setUint32(40 + 4 * i, (d ?? 0) >>> 0, true));
    return b;
  }

  /** Put an entry at an SQ's tail without ringing; returns its CID. */
  queue(qid: number, e: Sqe): number {
    const q = this.queues.get(qid)!;
    const cid = e.cid ?? this.nextCid++ & 0xffff;
    this.ram.set(TestHost.encode(e, cid), Number(q.sq) + q.tail * 64);
    q.tail = (q.tail + 1) % q.entries;
    return cid;
  }

  ringSq(qid: number, value?: number): void {
    this.write(DOORBELL_BASE + 8 * qid, value ?? this.queues.get(qid)!.tail);
  }

  ringCq(qid: number, value?: number): void {
    this.write(DOORBELL_BASE + 8 * qid + 4, value ?? this.queues.get(qid)!.head);
  }

  /** The new completions of a CQ (by phase), advancing the host's head; rings the head doorbell if any. */
  reap(qid: number, ring = true): Cqe[] {
    const q = this.queues.get(qid)!;
    const out: Cqe[] = [];
    for (;;) {
      const off = Number(q.cq) + q.head * 16;
      const dw3 = this.view.getUint32(off + 12, true);
      if (((dw3 >>> 16) & 1) !== q.phase) break;
      out.push({
        dw0: this.view.getUint32(off, true), dw1: this.view.getUint32(off + 4, true),
        sqhd: this.view.getUint16(off + 8, true), sqid: this.view.getUint16(off + 10, true),
        cid: dw3 & 0xffff, phase: (dw3 >>> 16) & 1, status: dw3 >>> 17,
      });
      q.head = (q.head + 1) % q.entries;
      if (q.head === 0) q.phase ^= 1;
    }
    if (ring && out.length) this.ringCq(qid);
    return out;
  }

  /** Submit one command and return its completion (asserting exactly one came). */
  cmd(qid: number, e: Sqe): Cqe {
    const cid = this.queue(qid, e);
    this.ringSq(qid);
    const got = this.reap(qid);
    if (got.length !== 1 || got[0].cid !== cid) throw new Error(`expected one completion for cid ${cid}, got ${JSON.stringify(got)}`);
    return got[0];
  }

  admin(e: Sqe): Cqe {
    return this.cmd(0, e);
  }

  /** Create I/O CQ then SQ `qid` with host-side bookkeeping; returns both completions' statuses. */
  createPair(qid: number, entries = 16, opts: { ien?: boolean; vector?: number; prio?: number; cqid?: number } = {}): [number, number] {
    const cq = this.alloc(entries * 16);
    const sq = this.alloc(entries * 64);
    const cqid = opts.cqid ?? qid;
    let s1 = 0;
    if (cqid === qid) {
      const cdw11 = ((opts.vector ?? 0) << 16) | ((opts.ien ?? false) ? 2 : 0) | 1;
      s1 = this.admin({ opcode: 0x05, prp1: cq, cdw10: ((entries - 1) << 16) | qid, cdw11 }).status;
    }
    const s2 = this.admin({ opcode: 0x01, prp1: sq, cdw10: ((entries - 1) << 16) | qid, cdw11: (cqid << 16) | ((opts.prio ?? 0) << 1) | 1 }).status;
    const shared = this.queues.get(cqid);
    this.queues.set(qid, { sq, cq: cqid === qid ? cq : shared!.cq, entries, tail: 0, head: 0, phase: 1 });
    return [s1, s2];
  }

  /** Interrupts recorded on irq<v>. */
  irqs(v: number): number {
    return (this.fake.signal(`irq${v}`) as RecordingSignal | undefined)?.counts.length ?? 0;
  }
}
