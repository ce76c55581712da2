// nvme_qemu_diff_test: our NVMe controller (the nvme device task) against QEMU's (hw/nvme in a
// multi-process QEMU behind the qemu-remote bridge), driven by the same guest NVMe driver
// (lib/nvme.ts) with the same command sequences, on copies of the same image, with the same sizes
// where both can be set: a 1 MiB namespace of 512-byte blocks, MDTS 5 (128 KiB), 8 I/O queue pairs,
// 2048 entries per queue, one interrupt vector, no weighted round robin.
//
// The guest records what the specification defines for each step — every completion's status (SCT,
// SC, CRD, More, DNR), CID, SQ head, SQ id and DW0, register fields, the Identify and log fields a
// given configuration fixes, and a hash of every byte read — and the host compares the two
// transcripts key by key. A key that differs fails the test unless it is in QEMU_DEVIATIONS (QEMU
// departs from the NVMe 1.4 specification there, and QEMU still answers what the table says).
// EXCLUDED lists what is not recorded, and why. Whatever the test found wrong in our model was fixed
// there (see the README, "NVMe: ours against QEMU's").
//
// Interrupts: QEMU's remote has INTx only, so the driver polls every CQ (mode 'none', I/O CQs with
// IEN 0) on both controllers; completion delivery by interrupt is nvme_test's and nvme_io_test's job.
// Skips (exit 4) without qemu-system-x86_64 with the x-remote machine.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { ExitStatus } from './lib/device_task';
import { EXPECT, EXPECT_EQ, TEST, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_DONE, guest_ram, readl, readq, writel } from './lib/guest';
import { addr_gpa2hva, kvm_has_cap, kvm_vm_free, KvmVm, vcpu_args_set, vcpu_run, vm_alloc, vm_create, vm_vcpu_add } from './lib/kvm_util';
import {
  nvme_admin, nvme_build_prps, nvme_cmd, nvme_rw, NVME_CSTS_RDY, NVME_REG_ACQ, NVME_REG_AQA, NVME_REG_ASQ, NVME_REG_CAP, NVME_REG_CC,
  NVME_REG_CSTS, NVME_REG_INTMC, NVME_REG_INTMS, NVME_REG_VS, NVME_SC_DRIVER_TIMEOUT, NvmeCommand, NvmeController, NvmeCqe, NvmeDmaArena,
  NvmeSq,
} from './lib/nvme';
import { NVME_BAR0, NVME_BAR0_SIZE, nvme_vmm_start } from './lib/nvme_vmm';
import { spawn_qemu_device, TEST_REQUIRE_QEMU } from './lib/qemu_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

/** The namespace: 2048 blocks of 512 bytes. */
const IMAGE_BYTES = 1 << 20;
const MDTS = 5;
const IO_QUEUES = 8;
const SERIAL = 'NVME-DIFF-0001';
/** Our device task and QEMU's device with the same sizes (QEMU fixes MQES at 2047, AERL at 3). */
const OURS_CONFIG = { queues: IO_QUEUES, queue_entries: 2048, mdts: MDTS, vectors: 1, weighted_round_robin: false, serial: SERIAL };
const QEMU_PROPS = { serial: SERIAL, max_ioqpairs: IO_QUEUES, mdts: MDTS };
const ARENA_SIZE = 2 << 20;
const OUT_SIZE = 256 << 10;
/** Not guest RAM, not a BAR: DMA there must fail. */
const NOWHERE = 0x4000_0000n;

/**
 * What the transcripts leave out, and why: values the specification leaves to the implementation,
 * identifiers and strings that name a product, and what depends on time.
 */
export const EXCLUDED: readonly { what: string; why: string }[] = [
  { what: 'CAP.TO, CAP.CSS bits other than NVM, CAP.NSSRS/BPS/CMBS/PMRS', why: 'capabilities each controller chooses (timeouts, optional features)' },
  { what: 'Identify Controller: VID, SSVID, SN, MN, FR, IEEE OUI, SUBNQN, CNTLID, power state descriptors', why: 'identify strings and vendor fields' },
  { what: 'Identify Controller: OACS, ONCS, FUSES, FNA, SGLS, LPA, ELPE, ACL, FRMW, NN, OAES, CTRATT, MAXCMD, WCTEMP/CCTEMP, VWC bits 2:1, MNAN', why: 'optional features and limits the implementation chooses' },
  { what: 'Identify Namespace: NSFEAT, NLBAF and the unused LBA formats, MC, DPC, NGUID, EUI64, NPWG/NOWS/... (I/O hints), NUSE', why: 'identifiers, capabilities (metadata, protection) and formats offered beyond the one in use, and allocation the implementation tracks or not' },
  { what: 'Namespace Identification Descriptor contents', why: 'which identifiers a namespace has is up to the implementation; the status is compared' },
  { what: 'Number of Queues granted when fewer than the maximum are asked for', why: 'the controller may grant any count; the sequences ask for the maximum, which both must grant' },
  { what: 'Error Information log entries', why: 'the specification requires an entry only for a completion with More (M) set, and neither controller sets M (that bit is compared); ours logs every error anyway' },
  { what: 'SMART log: temperature, spare, percentage used, power-on hours, power cycles, unsafe shutdowns, busy time', why: 'sensor-like and time-dependent values' },
  { what: 'Firmware Slot log: FRS1 and AFI', why: 'firmware revision strings and slot layout' },
  { what: 'Get Features of Interrupt Vector Configuration, Power Management, Temperature, Async Event Configuration', why: 'vector counts and power/temperature capabilities differ by design (QEMU has MSI-X vectors it cannot use here)' },
  { what: 'Arbitration and Interrupt Coalescing: whether Set may change them, their defaults, SEL 3 capability bits', why: 'the controller\'s choice; compared instead: each Set answers what that controller\'s SEL 3 says (success, or Feature Not Changeable)' },
  { what: 'data read from deallocated blocks', why: 'defined only by DLFEAT, which each controller reports as it likes' },
  { what: 'timing, interrupts', why: 'QEMU\'s remote has INTx only; the driver polls both controllers' },
];

/**
 * Where QEMU 7.2's hw/nvme departs from NVMe 1.4 and ours follows the specification: the key, the
 * section, and what QEMU answers (its value in the transcript). The test passes while QEMU answers
 * exactly this; a row QEMU no longer matches is reported.
 */
