// nvme_fault_test: what a buggy or hostile guest, and a dying device task, get from the NVMe device
// task. Out-of-range LBAs, invalid PRP offsets, DMA outside guest RAM, bad queue ids, doorbells past a
// queue's size or for queues that do not exist, command id reuse and a fatal CC.EN each get the
// status, the async event or the CSTS.CFS the specification gives, and the controller keeps working.
// Then the device task is SIGKILLed while the guest does I/O: the vCPU leaves through the ioregionfd
// failure exit instead of hanging, and the image holds every write completed before the last Flush.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ECONNRESET, EIO, EPIPE, errnoName } from '../../proto/errno';
import {
  KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, KVM_CAP_IOREGIONFD, KVM_CAP_IRQFD, KVM_EXIT_IOREGIONFD_FAILURE, RUN,
} from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan, ksft_test_result } from '../kselftest';
import { GUEST_DONE, guest_ram, readl, writel } from './lib/guest';
import { GUEST_CHECK, guest_checks_missing, guest_checks_run } from './lib/guest_checks';
import { fd_readable } from './lib/ioeventfd';
import { vm_create_irqchip } from './lib/irq';
import {
  __vcpu_run_start, __vcpu_run_wait, addr_gpa2hva, exit_reason, exit_reason_str, kvm_has_cap, kvm_vm_free, vcpu_args_set,
  vcpu_kick, vm_alloc, vm_create, vm_enable_cap, vm_vcpu_add,
} from './lib/kvm_util';
import {
  nvme_admin, nvme_cmd, nvme_rw, nvme_sc, NVME_CSTS_CFS, NVME_CSTS_RDY, NvmeController, NvmeDmaArena, NVME_REG_CC, NVME_REG_CSTS,
  NVME_SC_CMDID_CONFLICT, NVME_SC_DATA_XFER_ERROR, NVME_SC_LBA_RANGE, NVME_SC_PRP_INVALID_OFFSET, NVME_SC_QID_INVALID,
} from './lib/nvme';
import { NVME_BAR0, NVME_BAR0_SIZE, nvme_vmm_start } from './lib/nvme_vmm';
import { UCALL_DONE } from './lib/ucall_common';
import { TEST_REQUIRE } from './lib/test_util';

const GSI_BASE = 8;
const VECTORS = 4;
const ARENA_SIZE = 1 << 20;
const BLOCK = 512;
/** The kill scenario: the guest counts its completed writes and the writes a completed Flush covers. */
const KILL_AFTER_FLUSHED = 96;
const FLUSH_EVERY = 8;

export const CHECKS = [
  'a read starting past the last LBA is LBA Out of Range',
  'a write crossing the last LBA is LBA Out of Range, and nothing of it is written',
  'the Error log records the out-of-range command\'s LBA',
  'PRP1 not dword aligned is Invalid PRP Offset',
  'PRP2 with an offset (two-page transfer) is Invalid PRP Offset',
  'a PRP list entry with an offset is Invalid PRP Offset',
  'a chained list pointer not page aligned is Invalid PRP Offset',
  'a read into memory past the end of guest RAM is a Data Transfer Error',
  'a read whose second page is outside guest RAM transfers nothing, not even the first page',
  'a PRP list outside guest RAM is a Data Transfer Error',
  'Create I/O CQ with its memory outside guest RAM is refused (Data Transfer Error)',
  'Create / Delete with queue ids that do not exist are Invalid Queue Identifier',
  'a doorbell write to an SQ that does not exist raises an Error AER (invalid doorbell register)',
  'a doorbell write to a CQ past the queues offered raises an Error AER (invalid doorbell register)',
  'an SQ tail at or past the queue size raises an Error AER (invalid doorbell value)',
  'a CQ head past the posted entries raises an Error AER (invalid doorbell value)',
  'the queue that got bad doorbells still works',
  'a command id in use by a held AER is Command ID Conflict',
  'a command id reused after its completion is fine',
  'a doorbell to a deleted SQ raises an Error AER, the deleted queue runs nothing',
  'CC.EN with IOCQES 5 sets CSTS.CFS; a reset clears it and the driver can probe again',
] as const;

const HOST_CHECKS = [
  'the fault guest ran to GUEST_DONE, the device task exited 0',
  'killed mid-I/O: the vCPU leaves KVM_RUN with KVM_EXIT_IOREGIONFD_FAILURE at a BAR0 access (no hang)',
  'killed mid-I/O: the failure exit reports a dead peer (EPIPE, ECONNRESET or EIO)',
  'killed mid-I/O: the device task died of SIGKILL and was reaped',
  'killed mid-I/O: the image holds every write completed before the last completed Flush',
] as const;

