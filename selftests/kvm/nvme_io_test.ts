// nvme_io_test: block I/O through the NVMe device task on a raw image file. Guest code writes known
// patterns and reads them back through every PRP layout (one page, two pages, a PRP list, chained
// lists, an unaligned first page, an MDTS-sized transfer), wraps small queues, fills an SQ and a CQ,
// runs two vCPUs on their own queue pairs at once, turns shadow doorbells on, and uses Flush, Write
// Zeroes and deallocate; then two more VMs write over ioeventfd + shadow doorbells and over the
// classic exit path. After every device task has exited, the host compares the image file byte for
// byte (and by sha256) with what the shared write plan says the guests wrote.

import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KVM_CAP_IOEVENTFD, KVM_CAP_IOREGIONFD, KVM_CAP_IRQFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan, ksft_test_result } from '../kselftest';
import { GUEST_DONE, GUEST_SYNC, guest_ram } from './lib/guest';
import { GUEST_CHECK, guest_checks_missing, guest_checks_run } from './lib/guest_checks';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { vm_create_irqchip } from './lib/irq';
import {
  __vcpu_run_start, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, vcpu_args_set, vm_alloc, vm_create, vm_vcpu_add,
} from './lib/kvm_util';
import {
  nvme_build_prps, nvme_cmd, nvme_import_pair, nvme_poll, nvme_rw, NvmeController, NvmeCq, NvmeDmaArena, NvmeSq,
} from './lib/nvme';
import { NvmeDoorbellPath, nvme_vmm_start } from './lib/nvme_vmm';
import { UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const BLOCK = 512;
const IMAGE_BYTES = 8 << 20;
const GSI_BASE = 8;
const VECTORS = 4;
const ARENA_SIZE = 5 << 20;
const STAGE_SPLIT = 20n;
const PATHS: NvmeDoorbellPath[] = ['ioregionfd', 'ioeventfd', 'exit'];

// ---- the write plan both sides share ----------------------------------------------------------------

export interface Op {
  /** 'w': write blocks of generation `gen`; 'z': blocks become zero (Write Zeroes / deallocate). */
  kind: 'w' | 'z';
  lba: number;
  nlb: number;
  gen: number;
}

const w = (lba: number, nlb: number, gen: number): Op => ({ kind: 'w', lba, nlb, gen });
const run = (n: number, lba: number, gen: number, nlb = 8): Op[] => Array.from({ length: n }, (_, i) => w(lba + nlb * i, nlb, gen));

/** In the order they happen; each phase's ops touch disjoint blocks, later phases may overwrite earlier ones. */
export const PLAN = {
  onePage: [w(0, 8, 1)],
  twoPages: [w(64, 16, 1)],
  list: [w(128, 64, 1)],
  chained: [w(256, 48, 1)],
  unaligned: [w(512, 20, 1)],
  unalignedTwo: [w(600, 2, 1)],
  mdts: [w(1024, 1024, 1)],
  wrap: run(40, 2048, 1),
  fullSq: run(3, 2400, 1),
  fullCq: run(12, 2432, 1),
  vcpu0: run(64, 4096, 1),
  vcpu1: run(64, 8192, 1),
  shadow: run(128, 12288, 2),
  overwrite: run(8, 0, 3),
  flushed: run(16, 14336, 4),
  zeroes: [{ kind: 'z', lba: 14336, nlb: 64, gen: 0 }] as Op[],
  deallocated: [{ kind: 'z', lba: 14400, nlb: 64, gen: 0 }] as Op[],
  ioeventfd: run(32, 14464, 5),
  exit: run(32, 14720, 6),
};

/** The contents of block `lba` written with generation `gen`: xorshift32 words from a seed of both. */
export function fill_block(out: Uint8Array, off: number, lba: number, gen: number): void {
  const v = new DataView(out.buffer, out.byteOffset + off, BLOCK);
  let x = (Math.imul(lba + 1, 0x9e37_79b1) ^ Math.imul(gen + 7, 0x85eb_ca6b)) >>> 0 || 1;
  for (let i = 0; i < BLOCK; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    v.setUint32(i, x, true);
  }
}

function fill_op(op: Op, out: Uint8Array, off = 0): void {
  for (let b = 0; b < op.nlb; b++) {
    if (op.kind === 'w') fill_block(out, off + b * BLOCK, op.lba + b, op.gen);
    else out.fill(0, off + b * BLOCK, off + (b + 1) * BLOCK);
  }
}

// ---- checks -------------------------------------------------------------------------------------------

export const CHECKS = [
  'PRP1 only: 4 KiB in one page written and read back',
  'PRP1 + PRP2: 8 KiB over two scattered pages',
  'PRP list: 32 KiB over eight scattered pages',
  'chained PRP lists: a list starting in the last two slots of its page',
  'unaligned first page: PRP1 at offset 0x600 with a PRP list',
  'unaligned first page: 1 KiB split across two pages',
  'an MDTS-sized transfer (512 KiB) through a 127-entry PRP list',
  'every layout reads back the same through one contiguous buffer',
  'queue wrap-around: 40 commands through a 4-entry queue pair, every lap\'s phase right',
  'a full SQ: commands pushed until it refuses, one doorbell, all complete',
  'a CQ smaller than its SQ: 12 commands at once complete as the host frees entries',
  'two vCPUs at once: vCPU 0 on an interrupt-driven and a polled queue pair',
  'two vCPUs at once: vCPU 1 on its own polled queue pair',
  'Doorbell Buffer Config (shadow doorbells) succeeds',
  'shadow doorbells: 128 writes at QD 16 read back',
  'shadow doorbells: fewer MMIO doorbell writes than commands',
  'shadow doorbells on a polled pair: an overwrite of LBAs 0-63 reads back the new data',
  'Flush completes',
  'Write Zeroes with deallocate reads back zeros, the blocks around untouched',
  'Dataset Management deallocate reads back zeros',
  'shutdown completes (CSTS.SHST)',
  'ioeventfd + shadow doorbells: 32 writes at QD 8 read back',
  'classic exit path, one shared interrupt line for every CQ: 32 writes at QD 8 read back',
] as const;

const HOST_CHECKS = [
  'every guest ran to GUEST_DONE',
  'the ioregionfd VM\'s BAR0 accesses had no ioregionfd failures',
  'the classic exit path forwarded doorbell writes to the device task',
  'every device task exited 0',
  'the image file equals, byte for byte, what the write plan says the guests wrote',
  'the image file\'s sha256 equals the expected image\'s',
] as const;

type Check = (typeof CHECKS)[number];

function check(name: Check, ok: boolean, detail = ''): void {
  GUEST_CHECK(CHECKS.indexOf(name), ok, detail);
}

// ---- guest: moving data --------------------------------------------------------------------------------

type Waiter = (cq: NvmeCq, done: () => boolean) => boolean;

interface Io {
  sq: NvmeSq;
  wait: Waiter;
  arena: NvmeDmaArena;
  pageSize: number;
}

/** The first difference between guest memory and an op's expected data, or ''. */
function compare(op: Op, gpa: bigint): string {
  const want = new Uint8Array(op.nlb * BLOCK);
  fill_op(op, want);
  const got = guest_ram(gpa, want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) return `LBA ${op.lba + Math.floor(i / BLOCK)} byte ${i % BLOCK}: 0x${got[i].toString(16)}, want 0x${want[i].toString(16)}`;
  }
  return '';
}