export const QEMU_DEVIATIONS: readonly { test: string; key: string; spec: string; qemu: string; what: string }[] = [
  {
    test: 'Get and Set Features: Number of Queues, Interrupt Coalescing, Volatile Write Cache, Arbitration',
    key: 'Get Features Volatile Write Cache SEL 1', spec: '1.4 §5.13 Get Features, SEL 001b (default)',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 12 SQID 0 SQHD 12 DW0 0x0 DW1 0x0',
    what: 'reports the default of Volatile Write Cache as 0 (disabled) while the cache is enabled after every reset, with nothing saved',
  },
  {
    test: 'Get and Set Features: Number of Queues, Interrupt Coalescing, Volatile Write Cache, Arbitration',
    key: 'Get Features Arbitration SEL 4', spec: '1.4 §5.13 Get Features, SEL 100b-111b reserved',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 29 SQID 0 SQHD 29 DW0 0x7 DW1 0x0',
    what: 'takes a reserved SEL value as "current" and succeeds (ours: Invalid Field in Command)',
  },
  {
    test: 'Get Log Page: Error Information, SMART / Health, Firmware Slot',
    key: 'Get Log Page SMART / Health, NSID 0', spec: '1.4 §5.14 Get Log Page, NSID of a controller-wide log',
    qemu: 'SCT 0 SC 0xb CRD 0 M 0 DNR 1 CID 6 SQID 0 SQHD 6 DW0 0x0 DW1 0x0',
    what: 'answers Invalid Namespace or Format for NSID 0 of the controller-wide SMART log (ours: the log, as for FFFFFFFFh)',
  },
  {
    test: 'Get Log Page: Error Information, SMART / Health, Firmware Slot',
    key: 'Get Log Page unknown log 0x42', spec: '1.4 §5.14 Get Log Page, command completion: Invalid Log Page',
    qemu: 'SCT 0 SC 0x2 CRD 0 M 0 DNR 1 CID 9 SQID 0 SQHD 9 DW0 0x0 DW1 0x0',
    what: 'answers Invalid Field in Command for a reserved log identifier instead of Invalid Log Page',
  },
  {
    test: 'Get Log Page: Error Information, SMART / Health, Firmware Slot',
    key: 'Get Log Page unknown log 0xc0 (vendor)', spec: '1.4 §5.14 Get Log Page, command completion: Invalid Log Page',
    qemu: 'SCT 0 SC 0x2 CRD 0 M 0 DNR 1 CID 10 SQID 0 SQHD 10 DW0 0x0 DW1 0x0',
    what: 'the same for an unsupported vendor-specific log identifier',
  },
  {
    test: 'Create and Delete I/O SQ and CQ, with every invalid case',
    key: 'Delete I/O CQ 0', spec: '1.4 §5.5 Delete I/O Completion Queue status values',
    qemu: 'SCT 1 SC 0x0 CRD 0 M 0 DNR 1 CID 25 SQID 0 SQHD 25 DW0 0x0 DW1 0x0',
    what: 'answers Completion Queue Invalid (a Create I/O SQ status) for QID 0 instead of Invalid Queue Identifier',
  },
  {
    test: 'Create and Delete I/O SQ and CQ, with every invalid case',
    key: 'Delete I/O CQ 3 (does not exist)', spec: '1.4 §5.5 Delete I/O Completion Queue status values',
    qemu: 'SCT 1 SC 0x0 CRD 0 M 0 DNR 1 CID 27 SQID 0 SQHD 27 DW0 0x0 DW1 0x0',
    what: 'the same for a CQ that does not exist',
  },
  {
    test: 'PRP and transfer errors: MDTS exceeded, bad offsets, DMA outside guest RAM',
    key: 'Read of 12 KiB with a PRP list pointer not qword aligned', spec: '1.4 §4.3 Physical Region Page entry and list (a PRP list pointer is qword aligned)',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 5 SQID 1 SQHD 5 DW0 0x0 DW1 0x0',
    what: 'reads the list from the misaligned address and transfers (ours: PRP Offset Invalid)',
  },
  {
    test: 'PRP and transfer errors: MDTS exceeded, bad offsets, DMA outside guest RAM',
    key: 'Read of 4 KiB into memory outside guest RAM', spec: '1.4 §4.6.1.2.1 generic command status: Data Transfer Error',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 7 SQID 1 SQHD 7 DW0 0x0 DW1 0x0',
    what: 'completes with success; in its x-remote process a DMA to an address no memory backs is dropped without an error',
  },
  {
    test: 'PRP and transfer errors: MDTS exceeded, bad offsets, DMA outside guest RAM',
    key: 'Write of 4 KiB from memory outside guest RAM', spec: '1.4 §4.6.1.2.1 generic command status: Data Transfer Error',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 8 SQID 1 SQHD 8 DW0 0x0 DW1 0x0',
    what: 'completes with success and writes whatever the failed DMA left (the test writes those blocks again)',
  },
  {
    test: 'PRP and transfer errors: MDTS exceeded, bad offsets, DMA outside guest RAM',
    key: 'Read of 8 KiB with PRP2 outside guest RAM', spec: '1.4 §4.6.1.2.1 generic command status: Data Transfer Error',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 9 SQID 1 SQHD 9 DW0 0x0 DW1 0x0',
    what: 'completes with success',
  },
  {
    test: 'Flush, Write Zeroes, Dataset Management, LBA range and namespace errors',
    key: 'Read with NSID FFFFFFFFh', spec: '1.4 §6.1 namespace IDs: the broadcast value on a command that does not take it',
    qemu: 'SCT 0 SC 0x2 CRD 0 M 0 DNR 1 CID 17 SQID 1 SQHD 17 DW0 0x0 DW1 0x0',
    what: 'answers Invalid Field in Command (ours: Invalid Namespace or Format); 1.4 names no status for this case, so neither is wrong',
  },
  {
    test: 'Flush, Write Zeroes, Dataset Management, LBA range and namespace errors',
    key: 'DSM deallocate, a range past the end', spec: '1.4 Dataset Management command and the generic LBA Out of Range status',
    qemu: 'SCT 0 SC 0x0 CRD 0 M 0 DNR 0 CID 20 SQID 1 SQHD 20 DW0 0x0 DW1 0x0',
    what: 'skips the range past the end and succeeds (ours: LBA Out of Range, nothing deallocated)',
  },
];

// ---- the guest --------------------------------------------------------------------------------

