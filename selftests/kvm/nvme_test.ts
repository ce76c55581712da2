// nvme_test: the NVMe controller device task seen by guest code through BAR0 over ioregionfd: register
// contents and widths, the CC.EN / CSTS.RDY / CSTS.CFS handshakes, controller reset and shutdown, the
// Identify structures, Get / Set Features, the log pages, and the status of every admin error. The
// guest runs lib/nvme.ts (the driver) with one interrupt vector per CQ, and reports each check.

import { KVM_CAP_IOREGIONFD, KVM_CAP_IRQFD } from '../../proto/kvm-uapi';
import { ksft_finished, ksft_print_header, ksft_print_msg, ksft_set_plan, ksft_test_result } from '../kselftest';
import { GUEST_DONE, guest_ram, readl, readq, writel } from './lib/guest';
import { GUEST_CHECK, guest_checks_missing, guest_checks_run } from './lib/guest_checks';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { vm_create_irqchip } from './lib/irq';
import { kvm_has_cap, kvm_vm_free, vcpu_args_set, vm_alloc, vm_create, vm_vcpu_add } from './lib/kvm_util';
import {
  nvme_admin, nvme_cmd, nvme_rw, nvme_sc, NVME_CSTS_CFS, NVME_CSTS_RDY, NvmeController, NvmeDmaArena, NVME_REG_ACQ, NVME_REG_AQA,
  NVME_REG_ASQ, NVME_REG_CAP, NVME_REG_CC, NVME_REG_CSTS, NVME_REG_INTMC, NVME_REG_INTMS, NVME_REG_VS, NVME_SC_ASYNC_LIMIT,
  NVME_SC_CMD_SEQ_ERROR, NVME_SC_CQ_INVALID, NVME_SC_DELETE_INVALID, NVME_SC_FEATURE_NOT_SAVEABLE, NVME_SC_INVALID_FIELD,
  NVME_SC_INVALID_LOG_PAGE, NVME_SC_INVALID_NS, NVME_SC_INVALID_OPCODE, NVME_SC_INVALID_VECTOR, NVME_SC_PRP_INVALID_OFFSET,
  NVME_SC_QID_INVALID, NVME_SC_QUEUE_SIZE, NvmeCqe,
} from './lib/nvme';
import { nvme_vmm_start } from './lib/nvme_vmm';
import { UCALL_DONE } from './lib/ucall_common';
import { TEST_REQUIRE } from './lib/test_util';

const GSI_BASE = 8;
const VECTORS = 4;
const ARENA_SIZE = 1 << 20;
const SERIAL = 'NVME-TEST-0001';
const CONFIG = {
  serial: SERIAL, queues: 8, queue_entries: 256, vectors: VECTORS,
  namespaces: [{ ram_size: 1 << 20 }, { ram_size: 1 << 19, lba_size: 4096 }],
};