/**
 * Run ops at queue depth qd, one 4 KiB page each (ops of up to 8 blocks): write them, then read them
 * back and compare. Returns '' or what went wrong.
 */
function write_and_verify(io: Io, ops: Op[], qd: number, waitFor?: Waiter): string {
  const wait = waitFor ?? io.wait;
  const mark = io.arena.mark();
  try {
    const bufs = Array.from({ length: qd }, () => io.arena.alloc(io.pageSize, io.pageSize));
    for (const pass of ['write', 'read'] as const) {
      const free = bufs.map((_, i) => i);
      const inflight = new Map<number, { op: Op; buf: number }>();
      let next = 0;
      let error = '';
      while ((next < ops.length || inflight.size) && !error) {
        while (next < ops.length && free.length && io.sq.free > 0) {
          const op = ops[next++];
          const buf = free.pop()!;
          const page = guest_ram(bufs[buf], io.pageSize);
          if (pass === 'write') fill_op(op, page);
          else page.fill(0xee);
          const cid = io.sq.submit(nvme_rw(pass === 'write' ? nvme_cmd.write : nvme_cmd.read, 1, BigInt(op.lba), op.nlb, { prp1: bufs[buf], prp2: 0n }));
          inflight.set(cid, { op, buf });
        }
        const done: number[] = [];
        const ok = wait(io.sq.cq, () => {
          for (const cid of inflight.keys()) if (io.sq.cq.done.has((io.sq.qid << 16) | cid)) done.push(cid);
          return done.length > 0;
        });
        if (!ok) return `${pass}: timed out with ${inflight.size} commands in flight`;
        for (const cid of done) {
          const c = io.sq.cq.take(io.sq.qid, cid)!;
          const { op, buf } = inflight.get(cid)!;
          inflight.delete(cid);
          // Keep the first error: the completions after it still free their buffers.
          if (!error && c.status !== 0) error = `${pass} of LBA ${op.lba}: status 0x${c.status.toString(16)}`;
          else if (!error && pass === 'read') error = compare(op, bufs[buf]);
          free.push(buf);
        }
      }
      if (error) return error;
    }
    return '';
  } finally {
    io.arena.release(mark);
  }
}