type Rec = (key: string, value: string | number | bigint | boolean) => void;

interface Ctx {
  bar0: bigint;
  arena: NvmeDmaArena;
  rec: Rec;
  /** Record a completion under `key` (status fields, CID, SQ id, SQ head, DW0 unless excluded). */
  cqe: (key: string, c: NvmeCqe, dw0?: boolean) => void;
  probe: () => NvmeController;
}

const hex = (v: number | bigint) => `0x${v.toString(16)}`;

/** The status field: SCT, SC, CRD, More, DNR. */
function fmtStatus(s: number): string {
  return `SCT ${(s >> 8) & 7} SC ${hex(s & 0xff)} CRD ${(s >> 11) & 3} M ${(s >> 13) & 1} DNR ${(s >> 14) & 1}`;
}

function fmtCqe(c: NvmeCqe, dw0: boolean): string {
  if (c.status === NVME_SC_DRIVER_TIMEOUT) return 'no completion';
  return `${fmtStatus(c.status)} CID ${c.cid} SQID ${c.sqid} SQHD ${c.sqhd}${dw0 ? ` DW0 ${hex(c.dw0)} DW1 ${hex(c.dw1)}` : ''}`;
}

/** FNV-1a over bytes: equal hashes of equal-length transfers stand for equal bytes. */
function fnv(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return `${bytes.length} bytes fnv ${hex(h)}`;
}

function fill(bytes: Uint8Array, seed: number): void {
  for (let i = 0; i < bytes.length; i++) bytes[i] = (seed * 31 + i * 7 + (i >> 9) * 13) & 0xff;
}

function cqCursor(sq: NvmeSq): string {
  return `SQ tail ${sq.tail} head ${sq.head}, CQ head ${sq.cq.head} phase ${sq.cq.phase}`;
}