type Check = (typeof CHECKS)[number];

function check(name: Check, ok: boolean, detail = ''): void {
  GUEST_CHECK(CHECKS.indexOf(name), ok, detail);
}

const hex = (v: number | bigint) => `0x${v.toString(16)}`;

function status(name: Check, got: number, want: number): void {
  check(name, nvme_sc(got) === want, `status ${hex(got)}, want ${hex(want)}`);
}

export function nvme_fault_guest(bar0: bigint, arenaBase: bigint, arenaSize: bigint, gsiBase: bigint, ramEnd: bigint): void {
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const gsi = Number(gsiBase);
  let ctrl = NvmeController.probe({ bar0, arena, interrupts: 'msix', gsiBase: gsi });
  const ns = ctrl.identifyNamespace(1);
  const blocks = typeof ns === 'number' ? 0n : ns.blocks;
  const sq = ctrl.createPair(1, 16, { vector: 1 });
  const ps = ctrl.pageSize;
  const buf = arena.alloc(4 * ps, ps);
  const rw = (op: number, slba: bigint, nlb: number, prp1: bigint, prp2 = 0n) => ctrl.exec(sq, nvme_rw(op, 1, slba, nlb, { prp1, prp2 })).status;

  // ---- LBA range ----
  status('a read starting past the last LBA is LBA Out of Range', rw(nvme_cmd.read, blocks, 1, buf), NVME_SC_LBA_RANGE);
  guest_ram(buf, ps).fill(0x5c);
  const cross = rw(nvme_cmd.write, blocks - 4n, 8, buf);
  guest_ram(buf, ps).fill(0);
  const tail = rw(nvme_cmd.read, blocks - 4n, 4, buf);
  check('a write crossing the last LBA is LBA Out of Range, and nothing of it is written', nvme_sc(cross) === NVME_SC_LBA_RANGE && tail === 0 && guest_ram(buf, 4 * BLOCK).every((b) => b === 0),
    `status ${hex(cross)}`);
  const log = ctrl.withBuffer(4096, (b) => {
    ctrl.adminCmd({ opcode: nvme_admin.get_log_page, prp1: b, cdw10: 1 | (15 << 16) });
    const v = new DataView(guest_ram(b, 64).slice().buffer);
    return { sqid: v.getUint16(8, true), lba: v.getBigUint64(16, true), status: v.getUint16(12, true) >> 1 };
  });
  check('the Error log records the out-of-range command\'s LBA', log.sqid === 1 && log.lba === blocks - 4n && nvme_sc(log.status) === NVME_SC_LBA_RANGE, JSON.stringify(log, (_, v) => (typeof v === 'bigint' ? String(v) : v)));

  // ---- PRP offsets ----
  status('PRP1 not dword aligned is Invalid PRP Offset', rw(nvme_cmd.read, 0n, 1, buf + 2n), NVME_SC_PRP_INVALID_OFFSET);
  status('PRP2 with an offset (two-page transfer) is Invalid PRP Offset', rw(nvme_cmd.read, 0n, 16, buf, buf + BigInt(ps) + 0x200n), NVME_SC_PRP_INVALID_OFFSET);
  const list = arena.alloc(ps, ps);
  const lv = new DataView(guest_ram(list, ps).buffer, guest_ram(list, ps).byteOffset, ps);
  lv.setBigUint64(0, buf + BigInt(ps), true);
  lv.setBigUint64(8, buf + 2n * BigInt(ps) + 0x10n, true);
  status('a PRP list entry with an offset is Invalid PRP Offset', rw(nvme_cmd.read, 0n, 24, buf, list), NVME_SC_PRP_INVALID_OFFSET);
  // Two slots left in the list page: one data entry, then a chain pointer that is not page aligned.
  lv.setBigUint64(ps - 16, buf + BigInt(ps), true);
  lv.setBigUint64(ps - 8, list + 8n, true);
  status('a chained list pointer not page aligned is Invalid PRP Offset', rw(nvme_cmd.read, 0n, 32, buf, list + BigInt(ps - 16)), NVME_SC_PRP_INVALID_OFFSET);

  // ---- DMA outside guest RAM ----
  status('a read into memory past the end of guest RAM is a Data Transfer Error', rw(nvme_cmd.read, 0n, 8, ramEnd), NVME_SC_DATA_XFER_ERROR);
  const lastPage = ramEnd - BigInt(ps);
  guest_ram(lastPage, ps).fill(0xa5);
  const split = rw(nvme_cmd.read, 0n, 16, lastPage, ramEnd);
  check('a read whose second page is outside guest RAM transfers nothing, not even the first page',
    nvme_sc(split) === NVME_SC_DATA_XFER_ERROR && guest_ram(lastPage, ps).every((b) => b === 0xa5), `status ${hex(split)}`);
  status('a PRP list outside guest RAM is a Data Transfer Error', rw(nvme_cmd.read, 0n, 24, buf, NVME_BAR0), NVME_SC_DATA_XFER_ERROR);
  const outside = ctrl.createCq(3, 16, { vector: 1 });
  // The driver allocated the queue in RAM: ask again with the base moved past the end of RAM.
  const cqOut = ctrl.adminCmd({ opcode: nvme_admin.create_cq, prp1: ramEnd, cdw10: (15 << 16) | 2, cdw11: (1 << 16) | 3 });
  check('Create I/O CQ with its memory outside guest RAM is refused (Data Transfer Error)', typeof outside !== 'number' && nvme_sc(cqOut.status) === NVME_SC_DATA_XFER_ERROR,
    `status ${hex(cqOut.status)}`);
  if (typeof outside !== 'number') ctrl.adminCmd({ opcode: nvme_admin.delete_cq, cdw10: 3 });
  const bad = [
    ctrl.adminCmd({ opcode: nvme_admin.delete_sq, cdw10: 9 }).status, ctrl.adminCmd({ opcode: nvme_admin.delete_cq, cdw10: 9 }).status,
    ctrl.adminCmd({ opcode: nvme_admin.create_cq, prp1: buf, cdw10: (15 << 16) | 0xffff, cdw11: 1 }).status,
  ];
  check('Create / Delete with queue ids that do not exist are Invalid Queue Identifier', bad.every((s) => nvme_sc(s) === NVME_SC_QID_INVALID), bad.map(hex).join(', '));

  // ---- bad doorbells: each answered by an Error async event ----
  // An AER (a new one, or one already outstanding: the oldest completes first), then the bad ring.
  const event = (ring: () => void, outstanding?: number): number => {
    const cid = outstanding ?? ctrl.admin.submit({ opcode: nvme_admin.async_event });
    ring();
    const c = ctrl.waitFor(ctrl.admin, cid);
    // Read the Error log (RAE 0) so the next error can be reported.
    ctrl.withBuffer(4096, (b) => ctrl.adminCmd({ opcode: nvme_admin.get_log_page, prp1: b, cdw10: 1 | (15 << 16) }));
    return c.status === 0 ? c.dw0 : -1;
  };
  const ERROR_LOG = 1 << 16;
  const db = (qid: number, cq: boolean, v: number) => () => writel(ctrl.doorbell(qid, cq), BigInt(v));
  let dw0 = event(db(5, false, 1));
  check('a doorbell write to an SQ that does not exist raises an Error AER (invalid doorbell register)', dw0 === (0 | (0x00 << 8) | ERROR_LOG), hex(dw0));
  dw0 = event(db(900, true, 1));
  check('a doorbell write to a CQ past the queues offered raises an Error AER (invalid doorbell register)', dw0 === (0 | (0x00 << 8) | ERROR_LOG), hex(dw0));
  dw0 = event(db(1, false, 16));
  check('an SQ tail at or past the queue size raises an Error AER (invalid doorbell value)', dw0 === (0 | (0x01 << 8) | ERROR_LOG), hex(dw0));
  dw0 = event(db(1, true, (sq.cq.head + 5) % 16));
  check('a CQ head past the posted entries raises an Error AER (invalid doorbell value)', dw0 === (0 | (0x01 << 8) | ERROR_LOG), hex(dw0));
  check('the queue that got bad doorbells still works', rw(nvme_cmd.read, 0n, 8, buf) === 0);

  // ---- command ids ----
  const held = ctrl.admin.submit({ opcode: nvme_admin.async_event });
  const clash = ctrl.withBuffer(4096, (b) => ctrl.adminCmd({ opcode: nvme_admin.identify, cid: held, prp1: b, cdw10: 1 }));
  check('a command id in use by a held AER is Command ID Conflict', nvme_sc(clash.status) === NVME_SC_CMDID_CONFLICT && clash.cid === held, `status ${hex(clash.status)}`);
  const first = ctrl.exec(sq, { ...nvme_rw(nvme_cmd.read, 1, 0n, 1, { prp1: buf, prp2: 0n }), cid: 0x77 });
  const again = ctrl.exec(sq, { ...nvme_rw(nvme_cmd.read, 1, 0n, 1, { prp1: buf, prp2: 0n }), cid: 0x77 });
  check('a command id reused after its completion is fine', first.status === 0 && again.status === 0);

  // ---- a deleted queue ----
  const gone = ctrl.createPair(2, 8, { vector: 2 });
  const tailBefore = gone.tail;
  ctrl.deletePair(gone);
  gone.push(nvme_rw(nvme_cmd.write, 1, 0n, 1, { prp1: buf, prp2: 0n }));
  dw0 = event(() => gone.ring(), held);
  check('a doorbell to a deleted SQ raises an Error AER, the deleted queue runs nothing', dw0 === (0 | (0x00 << 8) | ERROR_LOG) && gone.cq.reap() === 0 && tailBefore === 0, hex(dw0));

  // ---- a fatal enable ----
  writel(bar0 + BigInt(NVME_REG_CC), 0n);
  ctrl.waitCsts((s) => (s & NVME_CSTS_RDY) === 0);
  writel(bar0 + BigInt(NVME_REG_CC), BigInt((5 << 20) | (6 << 16) | 1));
  const cfs = Number(readl(bar0 + BigInt(NVME_REG_CSTS)));
  ctrl = NvmeController.probe({ bar0, arena, interrupts: 'msix', gsiBase: gsi });
  check('CC.EN with IOCQES 5 sets CSTS.CFS; a reset clears it and the driver can probe again', cfs === NVME_CSTS_CFS && ctrl.identifyNamespace(1) !== undefined,
    `CSTS after the bad CC.EN: ${hex(cfs)}`);
  ctrl.shutdown();
  GUEST_DONE();
}