/** `n` page-aligned pages, none adjacent to another, in descending address order. */
function scattered(arena: NvmeDmaArena, n: number, pageSize: number): bigint[] {
  const base = arena.alloc(2 * n * pageSize, pageSize);
  return Array.from({ length: n }, (_, i) => base + BigInt((2 * (n - 1 - i)) * pageSize));
}

/** Copy bytes to/from the pages of a layout (first page from `offset`). */
function scatter(data: Uint8Array, pages: bigint[], offset: number, pageSize: number, gather = false): void {
  let done = 0;
  for (let i = 0; done < data.length; i++) {
    const start = i === 0 ? offset : 0;
    const n = Math.min(pageSize - start, data.length - done);
    const mem = guest_ram(pages[i] + BigInt(start), n);
    if (gather) data.set(mem, done);
    else mem.set(data.subarray(done, done + n));
    done += n;
  }
}

/** One op through a given layout: write it, read it back through the same layout, compare. */
function layout_io(ctrl: NvmeController, io: Io, op: Op, pages: bigint[], offset: number, listOffset = 0): string {
  const mark = io.arena.mark();
  try {
    const len = op.nlb * BLOCK;
    const prps = nvme_build_prps(io.arena, pages, offset, len, io.pageSize, listOffset);
    const data = new Uint8Array(len);
    fill_op(op, data);
    scatter(data, pages, offset, io.pageSize);
    const wr = ctrl.exec(io.sq, nvme_rw(nvme_cmd.write, 1, BigInt(op.lba), op.nlb, prps));
    if (wr.status !== 0) return `write: status 0x${wr.status.toString(16)}`;
    scatter(new Uint8Array(len).fill(0xee), pages, offset, io.pageSize);
    const rd = ctrl.exec(io.sq, nvme_rw(nvme_cmd.read, 1, BigInt(op.lba), op.nlb, prps));
    if (rd.status !== 0) return `read: status 0x${rd.status.toString(16)}`;
    const back = new Uint8Array(len);
    scatter(back, pages, offset, io.pageSize, true);
    for (let i = 0; i < len; i++) if (back[i] !== data[i]) return `byte ${i} of ${len}: 0x${back[i].toString(16)}, want 0x${data[i].toString(16)}`;
    return '';
  } finally {
    io.arena.release(mark);
  }
}