const SEQUENCES: { name: string; run: (g: Ctx) => void }[] = [
  {
    name: 'controller enable, disable, reset and shutdown',
    run(g) {
      const r32 = (off: number) => Number(readl(g.bar0 + BigInt(off)));
      const w32 = (off: number, v: number) => writel(g.bar0 + BigInt(off), BigInt(v >>> 0));
      const cap = readq(g.bar0 + BigInt(NVME_REG_CAP));
      const f = (shift: bigint, mask: bigint) => Number((cap >> shift) & mask);
      g.rec('CSTS before CC.EN', hex(r32(NVME_REG_CSTS)));
      g.rec('CAP as two dwords equals CAP as a qword', (BigInt(r32(0)) | (BigInt(r32(4)) << 32n)) === cap);
      g.rec('CAP.MQES', f(0n, 0xffffn));
      g.rec('CAP.CQR', f(16n, 1n));
      g.rec('CAP.AMS', f(17n, 3n));
      g.rec('CAP.DSTRD', f(32n, 0xfn));
      g.rec('CAP.CSS NVM', f(37n, 1n));
      g.rec('CAP.MPSMIN', f(48n, 0xfn));
      g.rec('CAP.MPSMAX', f(52n, 0xfn));
      g.rec('VS', hex(r32(NVME_REG_VS)));
      g.rec('CC at reset', hex(r32(NVME_REG_CC)));
      const asq = g.arena.alloc(4096);
      const acq = g.arena.alloc(4096);
      w32(NVME_REG_AQA, (15 << 16) | 15);
      w32(NVME_REG_ASQ, Number(asq));
      w32(NVME_REG_ASQ + 4, 0);
      w32(NVME_REG_ACQ, Number(acq));
      w32(NVME_REG_ACQ + 4, 0);
      g.rec('AQA, ASQ, ACQ read back', `${hex(r32(NVME_REG_AQA))} ${hex(readq(g.bar0 + BigInt(NVME_REG_ASQ)))} ${hex(readq(g.bar0 + BigInt(NVME_REG_ACQ)))}`);
      const ccIo = (4 << 20) | (6 << 16);
      w32(NVME_REG_CC, ccIo);
      g.rec('CSTS after CC written with EN 0', hex(r32(NVME_REG_CSTS)));
      const waitCsts = (done: (s: number) => boolean) => {
        const deadline = Date.now() + 5000;
        let s = r32(NVME_REG_CSTS);
        while (!done(s) && Date.now() < deadline) s = r32(NVME_REG_CSTS);
        return s;
      };
      w32(NVME_REG_CC, ccIo | 1);
      g.rec('CSTS after CC.EN', hex(waitCsts((s) => (s & 3) !== 0)));
      g.rec('CC after CC.EN', hex(r32(NVME_REG_CC)));
      w32(NVME_REG_INTMS, 1);
      g.rec('INTMS after setting bit 0', hex(r32(NVME_REG_INTMS)));
      w32(NVME_REG_INTMC, 1);
      g.rec('INTMC after clearing bit 0', hex(r32(NVME_REG_INTMC)));
      w32(NVME_REG_CC, ccIo);
      g.rec('CSTS after CC.EN = 0', hex(waitCsts((s) => (s & NVME_CSTS_RDY) === 0)));
      g.rec('AQA, ASQ, ACQ after controller reset', `${hex(r32(NVME_REG_AQA))} ${hex(readq(g.bar0 + BigInt(NVME_REG_ASQ)))} ${hex(readq(g.bar0 + BigInt(NVME_REG_ACQ)))}`);
      // The driver's probe, a command, and a normal shutdown.
      const ctrl = g.probe();
      g.rec('CSTS after the driver\'s probe', hex(r32(NVME_REG_CSTS)));
      g.cqe('Get Features Number of Queues after probe', ctrl.adminCmd({ opcode: nvme_admin.get_features, cdw10: 7 }));
      w32(NVME_REG_CC, (r32(NVME_REG_CC) & ~(3 << 14)) | (1 << 14));
      g.rec('CSTS.SHST after CC.SHN normal', hex(waitCsts((s) => (s & 0xc) === 0x8) & 0xc));
      w32(NVME_REG_CC, 0);
      g.rec('CSTS after CC = 0 following shutdown', hex(waitCsts((s) => (s & 0xd) === 0)));
      const again = g.probe();
      g.rec('the driver probes again after shutdown and reset', again.id?.version !== undefined);
    },
  },
  {
    name: 'Identify CNS 00h, 01h, 02h, 03h',
    run(g) {
      const ctrl = g.probe();
      const id = (cns: number, nsid = 0, label = `CNS ${hex(cns)} NSID ${hex(nsid)}`) => {
        return ctrl.withBuffer(4096, (buf) => {
          const c = ctrl.adminCmd({ opcode: nvme_admin.identify, nsid, prp1: buf, cdw10: cns });
          g.cqe(`Identify ${label}`, c);
          return new DataView(guest_ram(buf, 4096).slice().buffer);
        });
      };
      const c = id(1);
      g.rec('Identify Controller MDTS', c.getUint8(0x4d));
      g.rec('Identify Controller VER', hex(c.getUint32(0x50, true)));
      g.rec('Identify Controller CNTRLTYPE', c.getUint8(0x6f));
      g.rec('Identify Controller AERL', c.getUint8(0x103));
      g.rec('Identify Controller SQES', hex(c.getUint8(0x200)));
      g.rec('Identify Controller CQES', hex(c.getUint8(0x201)));
      g.rec('Identify Controller VWC present', c.getUint8(0x20d) & 1);
      const ns = id(0, 1);
      const flbas = ns.getUint8(0x1a);
      const lbaf = ns.getUint32(0x80 + 4 * (flbas & 0xf), true);
      g.rec('Identify Namespace NSZE', ns.getBigUint64(0, true));
      g.rec('Identify Namespace NCAP', ns.getBigUint64(8, true));
      g.rec('Identify Namespace FLBAS metadata bit', (flbas >> 4) & 1);
      g.rec('Identify Namespace in-use format LBADS, MS', `${(lbaf >> 16) & 0xff} ${lbaf & 0xffff}`);
      g.rec('Identify Namespace DPS, NMIC', `${ns.getUint8(0x1d)} ${ns.getUint8(0x1e)}`);
      for (const nsid of [0, 0x1000, 0xffff_fffe]) id(0, nsid);
      const list = id(2, 0);
      g.rec('Active Namespace list after NSID 0', [0, 1, 2].map((i) => list.getUint32(4 * i, true)).join(','));
      const after1 = id(2, 1);
      g.rec('Active Namespace list after NSID 1', after1.getUint32(0, true));
      id(2, 0xffff_fffe);
      id(2, 0xffff_ffff);
      const desc = id(3, 1);
      g.rec('NS descriptor list: first descriptor has a known type and its length', [1, 2, 3, 4].includes(desc.getUint8(0)) && desc.getUint8(1) === [0, 8, 16, 16, 1][desc.getUint8(0)]);
      id(3, 0x1000);
      id(0x1f, 0);
      // CNS 01h ignores the NSID.
      id(1, 0x1000, 'CNS 0x1 with NSID 0x1000');
    },
  },
  {
    name: 'Get and Set Features: Number of Queues, Interrupt Coalescing, Volatile Write Cache, Arbitration',
    run(g) {
      const ctrl = g.probe();
      const setF = (label: string, fid: number, cdw11: number, cdw10hi = 0) =>
        g.cqe(`Set Features ${label}`, ctrl.adminCmd({ opcode: nvme_admin.set_features, cdw10: fid | cdw10hi, cdw11 }));
      const getF = (label: string, fid: number, sel = 0) =>
        g.cqe(`Get Features ${label}${sel ? ` SEL ${sel}` : ''}`, ctrl.adminCmd({ opcode: nvme_admin.get_features, cdw10: fid | (sel << 8) }));
      getF('Number of Queues before any Set', 7);
      setF('Number of Queues 0xFFFF SQs', 7, 0xffff);
      setF('Number of Queues 0xFFFF CQs', 7, 0xffff_0000);
      setF('Number of Queues, the maximum', 7, ((IO_QUEUES - 1) << 16) | (IO_QUEUES - 1));
      getF('Number of Queues', 7);
      getF('Volatile Write Cache', 6);
      setF('Volatile Write Cache off', 6, 0);
      getF('Volatile Write Cache', 6);
      setF('Volatile Write Cache on', 6, 1);
      getF('Volatile Write Cache', 6);
      getF('Volatile Write Cache', 6, 1);
      // Whether a feature can be changed, and its default, are the controller's choice: compare that
      // each controller's Set agrees with what its SEL 3 (supported capabilities) says.
      for (const [label, fid, value] of [['Interrupt Coalescing', 8, 0x0a03], ['Arbitration', 1, 0x0302_0103], ['Volatile Write Cache', 6, 0]] as const) {
        const caps = ctrl.adminCmd({ opcode: nvme_admin.get_features, cdw10: fid | (3 << 8) });
        g.rec(`Get Features ${label} SEL 3: status`, fmtStatus(caps.status));
        const before = ctrl.adminCmd({ opcode: nvme_admin.get_features, cdw10: fid }).dw0;
        const set = ctrl.adminCmd({ opcode: nvme_admin.set_features, cdw10: fid, cdw11: value });
        const after = ctrl.adminCmd({ opcode: nvme_admin.get_features, cdw10: fid }).dw0;
        const changeable = (caps.dw0 & 4) !== 0;
        g.rec(`Set Features ${label}: the status SEL 3 implies (success if changeable, else Feature Not Changeable)`,
          changeable ? set.status === 0 : (set.status & 0x7ff) === 0x10e);
        g.rec(`Get Features ${label} after Set: the value set if changeable, else the value before`, after === (changeable ? value : before));
        g.rec(`Set Features ${label}: CID, SQ head`, `${set.cid} ${set.sqhd}`);
      }
      setF('Arbitration with SV (save)', 1, 0, 1 << 31);
      getF('unknown feature 0x00', 0);
      getF('unknown feature 0x7e', 0x7e);
      setF('unknown feature 0x7e', 0x7e, 0);
      getF('Arbitration', 1, 4);
      const sq = ctrl.createPair(1, 16);
      setF('Number of Queues after an I/O queue exists', 7, 0);
      ctrl.deletePair(sq);
    },
  },
  {
    name: 'Get Log Page: Error Information, SMART / Health, Firmware Slot',
    run(g) {
      const ctrl = g.probe();
      const sq = ctrl.createPair(1, 16);
      const buf = g.arena.alloc(8192);
      fill(guest_ram(buf, 8192), 5);
      for (let i = 0; i < 3; i++) g.cqe(`write ${i}`, ctrl.exec(sq, nvme_rw(nvme_cmd.write, 1, BigInt(64 * i), 16, { prp1: buf, prp2: buf + 4096n })));
      for (let i = 0; i < 2; i++) g.cqe(`read ${i}`, ctrl.exec(sq, nvme_rw(nvme_cmd.read, 1, BigInt(64 * i), 1, { prp1: buf, prp2: 0n })));
      const log = (label: string, lid: number, dwords: number, nsid = 0xffff_ffff, offset = 0, cdw10hi = 0) => ctrl.withBuffer(4096, (b) => {
        const c = ctrl.adminCmd({ opcode: nvme_admin.get_log_page, nsid, prp1: b, cdw10: lid | ((dwords - 1) << 16) | cdw10hi, cdw12: offset });
        g.cqe(`Get Log Page ${label}`, c);
        return new DataView(guest_ram(b, dwords * 4).slice().buffer);
      });
      log('Error Information, 1 entry', 1, 16);
      const smart = log('SMART / Health', 2, 128);
      const u128 = (off: number) => smart.getBigUint64(off, true) + (smart.getBigUint64(off + 8, true) << 64n);
      g.rec('SMART critical warning', smart.getUint8(0));
      g.rec('SMART data units read', u128(32));
      g.rec('SMART data units written', u128(48));
      g.rec('SMART host read commands', u128(64));
      g.rec('SMART host write commands', u128(80));
      g.rec('SMART media errors', u128(160));
      log('SMART / Health, NSID 0', 2, 128, 0);
      log('SMART / Health, first 64 bytes', 2, 16);
      log('Firmware Slot', 3, 128);
      log('unknown log 0x42', 0x42, 4);
      log('unknown log 0xc0 (vendor)', 0xc0, 4);
      log('SMART / Health at offset 512 (past its end)', 2, 4, 0xffff_ffff, 512);
      log('SMART / Health at offset 2 (not dword aligned)', 2, 4, 0xffff_ffff, 2);
      log('Error Information with RAE', 1, 16, 0xffff_ffff, 0, 1 << 15);
      ctrl.deletePair(sq);
    },
  },
  {
    name: 'Create and Delete I/O SQ and CQ, with every invalid case',
    run(g) {
      const ctrl = g.probe();
      const qmem = g.arena.alloc(2048 * 64);
      const createCq = (label: string, qid: number, entries: number, cdw11: number, prp1 = qmem) =>
        g.cqe(`Create I/O CQ ${label}`, ctrl.adminCmd({ opcode: nvme_admin.create_cq, prp1, cdw10: ((entries - 1) << 16) | qid, cdw11 }));
      const createSq = (label: string, qid: number, entries: number, cqid: number, cdw11lo = 1, prp1 = qmem) =>
        g.cqe(`Create I/O SQ ${label}`, ctrl.adminCmd({ opcode: nvme_admin.create_sq, prp1, cdw10: ((entries - 1) << 16) | qid, cdw11: (cqid << 16) | cdw11lo }));
      const del = (label: string, opcode: number, qid: number) => g.cqe(label, ctrl.adminCmd({ opcode, cdw10: qid }));
      createCq('QID 0', 0, 16, 1);
      createCq(`QID ${IO_QUEUES + 1} (past the maximum)`, IO_QUEUES + 1, 16, 1);
      createCq('QID 0xFFFF', 0xffff, 16, 1);
      createCq('QSIZE 0 (one entry)', 1, 1, 1);
      createCq('QSIZE past MQES', 1, 2049, 1);
      createCq('not physically contiguous', 1, 16, 0);
      createCq('IEN with interrupt vector 1 (does not exist)', 1, 16, (1 << 16) | 3);
      createCq('base not page aligned', 1, 16, 1, qmem + 0x100n);
      createSq('on CQ 0', 1, 16, 0);
      createSq('on a CQ that does not exist', 1, 16, 2);
      createCq('QID 1, 2048 entries', 1, 2048, 1);
      createCq('QID 1 again', 1, 16, 1, qmem);
      createSq('QID 0', 0, 16, 1);
      createSq(`QID ${IO_QUEUES + 1}`, IO_QUEUES + 1, 16, 1);
      createSq('QSIZE 0', 1, 1, 1);
      createSq('QSIZE past MQES', 1, 2049, 1);
      createSq('not physically contiguous', 1, 16, 1, 0);
      createSq('base not page aligned', 1, 16, 1, 1, qmem + 0x100n);
      createSq('QID 1 on CQ 1', 1, 16, 1, 1, qmem + 0x8000n);
      createSq('QID 1 again', 1, 16, 1, 1, qmem + 0x10000n);
      createSq('QID 2 on CQ 1 too', 2, 16, 1, 1, qmem + 0x10000n);
      del('Delete I/O CQ 1 with SQs attached', nvme_admin.delete_cq, 1);
      del('Delete I/O SQ 0', nvme_admin.delete_sq, 0);
      del('Delete I/O CQ 0', nvme_admin.delete_cq, 0);
      del('Delete I/O SQ 3 (does not exist)', nvme_admin.delete_sq, 3);
      del('Delete I/O CQ 3 (does not exist)', nvme_admin.delete_cq, 3);
      del(`Delete I/O SQ ${IO_QUEUES + 1}`, nvme_admin.delete_sq, IO_QUEUES + 1);
      del('Delete I/O SQ 1', nvme_admin.delete_sq, 1);
      del('Delete I/O SQ 1 again', nvme_admin.delete_sq, 1);
      del('Delete I/O CQ 1 with SQ 2 still attached', nvme_admin.delete_cq, 1);
      del('Delete I/O SQ 2', nvme_admin.delete_sq, 2);
      del('Delete I/O CQ 1', nvme_admin.delete_cq, 1);
      // A pair made by the driver works, at the highest QID.
      const sq = ctrl.createPair(IO_QUEUES, 4);
      g.cqe('Flush on the highest QID', ctrl.exec(sq, { opcode: nvme_cmd.flush, nsid: 1 }));
      for (let i = 0; i < 5; i++) g.cqe(`Flush ${i} on a 4-entry queue (wraps)`, ctrl.exec(sq, { opcode: nvme_cmd.flush, nsid: 1 }));
      g.rec('queue state after the wrap', cqCursor(sq));
      g.rec('Delete the pair', ctrl.deletePair(sq));
    },
  },
  {
    name: 'Read and Write over every PRP layout',
    run(g) {
      const ctrl = g.probe();
      const sq = ctrl.createPair(1, 64);
      // Pages in descending order, so a walker that assumed contiguity would move the wrong bytes.
      const pagesOf = (n: number) => Array.from({ length: n }, () => g.arena.alloc(4096)).reverse();
      const gather = (pages: bigint[], offset: number, len: number) => {
        const out = new Uint8Array(len);
        let done = 0;
        for (let i = 0; done < len; i++) {
          const start = i === 0 ? offset : 0;
          const n = Math.min(len - done, 4096 - start);
          out.set(guest_ram(pages[i] + BigInt(start), n), done);
          done += n;
        }
        return out;
      };
      const scatter = (pages: bigint[], offset: number, data: Uint8Array) => {
        let done = 0;
        for (let i = 0; done < data.length; i++) {
          const start = i === 0 ? offset : 0;
          const n = Math.min(data.length - done, 4096 - start);
          guest_ram(pages[i] + BigInt(start), n).set(data.subarray(done, done + n));
          done += n;
        }
      };
      const layouts: { name: string; len: number; offset: number; listOffset?: number }[] = [
        { name: 'PRP1 only, one page', len: 4096, offset: 0 },
        { name: 'PRP1 only, 1 KiB at offset 0x400', len: 1024, offset: 0x400 },
        { name: 'PRP1 + PRP2, two pages', len: 8192, offset: 0 },
        { name: 'PRP1 at offset 0x200 + PRP2', len: 4096, offset: 0x200 },
        { name: 'PRP list, four pages', len: 16384, offset: 0 },
        { name: 'PRP list, first page at offset 0x800, list at offset 0x100', len: 16384, offset: 0x800, listOffset: 0x100 },
        { name: 'chained PRP list', len: 32768, offset: 0, listOffset: 4096 - 24 },
        { name: 'MDTS exactly', len: 4096 << MDTS, offset: 0 },
      ];
      let lba = 0;
      layouts.forEach((l, k) => {
        const mark = g.arena.mark();
        const pages = pagesOf(Math.ceil((l.offset + l.len) / 4096));
        const data = new Uint8Array(l.len);
        fill(data, k + 1);
        scatter(pages, l.offset, data);
        const prps = nvme_build_prps(g.arena, pages, l.offset, l.len, 4096, l.listOffset ?? 0);
        g.cqe(`Write: ${l.name}`, ctrl.exec(sq, nvme_rw(nvme_cmd.write, 1, BigInt(lba), l.len / 512, prps)));
        scatter(pages, l.offset, new Uint8Array(l.len));
        g.cqe(`Read: ${l.name}`, ctrl.exec(sq, nvme_rw(nvme_cmd.read, 1, BigInt(lba), l.len / 512, prps)));
        g.rec(`data read back: ${l.name}`, fnv(gather(pages, l.offset, l.len)));
        // Read what the image held before (the other controller's copy has the same bytes).
        scatter(pages, l.offset, new Uint8Array(l.len));
        g.cqe(`Read of untouched blocks: ${l.name}`, ctrl.exec(sq, nvme_rw(nvme_cmd.read, 1, BigInt(1024 + lba), l.len / 512, prps)));
        g.rec(`image data: ${l.name}`, fnv(gather(pages, l.offset, l.len)));
        lba += l.len / 512;
        g.arena.release(mark);
      });
      ctrl.deletePair(sq);
    },
  },
  {
    name: 'PRP and transfer errors: MDTS exceeded, bad offsets, DMA outside guest RAM',
    run(g) {
      const ctrl = g.probe();
      const sq = ctrl.createPair(1, 64);
      const pages = Array.from({ length: 40 }, () => g.arena.alloc(4096));
      const rw = (label: string, opcode: number, nlb: number, prp1: bigint, prp2: bigint, slba = 0n) =>
        g.cqe(label, ctrl.exec(sq, nvme_rw(opcode, 1, slba, nlb, { prp1, prp2 })));
      const over = nvme_build_prps(g.arena, pages, 0, (4096 << MDTS) + 4096, 4096);
      rw('Read past MDTS by one page', nvme_cmd.read, ((4096 << MDTS) + 4096) / 512, over.prp1, over.prp2);
      rw('Write past MDTS by one page', nvme_cmd.write, ((4096 << MDTS) + 4096) / 512, over.prp1, over.prp2);
      rw('Read of 8 KiB with PRP2 not page aligned', nvme_cmd.read, 16, pages[0], pages[1] + 0x10n);
      const list = g.arena.alloc(4096);
      const put = (i: number, v: bigint) => new DataView(guest_ram(list, 4096).buffer, guest_ram(list, 4096).byteOffset).setBigUint64(8 * i, v, true);
      put(0, pages[1]);
      put(1, pages[2] + 0x200n);
      rw('Read of 12 KiB with a PRP list entry not page aligned', nvme_cmd.read, 24, pages[0], list);
      put(1, pages[2]);
      rw('Read of 12 KiB with a PRP list pointer not qword aligned', nvme_cmd.read, 24, pages[0], list + 4n);
      rw('Read of 12 KiB with a valid PRP list', nvme_cmd.read, 24, pages[0], list);
      rw('Read of 4 KiB into memory outside guest RAM', nvme_cmd.read, 8, NOWHERE, 0n);
      rw('Write of 4 KiB from memory outside guest RAM', nvme_cmd.write, 8, NOWHERE, 0n);
      rw('Read of 8 KiB with PRP2 outside guest RAM', nvme_cmd.read, 16, pages[0], NOWHERE);
      rw('Read of 12 KiB with the PRP list outside guest RAM', nvme_cmd.read, 24, pages[0], NOWHERE);
      // QEMU may have written LBAs 0-7 from nowhere (see QEMU_DEVIATIONS): write them again on both.
      fill(guest_ram(pages[0], 4096), 3);
      rw('Write of LBAs 0-7 again', nvme_cmd.write, 8, pages[0], 0n);
      g.rec('queue state', cqCursor(sq));
      ctrl.deletePair(sq);
    },
  },
  {
    name: 'Flush, Write Zeroes, Dataset Management, LBA range and namespace errors',
    run(g) {
      const ctrl = g.probe();
      const sq = ctrl.createPair(1, 64);
      const buf = g.arena.alloc(8192);
      const io = (label: string, cmd: NvmeCommand) => g.cqe(label, ctrl.exec(sq, cmd));
      const rd = (label: string, slba: bigint, nlb: number) => {
        guest_ram(buf, 8192).fill(0xee);
        io(`Read ${label}`, nvme_rw(nvme_cmd.read, 1, slba, nlb, { prp1: buf, prp2: buf + 4096n }));
        g.rec(`data: ${label}`, fnv(guest_ram(buf, nlb * 512)));
      };
      const blocks = BigInt(IMAGE_BYTES / 512);
      io('Flush NSID 1', { opcode: nvme_cmd.flush, nsid: 1 });
      io('Flush NSID FFFFFFFFh', { opcode: nvme_cmd.flush, nsid: 0xffff_ffff });
      io('Flush NSID 0', { opcode: nvme_cmd.flush, nsid: 0 });
      io('Flush NSID 0x1000', { opcode: nvme_cmd.flush, nsid: 0x1000 });
      fill(guest_ram(buf, 8192), 9);
      io('Write 16 blocks at 100', nvme_rw(nvme_cmd.write, 1, 100n, 16, { prp1: buf, prp2: buf + 4096n }));
      io('Write Zeroes 4 blocks at 104', nvme_rw(nvme_cmd.write_zeroes, 1, 104n, 4, { prp1: 0n, prp2: 0n }));
      rd('16 blocks at 100 after Write Zeroes', 100n, 16);
      io('Write Zeroes past the end', nvme_rw(nvme_cmd.write_zeroes, 1, blocks - 2n, 4, { prp1: 0n, prp2: 0n }));
      io('Write Zeroes of the last block', nvme_rw(nvme_cmd.write_zeroes, 1, blocks - 1n, 1, { prp1: 0n, prp2: 0n }));
      io('Read of the last block', nvme_rw(nvme_cmd.read, 1, blocks - 1n, 1, { prp1: buf, prp2: 0n }));
      io('Read at SLBA = NSZE', nvme_rw(nvme_cmd.read, 1, blocks, 1, { prp1: buf, prp2: 0n }));
      io('Read across the end', nvme_rw(nvme_cmd.read, 1, blocks - 1n, 2, { prp1: buf, prp2: 0n }));
      io('Write across the end', nvme_rw(nvme_cmd.write, 1, blocks - 1n, 2, { prp1: buf, prp2: 0n }));
      io('Read at SLBA 2^32', nvme_rw(nvme_cmd.read, 1, 1n << 32n, 1, { prp1: buf, prp2: 0n }));
      io('Read with NSID 0', nvme_rw(nvme_cmd.read, 0, 0n, 1, { prp1: buf, prp2: 0n }));
      io('Read with NSID 0x1000', nvme_rw(nvme_cmd.read, 0x1000, 0n, 1, { prp1: buf, prp2: 0n }));
      io('Read with NSID FFFFFFFFh', nvme_rw(nvme_cmd.read, 0xffff_ffff, 0n, 1, { prp1: buf, prp2: 0n }));
      // Dataset Management: ranges of {attributes, NLB, SLBA}.
      const ranges = g.arena.alloc(4096);
      const dv = new DataView(guest_ram(ranges, 4096).buffer, guest_ram(ranges, 4096).byteOffset, 4096);
      const range = (i: number, slba: bigint, nlb: number) => {
        dv.setUint32(16 * i, 0, true);
        dv.setUint32(16 * i + 4, nlb, true);
        dv.setBigUint64(16 * i + 8, slba, true);
      };
      range(0, 200n, 8);
      range(1, 300n, 8);
      io('DSM deallocate, two ranges', { opcode: nvme_cmd.dsm, nsid: 1, prp1: ranges, cdw10: 1, cdw11: 4 });
      io('DSM with only access hints (IDR, IDW)', { opcode: nvme_cmd.dsm, nsid: 1, prp1: ranges, cdw10: 1, cdw11: 3 });
      range(1, blocks - 4n, 8);
      io('DSM deallocate, a range past the end', { opcode: nvme_cmd.dsm, nsid: 1, prp1: ranges, cdw10: 1, cdw11: 4 });
      io('DSM with NSID 0x1000', { opcode: nvme_cmd.dsm, nsid: 0x1000, prp1: ranges, cdw10: 0, cdw11: 4 });
      // A range list across a page boundary: its first range ends PRP1's page, the second is at PRP2.
      const second = g.arena.alloc(4096);
      range(255, 500n, 8);
      new DataView(guest_ram(second, 16).buffer, guest_ram(second, 16).byteOffset, 16).setUint32(4, 8, true);
      new DataView(guest_ram(second, 16).buffer, guest_ram(second, 16).byteOffset, 16).setBigUint64(8, 600n, true);
      io('DSM deallocate, range list across a page (PRP1 at offset 0xff0, PRP2)', { opcode: nvme_cmd.dsm, nsid: 1, prp1: ranges + 0xff0n, prp2: second, cdw10: 1, cdw11: 4 });
      io('Write with FUA', nvme_rw(nvme_cmd.write, 1, 400n, 8, { prp1: buf, prp2: 0n }, 1 << 30));
      rd('8 blocks at 400 after the FUA write', 400n, 8);
      // What deallocated blocks hold is each controller's own (QEMU's raw image ignores discards):
      // write them again so the images can be compared.
      fill(guest_ram(buf, 8192), 11);
      for (const slba of [200n, 300n, 500n, 600n]) io(`Write over the deallocated blocks at ${slba}`, nvme_rw(nvme_cmd.write, 1, slba, 8, { prp1: buf, prp2: 0n }));
      g.rec('queue state', cqCursor(sq));
      ctrl.deletePair(sq);
    },
  },
  {
    name: 'unknown opcodes, Abort and Asynchronous Event Request limits',
    run(g) {
      const ctrl = g.probe();
      const sq = ctrl.createPair(1, 16);
      for (const op of [0x03, 0x7f, 0xc0, 0xff]) g.cqe(`admin opcode ${hex(op)}`, ctrl.adminCmd({ opcode: op }));
      for (const op of [0x03, 0x7f, 0x80, 0xff]) g.cqe(`I/O opcode ${hex(op)}`, ctrl.exec(sq, { opcode: op, nsid: 1 }));
      g.cqe('admin command with PSDT 01b (SGL)', ctrl.adminCmd({ opcode: nvme_admin.get_features, flags: 0x40, cdw10: 7 }));
      g.cqe('Abort of a command that is not outstanding', ctrl.adminCmd({ opcode: nvme_admin.abort, cdw10: (0x1234 << 16) | 1 }));
      const held = [0, 1, 2, 3].map(() => ctrl.admin.submit({ opcode: nvme_admin.async_event }));
      g.cqe('Asynchronous Event Request past AERL + 1', ctrl.adminCmd({ opcode: nvme_admin.async_event }));
      g.rec('AERs held', held.every((cid) => ctrl.admin.inflight.has(cid)));
      g.rec('admin queue state', cqCursor(ctrl.admin));
      g.rec('I/O queue state', cqCursor(sq));
    },
  },
];