/**
 * The kill scenario's guest: polled writes of block i with generation 1 at QD 4, a Flush after every
 * FLUSH_EVERY writes. counters[0] = writes completed, counters[1] = writes covered by the last
 * completed Flush. It never returns: the host kills the device and the next BAR0 access fails.
 */
export function nvme_kill_guest(bar0: bigint, arenaBase: bigint, arenaSize: bigint, counters: bigint): void {
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const ctrl = NvmeController.probe({ bar0, arena, interrupts: 'none' });
  const sq = ctrl.createPair(1, 8, { ien: false });
  const c = guest_ram(counters, 16);
  const count = new DataView(c.buffer, c.byteOffset, 16);
  const bufs = [0, 1, 2, 3].map(() => arena.alloc(4096));
  let completed = 0;
  for (let i = 0; ; i += 4) {
    const cids = bufs.map((b, k) => {
      fill_block(guest_ram(b, BLOCK), i + k);
      return sq.submit(nvme_rw(nvme_cmd.write, 1, BigInt(i + k), 1, { prp1: b, prp2: 0n }));
    });
    for (const cid of cids) {
      // A short timeout: when the device is gone, look at CSTS (a BAR0 read) soon.
      const r = ctrl.waitFor(sq, cid, 200);
      if (r.status !== 0) readl(bar0 + BigInt(NVME_REG_CSTS));
    }
    completed = i + 4;
    count.setUint32(0, completed, true);
    if (completed % FLUSH_EVERY === 0) {
      const f = ctrl.exec(sq, { opcode: nvme_cmd.flush, nsid: 1 }, 200);
      if (f.status === 0) count.setUint32(4, completed, true);
      else readl(bar0 + BigInt(NVME_REG_CSTS));
    }
  }
}