export const CHECKS = [
  'CSTS.RDY is clear before CC.EN',
  'CAP read as one 8-byte access equals its two 4-byte halves',
  'CAP: NVM command set, CQR, DSTRD 0, MQES 255, TO > 0, MPSMIN 0',
  'VS is 1.4.0',
  'AQA, ASQ and ACQ keep what was written; reserved bits read 0',
  'CC.EN with MPS above CAP.MPSMAX sets CSTS.CFS, not RDY',
  'CC.EN = 0 clears CSTS.CFS',
  'CC.EN with a one-entry admin SQ (AQA.ASQS 0) sets CSTS.CFS',
  'CC.EN with an admin CQ outside guest RAM sets CSTS.CFS',
  'CC written with EN = 0 (as Linux does first) starts nothing',
  'the driver\'s probe reaches CSTS.RDY within CAP.TO',
  'admin completions arrive by interrupt on vector 0',
  'INTMS sets and INTMC clears interrupt mask bits; both read the mask',
  'Identify Controller: serial, model, firmware revision',
  'Identify Controller: VER 1.4, MDTS 7, SQES 0x66, CQES 0x44, NN 2',
  'Identify Controller: OACS Doorbell Buffer Config, ONCS DSM + Write Zeroes, VWC present',
  'Identify Active Namespace list is 1, 2',
  'Identify Namespace 1: 2048 blocks of 512 bytes',
  'Identify Namespace 2: 128 blocks of 4096 bytes',
  'Identify Namespace with NSID 0, 3 or FFFFFFFFh is Invalid Namespace',
  'Identify NS descriptors hold the namespace\'s EUI-64',
  'Identify with an unsupported CNS is Invalid Field',
  'Number of Queues: granted as asked (4 of 8), read back by Get Features',
  'Number of Queues 0xFFFF is Invalid Field',
  'Get/Set Features: Arbitration, Interrupt Coalescing, Volatile Write Cache keep their values',
  'Get Features SEL 1 (default) and SEL 3 (capabilities)',
  'Set Features with SV is Feature Identifier Not Saveable',
  'Set Features Power Management to a state that does not exist is Invalid Field',
  'Interrupt Vector Configuration for a vector that does not exist is Invalid Field',
  'Get Features of an unknown feature is Invalid Field',
  'Create I/O CQ with QID 0 or past the granted count is Invalid Queue Identifier',
  'Create I/O CQ with 1 entry or more than MQES + 1 is Invalid Queue Size',
  'Create I/O CQ not physically contiguous is Invalid Field',
  'Create I/O CQ with a vector that does not exist is Invalid Interrupt Vector',
  'Create I/O CQ with a base not page aligned is Invalid PRP Offset',
  'Create I/O SQ on CQ 0 or a missing CQ is Completion Queue Invalid',
  'Create I/O SQ with an existing QID is Invalid Queue Identifier',
  'Create I/O SQ with 1 entry is Invalid Queue Size',
  'a valid CQ + SQ pair is created, and I/O on it completes',
  'Number of Queues after I/O queues exist is Command Sequence Error',
  'Delete I/O CQ with an SQ attached is Invalid Queue Deletion',
  'Delete I/O SQ/CQ of QID 0 or a missing queue is Invalid Queue Identifier',
  'Delete I/O SQ then CQ succeeds',
  'an unknown admin opcode is Invalid Opcode',
  'Doorbell Buffer Config with unaligned pages is Invalid Field',
  'Abort completes with "not aborted"',
  'Error Information log: the newest entry is the last failed command (SQID, CID, status)',
  'SMART / Health log counts the host\'s read and write commands',
  'Firmware Slot log: slot 1 active with the firmware revision',
  'Get Log Page of an unknown log is Invalid Log Page; past the log\'s end is Invalid Field',
  'AERs are held; AERL + 2 outstanding is AER Limit Exceeded',
  'a write to a missing queue\'s doorbell completes the oldest AER: Error, invalid doorbell, log 1',
  'controller reset (CC.EN = 0): RDY clears, AQA/ASQ/ACQ stay, the driver can probe again',
  'shutdown (CC.SHN normal) reports CSTS.SHST complete',
] as const;

const HOST_CHECKS = [
  'the guest ran to GUEST_DONE',
  'every BAR0 access went through ioregionfd: doorbells posted, no failures',
  'the device task exits 0 after the VM is destroyed',
] as const;

type Check = (typeof CHECKS)[number];

function check(name: Check, ok: boolean, detail = ''): void {
  GUEST_CHECK(CHECKS.indexOf(name), ok, detail);
}

const hex = (v: number | bigint) => `0x${v.toString(16)}`;

function eq(name: Check, got: number | bigint | string, want: number | bigint | string): void {
  check(name, got === want, `got ${typeof got === 'string' ? got : hex(got)}, want ${typeof want === 'string' ? want : hex(want)}`);
}

/** Every status in `got` equals the one expected (compared without DNR/More). */
function statuses(name: Check, got: number[], want: number[]): void {
  const g = got.map(nvme_sc);
  check(name, g.every((s, i) => s === want[i]), `got ${g.map(hex).join(', ')}, want ${want.map(hex).join(', ')}`);
}