/** The guest: run sequence `seq` and leave its transcript (JSON) at `out`: u32 length, then the bytes. */
export function diff_guest(bar0: bigint, arenaBase: bigint, arenaSize: bigint, out: bigint, seq: bigint): void {
  const arena = new NvmeDmaArena(arenaBase, Number(arenaSize));
  const entries: [string, string][] = [];
  const seen = new Map<string, number>();
  const rec: Rec = (key, value) => {
    // A key used twice gets a counter, so both transcripts stay aligned.
    const n = (seen.get(key) ?? 0) + 1;
    seen.set(key, n);
    entries.push([n > 1 ? `${key} #${n}` : key, typeof value === 'bigint' ? value.toString() : String(value)]);
  };
  const g: Ctx = {
    bar0, arena, rec,
    cqe: (key, c, dw0 = true) => rec(key, fmtCqe(c, dw0)),
    probe: () => NvmeController.probe({ bar0, arena, interrupts: 'none' }),
  };
  try {
    SEQUENCES[Number(seq)].run(g);
  } catch (e) {
    rec('guest exception', (e as Error).message);
  }
  const json = new TextEncoder().encode(JSON.stringify(entries));
  const dst = guest_ram(out, OUT_SIZE);
  new DataView(dst.buffer, dst.byteOffset, 4).setUint32(0, json.length, true);
  dst.set(json.subarray(0, OUT_SIZE - 4), 4);
  GUEST_DONE();
}