/** Read an op's blocks into one contiguous buffer (its own PRP list) and compare. */
function read_contiguous(ctrl: NvmeController, io: Io, op: Op): string {
  const mark = io.arena.mark();
  try {
    const len = op.nlb * BLOCK;
    const pages = Math.ceil(len / io.pageSize);
    const buf = io.arena.alloc(pages * io.pageSize, io.pageSize);
    const prps = nvme_build_prps(io.arena, Array.from({ length: pages }, (_, i) => buf + BigInt(i * io.pageSize)), 0, len, io.pageSize);
    const c = ctrl.exec(io.sq, nvme_rw(nvme_cmd.read, 1, BigInt(op.lba), op.nlb, prps));
    return c.status !== 0 ? `status 0x${c.status.toString(16)}` : compare(op, buf);
  } finally {
    io.arena.release(mark);
  }
}

/** vCPU 0 of the ioregionfd VM: everything but vCPU 1's share. */
export function nvme_io_guest(bar0: bigint, arenaBase: bigint, arenaSize: bigint, gsiBase: bigint, descGpa: bigint): void {
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const ctrl = NvmeController.probe({ bar0, arena, interrupts: 'msix', gsiBase: Number(gsiBase) });
  const ps = ctrl.pageSize;
  ctrl.setNumQueues(8);
  const wait: Waiter = (cq, done) => ctrl.wait(cq, done);
  const io: Io = { sq: ctrl.createPair(1, 32, { vector: 1 }), wait, arena, pageSize: ps };

  // ---- PRP layouts ----
  const layouts: [Check, Op, bigint[], number, number][] = [
    ['PRP1 only: 4 KiB in one page written and read back', PLAN.onePage[0], scattered(arena, 1, ps), 0, 0],
    ['PRP1 + PRP2: 8 KiB over two scattered pages', PLAN.twoPages[0], scattered(arena, 2, ps), 0, 0],
    ['PRP list: 32 KiB over eight scattered pages', PLAN.list[0], scattered(arena, 8, ps), 0, 0],
    ['chained PRP lists: a list starting in the last two slots of its page', PLAN.chained[0], scattered(arena, 6, ps), 0, ps - 16],
    ['unaligned first page: PRP1 at offset 0x600 with a PRP list', PLAN.unaligned[0], scattered(arena, 4, ps), 0x600, 0],
    ['unaligned first page: 1 KiB split across two pages', PLAN.unalignedTwo[0], scattered(arena, 2, ps), ps - 512, 0],
  ];
  for (const [name, op, pages, offset, listOffset] of layouts) {
    const err = layout_io(ctrl, io, op, pages, offset, listOffset);
    check(name, err === '', err);
  }
  const mdts = PLAN.mdts[0];
  const maxOk = ctrl.id!.maxTransfer >= mdts.nlb * BLOCK;
  const mdtsErr = maxOk ? layout_io(ctrl, io, mdts, scattered(arena, (mdts.nlb * BLOCK) / ps, ps), 0) : `MDTS allows ${ctrl.id!.maxTransfer} bytes`;
  check('an MDTS-sized transfer (512 KiB) through a 127-entry PRP list', mdtsErr === '', mdtsErr);
  const plans = [PLAN.onePage, PLAN.twoPages, PLAN.list, PLAN.chained, PLAN.unaligned, PLAN.unalignedTwo, PLAN.mdts];
  const again = plans.map((p) => read_contiguous(ctrl, io, p[0])).filter((e) => e);
  check('every layout reads back the same through one contiguous buffer', again.length === 0, again.join('; '));

  // ---- small and full queues ----
  const small: Io = { ...io, sq: ctrl.createPair(2, 4, { vector: 2 }) };
  const wrapErr = write_and_verify(small, PLAN.wrap, 1);
  check('queue wrap-around: 40 commands through a 4-entry queue pair, every lap\'s phase right', wrapErr === '' && small.sq.tail === (2 * 40) % 4, wrapErr);
  // Fill the SQ before ringing: push until it refuses, then one doorbell.
  const bufs = PLAN.fullSq.map(() => arena.alloc(ps, ps));
  const cids: number[] = [];
  for (let i = 0; ; i++) {
    const op = PLAN.fullSq[i % PLAN.fullSq.length];
    fill_op(op, guest_ram(bufs[i % bufs.length], ps));
    const cid = small.sq.push(nvme_rw(nvme_cmd.write, 1, BigInt(op.lba), op.nlb, { prp1: bufs[i % bufs.length], prp2: 0n }));
    if (cid < 0) break;
    cids.push(cid);
  }
  small.sq.ring();
  const full = cids.map((cid) => ctrl.waitFor(small.sq, cid));
  check('a full SQ: commands pushed until it refuses, one doorbell, all complete', cids.length === 3 && full.every((c) => c.status === 0),
    `${cids.length} pushed, statuses ${full.map((c) => c.status).join(',')}`);
  const cq3 = ctrl.createCq(3, 4, { vector: 3 });
  const sq3 = typeof cq3 === 'number' ? cq3 : ctrl.createSq(3, 16, cq3);
  if (typeof sq3 === 'number') check('a CQ smaller than its SQ: 12 commands at once complete as the host frees entries', false, `create: 0x${sq3.toString(16)}`);
  else {
    const err = write_and_verify({ ...io, sq: sq3 }, PLAN.fullCq, 12);
    check('a CQ smaller than its SQ: 12 commands at once complete as the host frees entries', err === '', err);
  }

  // ---- two vCPUs: polled pairs 5 (here) and 6 (vCPU 1) ----
  const polled: Io = { ...io, sq: ctrl.createPair(5, 16, { ien: false }) };
  const theirs = ctrl.createPair(6, 16, { ien: false });
  ctrl.exportPair(theirs, descGpa);
  GUEST_SYNC(STAGE_SPLIT);
  const even = PLAN.vcpu0.filter((_, i) => i % 2 === 0);
  const odd = PLAN.vcpu0.filter((_, i) => i % 2 === 1);
  const e0 = write_and_verify(io, even, 8) || write_and_verify(polled, odd, 8);
  check('two vCPUs at once: vCPU 0 on an interrupt-driven and a polled queue pair', e0 === '', e0);

  // ---- shadow doorbells ----
  check('Doorbell Buffer Config (shadow doorbells) succeeds', ctrl.configureShadowDoorbells() === 0);
  const before = { ...ctrl.stats };
  const shadowErr = write_and_verify(io, PLAN.shadow, 16);
  check('shadow doorbells: 128 writes at QD 16 read back', shadowErr === '', shadowErr);
  const mmio = ctrl.stats.sqDoorbells + ctrl.stats.cqDoorbells - before.sqDoorbells - before.cqDoorbells;
  const commands = ctrl.stats.submitted - before.submitted;
  check('shadow doorbells: fewer MMIO doorbell writes than commands', mmio < commands && ctrl.stats.shadowOnly > before.shadowOnly,
    `${mmio} MMIO doorbell writes for ${commands} commands`);
  const ow = write_and_verify(polled, PLAN.overwrite, 4);
  check('shadow doorbells on a polled pair: an overwrite of LBAs 0-63 reads back the new data', ow === '', ow);

  // ---- flush, write zeroes, deallocate ----
  const fe = write_and_verify(io, PLAN.flushed, 8);
  const flush = ctrl.exec(io.sq, { opcode: nvme_cmd.flush, nsid: 1 });
  check('Flush completes', fe === '' && flush.status === 0, fe || `status 0x${flush.status.toString(16)}`);
  const z = PLAN.zeroes[0];
  const wz = ctrl.exec(io.sq, { opcode: nvme_cmd.write_zeroes, nsid: 1, cdw10: z.lba, cdw12: (z.nlb - 1) | (1 << 25) });
  // The zeroed range, and the written block right after it (not yet deallocated).
  const zErr = wz.status ? `status 0x${wz.status.toString(16)}` : read_contiguous(ctrl, io, z) || read_contiguous(ctrl, io, PLAN.flushed[8]);
  check('Write Zeroes with deallocate reads back zeros, the blocks around untouched', zErr === '', zErr);
  const d = PLAN.deallocated[0];
  const range = arena.alloc(ps, ps);
  const rb = guest_ram(range, 16);
  const rv = new DataView(rb.buffer, rb.byteOffset, 16);
  rv.setUint32(4, d.nlb, true);
  rv.setBigUint64(8, BigInt(d.lba), true);
  const dsm = ctrl.exec(io.sq, { opcode: nvme_cmd.dsm, nsid: 1, prp1: range, cdw10: 0, cdw11: 1 << 2 });
  const dErr = dsm.status ? `status 0x${dsm.status.toString(16)}` : read_contiguous(ctrl, io, d);
  check('Dataset Management deallocate reads back zeros', dErr === '', dErr);
  const shst = ctrl.shutdown();
  check('shutdown completes (CSTS.SHST)', shst !== undefined && (shst & 0xc) === 0x8);
  GUEST_DONE();
}