export function nvme_test_guest(bar0: bigint, arenaBase: bigint, arenaSize: bigint, gsiBase: bigint): void {
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const r32 = (off: number) => Number(readl(bar0 + BigInt(off)));
  const w32 = (off: number, v: number) => writel(bar0 + BigInt(off), BigInt(v >>> 0));
  const CC_IO = (4 << 20) | (6 << 16);

  // ---- registers and handshakes, by hand ----
  check('CSTS.RDY is clear before CC.EN', (r32(NVME_REG_CSTS) & NVME_CSTS_RDY) === 0);
  const cap = readq(bar0 + BigInt(NVME_REG_CAP));
  eq('CAP read as one 8-byte access equals its two 4-byte halves', cap, BigInt(r32(0)) | (BigInt(r32(4)) << 32n));
  check('CAP: NVM command set, CQR, DSTRD 0, MQES 255, TO > 0, MPSMIN 0',
    ((cap >> 37n) & 1n) === 1n && ((cap >> 16n) & 1n) === 1n && ((cap >> 32n) & 0xfn) === 0n && (cap & 0xffffn) === 255n &&
    ((cap >> 24n) & 0xffn) > 0n && ((cap >> 48n) & 0xfn) === 0n, `CAP ${hex(cap)}`);
  eq('VS is 1.4.0', r32(NVME_REG_VS), 0x10400);
  const asq = arena.alloc(4096);
  const acq = arena.alloc(4096);
  w32(NVME_REG_AQA, 0xffff_ffff);
  const aqaAll = r32(NVME_REG_AQA);
  w32(NVME_REG_AQA, (15 << 16) | 15);
  w32(NVME_REG_ASQ, Number(asq) | 0xabc);
  w32(NVME_REG_ASQ + 4, 0);
  w32(NVME_REG_ACQ, Number(acq));
  w32(NVME_REG_ACQ + 4, 0);
  check('AQA, ASQ and ACQ keep what was written; reserved bits read 0',
    aqaAll === 0x0fff_0fff && r32(NVME_REG_AQA) === ((15 << 16) | 15) &&
      readq(bar0 + BigInt(NVME_REG_ASQ)) === asq && readq(bar0 + BigInt(NVME_REG_ACQ)) === acq,
    `AQA all ones read ${hex(aqaAll)}, ASQ ${hex(readq(bar0 + BigInt(NVME_REG_ASQ)))}`);
  const mpsmax = Number((cap >> 52n) & 0xfn);
  w32(NVME_REG_CC, CC_IO | ((mpsmax + 1) << 7) | 1);
  eq('CC.EN with MPS above CAP.MPSMAX sets CSTS.CFS, not RDY', r32(NVME_REG_CSTS), NVME_CSTS_CFS);
  w32(NVME_REG_CC, CC_IO);
  eq('CC.EN = 0 clears CSTS.CFS', r32(NVME_REG_CSTS), 0);
  w32(NVME_REG_AQA, 15 << 16);
  w32(NVME_REG_CC, CC_IO | 1);
  eq('CC.EN with a one-entry admin SQ (AQA.ASQS 0) sets CSTS.CFS', r32(NVME_REG_CSTS), NVME_CSTS_CFS);
  w32(NVME_REG_CC, CC_IO);
  w32(NVME_REG_AQA, (15 << 16) | 15);
  w32(NVME_REG_ACQ + 4, 0x10);
  w32(NVME_REG_CC, CC_IO | 1);
  eq('CC.EN with an admin CQ outside guest RAM sets CSTS.CFS', r32(NVME_REG_CSTS), NVME_CSTS_CFS);
  w32(NVME_REG_CC, 0);
  w32(NVME_REG_ACQ + 4, 0);
  w32(NVME_REG_CC, CC_IO);
  eq('CC written with EN = 0 (as Linux does first) starts nothing', r32(NVME_REG_CSTS), 0);

  // ---- the driver ----
  const gsi = Number(gsiBase);
  let ctrl = NvmeController.probe({ bar0, arena, interrupts: 'msix', gsiBase: gsi });
  check('the driver\'s probe reaches CSTS.RDY within CAP.TO', (r32(NVME_REG_CSTS) & NVME_CSTS_RDY) === 1);
  check('admin completions arrive by interrupt on vector 0', (ctrl.interrupts[0] ?? 0) > 0, `${ctrl.interrupts[0] ?? 0} interrupts`);
  w32(NVME_REG_INTMS, 0b1010);
  const masked = r32(NVME_REG_INTMC);
  w32(NVME_REG_INTMC, 0b0010);
  check('INTMS sets and INTMC clears interrupt mask bits; both read the mask', masked === 0b1010 && r32(NVME_REG_INTMS) === 0b1000,
    `after INTMS ${hex(masked)}, after INTMC ${hex(r32(NVME_REG_INTMS))}`);
  w32(NVME_REG_INTMC, 0xffff_ffff);

  const id = ctrl.id!;
  check('Identify Controller: serial, model, firmware revision', id.serial === SERIAL && id.model === 'ioregionfd-emu NVMe' && id.firmware === '0.1.0',
    `${JSON.stringify(id.serial)} ${JSON.stringify(id.model)} ${JSON.stringify(id.firmware)}`);
  check('Identify Controller: VER 1.4, MDTS 7, SQES 0x66, CQES 0x44, NN 2',
    id.version === 0x10400 && id.mdts === 7 && id.sqes === 0x66 && id.cqes === 0x44 && id.namespaces === 2, JSON.stringify(id));
  check('Identify Controller: OACS Doorbell Buffer Config, ONCS DSM + Write Zeroes, VWC present',
    (id.oacs & 0x100) !== 0 && (id.oncs & 0xc) === 0xc && (id.vwc & 1) === 1, JSON.stringify(id));
  eq('Identify Active Namespace list is 1, 2', ctrl.activeNamespaces().join(','), '1,2');
  const ns1 = ctrl.identifyNamespace(1);
  check('Identify Namespace 1: 2048 blocks of 512 bytes', typeof ns1 !== 'number' && ns1.blocks === 2048n && ns1.lbaShift === 9, JSON.stringify(ns1, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
  const ns2 = ctrl.identifyNamespace(2);
  check('Identify Namespace 2: 128 blocks of 4096 bytes', typeof ns2 !== 'number' && ns2.blocks === 128n && ns2.lbaShift === 12);
  statuses('Identify Namespace with NSID 0, 3 or FFFFFFFFh is Invalid Namespace',
    [0, 3, 0xffff_ffff].map((n) => ctrl.identify(0, n).status), [NVME_SC_INVALID_NS, NVME_SC_INVALID_NS, NVME_SC_INVALID_NS]);
  const desc = ctrl.identify(3, 1);
  const nsData = ctrl.identify(0, 1);
  check('Identify NS descriptors hold the namespace\'s EUI-64', desc.status === 0 && desc.data.getUint8(0) === 1 && desc.data.getUint8(1) === 8 &&
    desc.data.getBigUint64(4, true) === nsData.data.getBigUint64(0x78, true));
  statuses('Identify with an unsupported CNS is Invalid Field', [ctrl.identify(0x06).status, ctrl.identify(0x1f).status], [NVME_SC_INVALID_FIELD, NVME_SC_INVALID_FIELD]);

  // ---- features ----
  const setF = (fid: number, cdw11: number, save = false) => ctrl.adminCmd({ opcode: nvme_admin.set_features, cdw10: fid | (save ? 1 << 31 : 0), cdw11 });
  const getF = (fid: number, sel = 0, cdw11 = 0) => ctrl.adminCmd({ opcode: nvme_admin.get_features, cdw10: fid | (sel << 8), cdw11 });
  const granted = ctrl.setNumQueues(4);
  check('Number of Queues: granted as asked (4 of 8), read back by Get Features',
    typeof granted !== 'number' && granted.sqs === 4 && granted.cqs === 4 && getF(7).dw0 === (3 | (3 << 16)), JSON.stringify(granted));
  statuses('Number of Queues 0xFFFF is Invalid Field', [setF(7, 0xffff).status, setF(7, 0xffff_0000).status], [NVME_SC_INVALID_FIELD, NVME_SC_INVALID_FIELD]);
  setF(1, 0x0302_0101);
  setF(8, 0x0a03);
  setF(6, 0);
  check('Get/Set Features: Arbitration, Interrupt Coalescing, Volatile Write Cache keep their values',
    getF(1).dw0 === 0x0302_0101 && getF(8).dw0 === 0x0a03 && getF(6).dw0 === 0, `${hex(getF(1).dw0)} ${hex(getF(8).dw0)} ${hex(getF(6).dw0)}`);
  setF(1, 0);
  setF(8, 0);
  setF(6, 1);
  check('Get Features SEL 1 (default) and SEL 3 (capabilities)', getF(6, 1).dw0 === 1 && (getF(6, 3).dw0 & 4) === 4 && getF(7, 1).dw0 === (7 | (7 << 16)));
  statuses('Set Features with SV is Feature Identifier Not Saveable', [setF(1, 0, true).status], [NVME_SC_FEATURE_NOT_SAVEABLE]);
  statuses('Set Features Power Management to a state that does not exist is Invalid Field', [setF(2, 1).status], [NVME_SC_INVALID_FIELD]);
  statuses('Interrupt Vector Configuration for a vector that does not exist is Invalid Field', [setF(9, VECTORS).status, getF(9, 0, VECTORS).status], [NVME_SC_INVALID_FIELD, NVME_SC_INVALID_FIELD]);
  statuses('Get Features of an unknown feature is Invalid Field', [getF(0).status, getF(0x7e).status, getF(0xc0).status], [NVME_SC_INVALID_FIELD, NVME_SC_INVALID_FIELD, NVME_SC_INVALID_FIELD]);

  // ---- log pages ----
  const log = (lid: number, dwords: number, offset = 0): { status: number; data: DataView } => ctrl.withBuffer(4096, (b) => {
    const c = ctrl.adminCmd({ opcode: nvme_admin.get_log_page, nsid: 0xffff_ffff, prp1: b, cdw10: lid | ((dwords - 1) << 16), cdw12: offset });
    return { status: c.status, data: new DataView(guest_ram(b, dwords * 4).slice().buffer) };
  });
  // ---- queue creation and deletion errors ----
  const qmem = arena.alloc(256 * 64);
  const createCq = (qid: number, entries: number, cdw11: number, prp1 = qmem) =>
    ctrl.adminCmd({ opcode: nvme_admin.create_cq, prp1, cdw10: ((entries - 1) << 16) | qid, cdw11 }).status;
  const createSq = (qid: number, entries: number, cqid: number, prp1 = qmem) =>
    ctrl.adminCmd({ opcode: nvme_admin.create_sq, prp1, cdw10: ((entries - 1) << 16) | qid, cdw11: (cqid << 16) | 1 }).status;
  statuses('Create I/O CQ with QID 0 or past the granted count is Invalid Queue Identifier', [createCq(0, 16, 1), createCq(5, 16, 1)], [NVME_SC_QID_INVALID, NVME_SC_QID_INVALID]);
  statuses('Create I/O CQ with 1 entry or more than MQES + 1 is Invalid Queue Size', [createCq(1, 1, 1), createCq(1, 257, 1)], [NVME_SC_QUEUE_SIZE, NVME_SC_QUEUE_SIZE]);
  statuses('Create I/O CQ not physically contiguous is Invalid Field', [createCq(1, 16, 0)], [NVME_SC_INVALID_FIELD]);
  statuses('Create I/O CQ with a vector that does not exist is Invalid Interrupt Vector', [createCq(1, 16, (VECTORS << 16) | 3)], [NVME_SC_INVALID_VECTOR]);
  statuses('Create I/O CQ with a base not page aligned is Invalid PRP Offset', [createCq(1, 16, 1, qmem + 0x100n)], [NVME_SC_PRP_INVALID_OFFSET]);
  statuses('Create I/O SQ on CQ 0 or a missing CQ is Completion Queue Invalid', [createSq(1, 16, 0), createSq(1, 16, 2)], [NVME_SC_CQ_INVALID, NVME_SC_CQ_INVALID]);
  const sq = ctrl.createPair(1, 16, { vector: 1 });
  statuses('Create I/O SQ with an existing QID is Invalid Queue Identifier', [createSq(1, 16, 1)], [NVME_SC_QID_INVALID]);
  statuses('Create I/O SQ with 1 entry is Invalid Queue Size', [createSq(2, 1, 1)], [NVME_SC_QUEUE_SIZE]);
  const buf = arena.alloc(4096);
  const w = ctrl.exec(sq, nvme_rw(nvme_cmd.write, 1, 16n, 8, { prp1: buf, prp2: 0n }));
  const r = ctrl.exec(sq, nvme_rw(nvme_cmd.read, 1, 16n, 8, { prp1: buf, prp2: 0n }));
  check('a valid CQ + SQ pair is created, and I/O on it completes', w.status === 0 && r.status === 0 && (ctrl.interrupts[1] ?? 0) > 0,
    `write ${hex(w.status)}, read ${hex(r.status)}, ${ctrl.interrupts[1] ?? 0} interrupts on vector 1`);
  statuses('Number of Queues after I/O queues exist is Command Sequence Error', [setF(7, 1 | (1 << 16)).status], [NVME_SC_CMD_SEQ_ERROR]);
  const del = (opcode: number, qid: number) => ctrl.adminCmd({ opcode, cdw10: qid }).status;
  statuses('Delete I/O CQ with an SQ attached is Invalid Queue Deletion', [del(nvme_admin.delete_cq, 1)], [NVME_SC_DELETE_INVALID]);
  statuses('Delete I/O SQ/CQ of QID 0 or a missing queue is Invalid Queue Identifier',
    [del(nvme_admin.delete_sq, 0), del(nvme_admin.delete_cq, 0), del(nvme_admin.delete_sq, 3), del(nvme_admin.delete_cq, 3)],
    [NVME_SC_QID_INVALID, NVME_SC_QID_INVALID, NVME_SC_QID_INVALID, NVME_SC_QID_INVALID]);
  eq('Delete I/O SQ then CQ succeeds', ctrl.deletePair(sq), 0);
  const bad = ctrl.adminCmd({ opcode: 0x7f });
  statuses('an unknown admin opcode is Invalid Opcode', [bad.status], [NVME_SC_INVALID_OPCODE]);
  const errs = log(1, 16);
  check('Error Information log: the newest entry is the last failed command (SQID, CID, status)',
    errs.status === 0 && errs.data.getUint16(8, true) === 0 && errs.data.getUint16(10, true) === bad.cid &&
      nvme_sc(errs.data.getUint16(12, true) >> 1) === NVME_SC_INVALID_OPCODE,
    `SQID ${errs.data.getUint16(8, true)} CID ${errs.data.getUint16(10, true)} (want ${bad.cid}) status ${hex(errs.data.getUint16(12, true) >> 1)}`);
  statuses('Doorbell Buffer Config with unaligned pages is Invalid Field', [ctrl.adminCmd({ opcode: nvme_admin.dbbuf, prp1: buf + 8n, prp2: buf }).status], [NVME_SC_INVALID_FIELD]);
  const abort = ctrl.adminCmd({ opcode: nvme_admin.abort, cdw10: (0x1234 << 16) | 0 });
  check('Abort completes with "not aborted"', abort.status === 0 && (abort.dw0 & 1) === 1);

  const smart = log(2, 128);
  check('SMART / Health log counts the host\'s read and write commands', smart.status === 0 && smart.data.getBigUint64(64, true) === 1n && smart.data.getBigUint64(80, true) === 1n && smart.data.getUint8(3) === 100,
    `reads ${smart.data.getBigUint64(64, true)} writes ${smart.data.getBigUint64(80, true)}`);
  const fw = log(3, 128);
  check('Firmware Slot log: slot 1 active with the firmware revision', fw.status === 0 && fw.data.getUint8(0) === 1 &&
    String.fromCharCode(...new Uint8Array(fw.data.buffer, 8, 5)) === '0.1.0');
  statuses('Get Log Page of an unknown log is Invalid Log Page; past the log\'s end is Invalid Field', [log(0x42, 4).status, log(3, 4, 1024).status],
    [NVME_SC_INVALID_LOG_PAGE, NVME_SC_INVALID_FIELD]);

  // ---- asynchronous events ----
  const aers = [0, 1, 2, 3].map(() => ctrl.admin.submit({ opcode: nvme_admin.async_event }));
  const over = ctrl.adminCmd({ opcode: nvme_admin.async_event });
  statuses('AERs are held; AERL + 2 outstanding is AER Limit Exceeded', [over.status], [NVME_SC_ASYNC_LIMIT]);
  writel(ctrl.doorbell(7, false), 1n);
  const ev: NvmeCqe = ctrl.waitFor(ctrl.admin, aers[0]);
  check('a write to a missing queue\'s doorbell completes the oldest AER: Error, invalid doorbell, log 1', ev.status === 0 && ev.dw0 === (0 | (0 << 8) | (1 << 16)),
    `status ${hex(ev.status)} DW0 ${hex(ev.dw0)}`);

  // ---- reset and shutdown ----
  w32(NVME_REG_CC, r32(NVME_REG_CC) & ~1);
  const cleared = ctrl.waitCsts((s) => (s & NVME_CSTS_RDY) === 0);
  const aqaKept = r32(NVME_REG_AQA) === ((31 << 16) | 31) && readq(bar0 + BigInt(NVME_REG_ASQ)) === ctrl.admin.gpa;
  ctrl = NvmeController.probe({ bar0, arena, interrupts: 'msix', gsiBase: gsi });
  check('controller reset (CC.EN = 0): RDY clears, AQA/ASQ/ACQ stay, the driver can probe again', cleared === 0 && aqaKept && ctrl.id?.serial === SERIAL,
    `CSTS after EN = 0: ${cleared}, AQA/ASQ kept: ${aqaKept}`);
  const shst = ctrl.shutdown();
  check('shutdown (CC.SHN normal) reports CSTS.SHST complete', shst !== undefined && (shst & 0xc) === 0x8, `CSTS ${shst}`);
  w32(NVME_REG_CC, 0);
  GUEST_DONE();
}

async function main(): Promise<void> {
  ksft_print_header();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IRQFD), 'kvm_has_cap(KVM_CAP_IRQFD)');
  ksft_set_plan(CHECKS.length + HOST_CHECKS.length);
  const vm = vm_create();
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, nvme_test_guest);
  const arena = vm_alloc(vm, ARENA_SIZE, 4096);
  const vmm = nvme_vmm_start({ vm, path: 'ioregionfd', config: CONFIG, vectors: VECTORS, gsiBase: GSI_BASE });
  vcpu_args_set(vcpu, vmm.bar0, arena, ARENA_SIZE, GSI_BASE);
  const seen = new Set<number>();
  const uc = guest_checks_run(vcpu, CHECKS, seen);
  ksft_test_result(uc.cmd === UCALL_DONE, HOST_CHECKS[0]);
  const stats = vm_ioregion_stats(vm);
  const posted = stats.reduce((n, s) => n + s.postedWrites, 0n);
  const failures = stats.reduce((n, s) => n + s.failures, 0n);
  ksft_print_msg(`ioregions: ${stats.map((s) => `0x${s.guestPaddr.toString(16)} reads ${s.reads} writes ${s.writes} posted ${s.postedWrites}`).join('; ')}`);
  ksft_test_result(posted > 0n && failures === 0n, HOST_CHECKS[1]);
  kvm_vm_free(vm);
  const st = await vmm.stop();
  ksft_test_result(st.code === 0, HOST_CHECKS[2]);
  guest_checks_missing(CHECKS, seen, 'not reported');
  ksft_finished();
}

if (require.main === module) void main();