// ---- the host ---------------------------------------------------------------------------------

type Side = 'ours' | 'qemu';

/** A 1 MiB image with the same bytes on both sides. */
function makeImage(file: string): void {
  const b = Buffer.alloc(IMAGE_BYTES);
  for (let i = 0; i < b.length; i++) b[i] = (i * 131 + (i >> 12) * 17 + 3) & 0xff;
  fs.writeFileSync(file, b);
}

/** Our nvme task or QEMU's nvme, BAR0 at NVME_BAR0; returns how to stop it after kvm_vm_free. */
function startDevice(side: Side, vm: KvmVm, image: string): () => Promise<ExitStatus> {
  if (side === 'ours') {
    const vmm = nvme_vmm_start({ vm, path: 'ioregionfd', config: { image, ...OURS_CONFIG } });
    return () => vmm.stop();
  }
  const dev = spawn_qemu_device({ vm, device: 'nvme', drive: image, props: QEMU_PROPS, bars: { 0: { gpa: NVME_BAR0, size: NVME_BAR0_SIZE, posted: true } } });
  dev.closeChannelFds();
  return () => dev.stop();
}

async function runSide(side: Side, seq: number, image: string): Promise<Map<string, string>> {
  const vm: KvmVm = vm_create(4 << 20);
  const vcpu = vm_vcpu_add(vm, 0, diff_guest);
  const arena = vm_alloc(vm, ARENA_SIZE, 4096);
  const out = vm_alloc(vm, OUT_SIZE, 4096);
  vcpu_args_set(vcpu, NVME_BAR0, arena, ARENA_SIZE, out, seq);
  const stop = startDevice(side, vm, image);
  let transcript = new Map<string, string>();
  try {
    vcpu_run(vcpu);
    const uc = get_ucall(vcpu);
    if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
    TEST_ASSERT(uc.cmd === UCALL_DONE, `${side}: the guest finished (ucall ${uc.cmd})`);
    const b = addr_gpa2hva(vm, out, OUT_SIZE);
    const len = new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
    transcript = new Map(JSON.parse(Buffer.from(b.subarray(4, 4 + len)).toString('utf8')) as [string, string][]);
  } finally {
    kvm_vm_free(vm);
    const st = await stop();
    EXPECT(st.code === 0, `${side}: the device task exits 0 (got ${st.code ?? st.signal})`);
  }
  return transcript;
}