/** vCPU 1 of the ioregionfd VM: its own polled pair, handed over by vCPU 0. */
export function nvme_io_guest_vcpu1(descGpa: bigint, arenaBase: bigint, arenaSize: bigint): void {
  const { sq } = nvme_import_pair(descGpa);
  const io: Io = { sq, wait: (cq, done) => nvme_poll(cq, done, 10_000), arena: new NvmeDmaArena(arenaBase, Number(arenaSize)), pageSize: 4096 };
  const err = write_and_verify(io, PLAN.vcpu1, 8);
  check('two vCPUs at once: vCPU 1 on its own polled queue pair', err === '', err);
  GUEST_DONE();
}

/**
 * The ioeventfd and exit-path VMs: probe, (shadow doorbells), 32 writes at QD 8, shutdown. The exit
 * path's controller has one interrupt vector: the driver puts every CQ on it and its one handler
 * scans them all (as on a controller with only an INTx line).
 */
export function nvme_io_guest_path(bar0: bigint, arenaBase: bigint, arenaSize: bigint, gsiBase: bigint, pathIndex: bigint): void {
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const exit = PATHS[Number(pathIndex)] === 'exit';
  const ctrl = NvmeController.probe({ bar0, arena, interrupts: exit ? 'intx' : 'msix', gsiBase: Number(gsiBase) });
  const io: Io = { sq: ctrl.createPair(1, 32, { vector: 1 }), wait: (cq, done) => ctrl.wait(cq, done), arena, pageSize: ctrl.pageSize };
  if (PATHS[Number(pathIndex)] === 'ioeventfd') {
    // The I/O doorbells are ioeventfds: only the shadow page carries the values.
    const s = ctrl.configureShadowDoorbells();
    const err = s === 0 ? write_and_verify(io, PLAN.ioeventfd, 8) : `Doorbell Buffer Config: ${s}`;
    check('ioeventfd + shadow doorbells: 32 writes at QD 8 read back', err === '', err);
  } else {
    const err = write_and_verify(io, PLAN.exit, 8);
    const oneLine = io.sq.cq.vector === 0 && (ctrl.interrupts[0] ?? 0) > 0 && ctrl.interrupts.length === 1;
    check('classic exit path, one shared interrupt line for every CQ: 32 writes at QD 8 read back', err === '' && oneLine,
      err || `I/O CQ on vector ${io.sq.cq.vector}, interrupts by vector ${JSON.stringify(ctrl.interrupts)}`);
  }
  ctrl.shutdown();
  GUEST_DONE();
}