/** Block lba's contents in the kill scenario. */
export function fill_block(out: Uint8Array, lba: number): void {
  for (let i = 0; i < BLOCK; i += 4) new DataView(out.buffer, out.byteOffset + i, 4).setUint32(0, (Math.imul(lba, 0x01000193) ^ i ^ 0x6b6b_0000) >>> 0, true);
}

async function faults(seen: Set<number>): Promise<void> {
  const vm = vm_create(ARENA_SIZE);
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, nvme_fault_guest);
  const arena = vm_alloc(vm, ARENA_SIZE, 4096);
  const ramEnd = [...vm.regions.values()].reduce((end, r) => (r.gpa + BigInt(r.size) > end ? r.gpa + BigInt(r.size) : end), 0n);
  const vmm = nvme_vmm_start({ vm, path: 'ioregionfd', config: { ram_size: 1 << 20, queues: 4, vectors: VECTORS }, vectors: VECTORS, gsiBase: GSI_BASE });
  vcpu_args_set(vcpu, vmm.bar0, arena, ARENA_SIZE, GSI_BASE, ramEnd);
  const uc = guest_checks_run(vcpu, CHECKS, seen);
  kvm_vm_free(vm);
  const st = await vmm.stop();
  ksft_test_result(uc.cmd === UCALL_DONE && st.code === 0, HOST_CHECKS[0]);
}