function compare(test: string, ours: Map<string, string>, qemu: Map<string, string>): void {
  const keys = [...new Set([...ours.keys(), ...qemu.keys()])];
  let agreed = 0;
  for (const key of keys) {
    const o = ours.get(key) ?? '(not recorded)';
    const q = qemu.get(key) ?? '(not recorded)';
    if (o === q) {
      agreed++;
      continue;
    }
    const dev = QEMU_DEVIATIONS.find((d) => d.test === test && d.key === key);
    if (dev && dev.qemu === q) {
      TH_LOG(`known QEMU deviation (${dev.spec}): ${key}: ours ${o}, QEMU ${q}`);
      continue;
    }
    EXPECT(false, `agreement on "${key}": ours ${o}, QEMU ${q}`);
  }
  for (const d of QEMU_DEVIATIONS) {
    if (d.test === test && ours.get(d.key) === qemu.get(d.key)) TH_LOG(`QEMU_DEVIATIONS row no longer seen: ${d.key}`);
  }
  TH_LOG(`${agreed} of ${keys.length} recorded values agree`);
}

function imagesEqual(a: string, b: string): boolean {
  return Buffer.compare(fs.readFileSync(a), fs.readFileSync(b)) === 0;
}

SEQUENCES.forEach((s, i) => {
  TEST(s.name, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme_qemu_diff_test-'));
    try {
      const images = { ours: path.join(dir, 'ours.img'), qemu: path.join(dir, 'qemu.img') };
      makeImage(images.ours);
      makeImage(images.qemu);
      const ours = await runSide('ours', i, images.ours);
      const qemu = await runSide('qemu', i, images.qemu);
      EXPECT(!ours.has('guest exception'), `the sequence ran to its end on ours (${ours.get('guest exception')})`);
      EXPECT(!qemu.has('guest exception'), `the sequence ran to its end on QEMU (${qemu.get('guest exception')})`);
      compare(s.name, ours, qemu);
      EXPECT_EQ(imagesEqual(images.ours, images.qemu), true, 'the two images hold the same bytes afterwards');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

if (require.main === module) {
  TEST_REQUIRE_QEMU();
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