// ---- host ----------------------------------------------------------------------------------------------

function expected_image(): Buffer {
  const img = Buffer.alloc(IMAGE_BYTES);
  for (const ops of Object.values(PLAN)) for (const op of ops) fill_op(op, img, op.lba * BLOCK);
  return img;
}

function new_vm(guest: (...args: bigint[]) => void, vcpus: number): { vm: KvmVm; vcpu: KvmVcpu[]; arena: bigint } {
  const vm = vm_create(ARENA_SIZE + (1 << 20));
  vm_create_irqchip(vm);
  const vcpu = [vm_vcpu_add(vm, 0, guest)];
  if (vcpus > 1) vcpu.push(vm_vcpu_add(vm, 1, nvme_io_guest_vcpu1));
  return { vm, vcpu, arena: vm_alloc(vm, ARENA_SIZE, 4096) };
}

async function main(): Promise<void> {
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IRQFD), 'kvm_has_cap(KVM_CAP_IRQFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOEVENTFD), 'kvm_has_cap(KVM_CAP_IOEVENTFD)');
  ksft_set_plan(CHECKS.length + HOST_CHECKS.length);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme_io_test-'));
  const image = path.join(dir, 'disk.img');
  const seen = new Set<number>();
  let allDone = true;
  let noFailures = true;
  let forwardedDoorbells = 0;
  const exits: (number | null)[] = [];
  try {
    for (const [i, p] of PATHS.entries()) {
      const full = p === 'ioregionfd';
      const { vm, vcpu, arena } = new_vm(full ? nvme_io_guest : nvme_io_guest_path, full ? 2 : 1);
      const vectors = p === 'exit' ? 1 : VECTORS;
      const config = { image, ...(i === 0 ? { size: IMAGE_BYTES } : {}), queues: 8, vectors };
      const vmm = nvme_vmm_start({ vm, path: p, config, vectors, gsiBase: GSI_BASE, ioQueues: 8 });
      const onExit = (v: KvmVcpu) => vmm.handleExit(v);
      if (full) {
        const desc = vm_alloc(vm, 64, 64);
        vcpu_args_set(vcpu[0], vmm.bar0, arena, ARENA_SIZE / 2, GSI_BASE, desc);
        vcpu_args_set(vcpu[1], desc, arena + BigInt(ARENA_SIZE / 2), ARENA_SIZE / 2);
        let uc = guest_checks_run(vcpu[0], CHECKS, seen, onExit);
        TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === STAGE_SPLIT, 'vCPU 0 did not hand a queue pair to vCPU 1');
        // Both vCPUs do their I/O at once; vCPU 1's results are collected first, then vCPU 0's.
        __vcpu_run_start(vcpu[0]);
        allDone = guest_checks_run(vcpu[1], CHECKS, seen, onExit).cmd === UCALL_DONE && allDone;
        uc = guest_checks_run(vcpu[0], CHECKS, seen, onExit, true);
        allDone = uc.cmd === UCALL_DONE && allDone;
        noFailures = vm_ioregion_stats(vm).every((s) => s.failures === 0n);
      } else {
        vcpu_args_set(vcpu[0], vmm.bar0, arena, ARENA_SIZE, GSI_BASE, BigInt(i));
        allDone = guest_checks_run(vcpu[0], CHECKS, seen, onExit).cmd === UCALL_DONE && allDone;
        if (p === 'exit') forwardedDoorbells = vmm.forwarded.doorbells;
      }
      kvm_vm_free(vm);
      exits.push((await vmm.stop()).code);
    }
    ksft_test_result(allDone, HOST_CHECKS[0]);
    ksft_test_result(noFailures, HOST_CHECKS[1]);
    ksft_print_msg(`the exit path forwarded ${forwardedDoorbells} doorbell writes`);
    ksft_test_result(forwardedDoorbells > 0, HOST_CHECKS[2]);
    ksft_test_result(exits.every((c) => c === 0), `${HOST_CHECKS[3]} (${exits.join(', ')})`);
    const got = fs.readFileSync(image);
    const want = expected_image();
    let firstDiff = -1;
    for (let i = 0; i < Math.max(got.length, want.length) && firstDiff < 0; i++) if (got[i] !== want[i]) firstDiff = i;
    if (firstDiff >= 0) ksft_print_msg(`first difference at byte ${firstDiff} (LBA ${Math.floor(firstDiff / BLOCK)}); image ${got.length} bytes, expected ${want.length}`);
    ksft_test_result(firstDiff < 0, HOST_CHECKS[4]);
    const h1 = createHash('sha256').update(got).digest('hex');
    const h2 = createHash('sha256').update(want).digest('hex');
    ksft_print_msg(`sha256 image ${h1}, expected ${h2}`);
    ksft_test_result(h1 === h2, HOST_CHECKS[5]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  guest_checks_missing(CHECKS, seen, 'not reported');
  ksft_finished();
}

if (require.main === module) void main();