async function killMidIo(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme_fault_test-'));
  const image = path.join(dir, 'disk.img');
  try {
    const vm = vm_create(ARENA_SIZE);
    vm_enable_cap(vm, KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, 1n);
    const vcpu = vm_vcpu_add(vm, 0, nvme_kill_guest);
    const arena = vm_alloc(vm, ARENA_SIZE, 4096);
    const counters = vm_alloc(vm, 16, 16);
    const vmm = nvme_vmm_start({ vm, path: 'ioregionfd', config: { image, size: '2M' } });
    vcpu_args_set(vcpu, vmm.bar0, arena, ARENA_SIZE, counters);
    const view = new DataView(addr_gpa2hva(vm, counters, 16).buffer, addr_gpa2hva(vm, counters, 16).byteOffset, 16);
    __vcpu_run_start(vcpu);
    // Let the guest get well into its writes, then kill the device task under it.
    const deadline = Date.now() + 10_000;
    while (view.getUint32(4, true) < KILL_AFTER_FLUSHED && Date.now() < deadline && !fd_readable(vcpu.fd, 1)) { /* wait */ }
    process.kill(vmm.task.pid, 'SIGKILL');
    let returned = fd_readable(vcpu.fd, 10_000);
    if (!returned) {
      // A hang: get the vCPU back so the test can report it instead of stalling.
      vcpu_kick(vcpu);
      returned = fd_readable(vcpu.fd, 2000);
    }
    const r = returned ? __vcpu_run_wait(vcpu) : undefined;
    const reason = exit_reason(vcpu);
    const addr = vcpu.kvmRun.getBigUint64(RUN.iofail_addr, true);
    const errno = vcpu.kvmRun.getInt32(RUN.iofail_errno, true);
    const flushed = view.getUint32(4, true);
    const completed = view.getUint32(0, true);
    ksft_print_msg(`KVM_RUN returned ${r?.ret} with ${exit_reason_str(reason)} at 0x${addr.toString(16)} (errno ${errnoName(errno)}); ` +
      `${completed} writes completed, ${flushed} covered by a completed Flush`);
    ksft_test_result(r?.ret === 0 && reason === KVM_EXIT_IOREGIONFD_FAILURE && addr >= vmm.bar0 && addr < vmm.bar0 + NVME_BAR0_SIZE, HOST_CHECKS[1]);
    ksft_test_result([EPIPE, ECONNRESET, EIO].includes(errno), HOST_CHECKS[2]);
    kvm_vm_free(vm);
    const st = await vmm.stop();
    ksft_test_result(st.signal === 'SIGKILL', `${HOST_CHECKS[3]} (${st.signal ?? st.code})`);
    const img = fs.readFileSync(image);
    const want = new Uint8Array(BLOCK);
    let bad = -1;
    for (let lba = 0; lba < flushed && bad < 0; lba++) {
      fill_block(want, lba);
      if (!img.subarray(lba * BLOCK, (lba + 1) * BLOCK).equals(want)) bad = lba;
    }
    if (bad >= 0) ksft_print_msg(`block ${bad} does not hold what was written before the Flush`);
    ksft_test_result(flushed >= KILL_AFTER_FLUSHED && bad < 0, HOST_CHECKS[4]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IRQFD), 'kvm_has_cap(KVM_CAP_IRQFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT), 'kvm_has_cap(KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT)');
  ksft_set_plan(CHECKS.length + HOST_CHECKS.length);
  const seen = new Set<number>();
  await faults(seen);
  await killMidIo();
  guest_checks_missing(CHECKS, seen, 'not reported');
  ksft_finished();
}

if (require.main === module) void main();
