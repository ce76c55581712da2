// qemu_remote_test: QEMU's own pci-testdev (the device kvm-unit-tests uses), run by multi-process
// QEMU behind the qemu-remote bridge, driven from guest code through ioregionfd: its memory BAR as an
// MMIO ioregion (with posted writes) and its I/O-port BAR as a PIO ioregion. Each of its six tests is
// selected, its header read byte by byte, its writes done and its count read back. Then the
// lifetimes: the remote ends when the VM is freed, when the channels close (deassign), and when the
// device task is SIGKILLed; a remote killed in the middle of an access sends that access down KVM's
// failure path (an ordinary exit) instead of hanging; a QEMU device that cannot start (edu insists on
// MSI) fails the same way. And QEMU's nvme with the config the NVMe comparison will use: CAP, VS and
// an enable/disable cycle of the controller, through its 64-bit BAR0. Skips when qemu-system-x86_64 (with the x-remote machine) is missing.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { errnoName } from '../../proto/errno';
import { KVM_CAP_IOREGIONFD, KVM_EXIT_MMIO } from '../../proto/kvm-uapi';
import { EXPECT, EXPECT_EQ, FIXTURE, TEST, TEST_F, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { ExitStatus } from './lib/device_task';
import { GUEST_ASSERT, GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC_ARGS, inb, outb, readb, readl, readq, writeb, writel, writeq } from './lib/guest';
import { __vm_deassign_ioregion, vm_ioregion_stats } from './lib/ioregionfd';
import {
  __vcpu_run_start, __vcpu_run_wait, exit_reason, exit_reason_str, KvmVcpu, kvm_has_cap, kvm_vm_free, KvmVm, le_store, run_mmio,
  vcpu_args_set, vcpu_run, vm_alloc, vm_create, vm_create_with_one_vcpu, vm_vcpu_add,
} from './lib/kvm_util';
import { vm_create_irqchip } from './lib/irq';
import { process_gone, QemuDevice, spawn_qemu_device, TEST_REQUIRE_QEMU } from './lib/qemu_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC, Ucall } from './lib/ucall_common';
import { msleep, TEST_ASSERT } from './lib/test_util';

/** pci-testdev's BARs: 4 KiB of memory (BAR0) and 256 I/O ports (BAR1). */
const MMIO_BAR = 0xe000_0000n;
const MMIO_SIZE = 0x1000n;
const PIO_BAR = 0xc000;
const PIO_SIZE = 0x100n;
/** Writes per test, as kvm-unit-tests does. */
const WRITES = 5;
/** Its six tests: three of each kind, selected by writing 0..2 at offset 0 of the kind's BAR. */
const TEST_NAMES = [
  'mmio-no-eventfd', 'mmio-wildcard-eventfd', 'mmio-datamatch-eventfd',
  'portio-no-eventfd', 'portio-wildcard-eventfd', 'portio-datamatch-eventfd',
];
/** The header fields: test u8 @0, width u8 @1, offset u32 @4, data u8 @8, count u32 @12, name @16. */
const HDR_COUNT = 12;
const HDR_NAME = 16;
/** How long a lifetime check waits for a process to go before it calls that a failure (a hang guard). */
const GONE_GUARD_MS = 10000;

/** Every test of pci-testdev from the guest: select, header byte by byte, the writes, the count. */
export function testdev_guest(mmio: bigint, port: bigint): void {
  for (let kind = 0; kind < 2; kind++) {
    const rd = (off: number) => (kind === 0 ? Number(readb(mmio + BigInt(off))) : inb(Number(port) + off));
    const wr = (off: number, v: number) => (kind === 0 ? writeb(mmio + BigInt(off), BigInt(v)) : outb(Number(port) + off, v));
    const le32 = (off: number) => (rd(off) | (rd(off + 1) << 8) | (rd(off + 2) << 16) | (rd(off + 3) << 24)) >>> 0;
    for (let t = 0; t < 3; t++) {
      const n = kind * 3 + t;
      wr(0, t);
      const test = rd(0);
      const width = rd(1);
      const offset = le32(4);
      const data = rd(8);
      GUEST_ASSERT_EQ(le32(HDR_COUNT), 0, `${TEST_NAMES[n]}: count right after the test is selected`);
      let name = '';
      for (let i = HDR_NAME; i < HDR_NAME + 64; i++) {
        const c = rd(i);
        if (c === 0) break;
        name += String.fromCharCode(c);
      }
      GUEST_ASSERT(name === TEST_NAMES[n], `test ${n} is called '${name}', expected '${TEST_NAMES[n]}'`);
      for (let i = 0; i < WRITES; i++) wr(offset, data);
      GUEST_SYNC_ARGS(n, test, width, offset, data, le32(HDR_COUNT));
    }
  }
  // A 4-byte load of a 1-byte-wide device: QEMU's memory core splits it, the bridge passes it whole.
  GUEST_SYNC_ARGS(6, readl(mmio + BigInt(HDR_COUNT)), readl(mmio + 4n));
  GUEST_DONE();
}

/** One access to BAR0 to prove the remote runs, a GUEST_SYNC, then the access the test breaks. */
export function killed_guest(mmio: bigint): void {
  writeb(mmio, 0n);
  GUEST_SYNC_ARGS(1, readb(mmio + 8n));
  GUEST_SYNC_ARGS(2, readb(mmio + 8n));
  GUEST_DONE();
}

/** NVMe controller registers (NVMe base spec §3.1). */
const NVME_BAR = 0xfe00_0000n;
const NVME_BAR_SIZE = 0x4000n;
const NVME_CAP = 0x00n;
const NVME_VS = 0x08n;
const NVME_CC = 0x14n;
const NVME_CSTS = 0x1cn;
const NVME_AQA = 0x24n;
const NVME_ASQ = 0x28n;
const NVME_ACQ = 0x30n;

/** QEMU's nvme from the guest: CAP and VS, then CC.EN with an admin queue pair until CSTS.RDY, and off again. */
export function nvme_guest(bar: bigint, queues: bigint): void {
  const cap = readq(bar + NVME_CAP);
  const vs = readl(bar + NVME_VS);
  GUEST_SYNC_ARGS(1, cap, vs);
  writel(bar + NVME_AQA, (3n << 16n) | 3n);
  writeq(bar + NVME_ASQ, queues);
  writeq(bar + NVME_ACQ, queues + 0x1000n);
  // IOSQES 6 (64-byte entries), IOCQES 4 (16-byte), EN.
  writel(bar + NVME_CC, (4n << 20n) | (6n << 16n) | 1n);
  let polls = 0;
  while ((readl(bar + NVME_CSTS) & 1n) === 0n && polls < 1_000_000) polls++;
  const ready = readl(bar + NVME_CSTS);
  writel(bar + NVME_CC, 0n);
  while ((readl(bar + NVME_CSTS) & 1n) !== 0n && polls < 2_000_000) polls++;
  GUEST_SYNC_ARGS(2, ready, readl(bar + NVME_CSTS), readq(bar + NVME_ASQ));
  GUEST_DONE();
}

/** Reads BAR0 once; used where the device task is expected to fail. */
export function one_read_guest(mmio: bigint): void {
  GUEST_SYNC_ARGS(1, readb(mmio));
  GUEST_DONE();
}

function nextUcall(vcpu: KvmVcpu): Ucall {
  vcpu_run(vcpu);
  TEST_ASSERT(exit_reason(vcpu) !== KVM_EXIT_MMIO, `an unexpected KVM_EXIT_MMIO at 0x${run_mmio(vcpu).physAddr.toString(16)}: the access left ioregionfd`);
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc;
}

/** A VM running `guest` with pci-testdev's BAR0 (posted writes) and BAR1 mapped. */
function testdevVm(guest: (mmio: bigint, port: bigint) => void): { vm: KvmVm; vcpu: KvmVcpu; dev: QemuDevice } {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest as (...args: bigint[]) => unknown);
  vcpu_args_set(vcpu, MMIO_BAR, BigInt(PIO_BAR));
  const dev = spawn_qemu_device({
    vm, device: 'pci-testdev',
    bars: { 0: { gpa: MMIO_BAR, size: MMIO_SIZE, posted: true }, 1: { gpa: BigInt(PIO_BAR), size: PIO_SIZE, pio: true } },
  });
  dev.closeChannelFds();
  return { vm, vcpu, dev };
}

/** Wait (bounded: a hang guard, not a timing assertion) until the predicate holds. */
function waitFor(what: () => boolean, guardMs = GONE_GUARD_MS): boolean {
  for (let waited = 0; !what(); waited += 5) {
    if (waited >= guardMs) return false;
    msleep(5);
  }
  return true;
}

async function exitedWithin(dev: QemuDevice, guardMs = GONE_GUARD_MS): Promise<ExitStatus | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<undefined>((res) => {
    timer = setTimeout(() => res(undefined), guardMs);
  });
  const status = await Promise.race([dev.exited, guard]);
  clearTimeout(timer);
  return status;
}

/** The fd the process's main thread is blocked reading from, from /proc/PID/syscall (read is syscall 0). */
function blockedReadFd(pid: number): number | undefined {
  try {
    const f = fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').trim().split(' ');
    // read(2), or recvmmsg(2) on a SEQPACKET channel (x86-64 syscall numbers 0 and 299).
    return f[0] === '0' || f[0] === '299' ? Number(f[1]) : undefined;
  } catch {
    return undefined;
  }
}

const show = (s: ExitStatus | undefined) => (s ? (s.signal ?? `exit ${s.code}`) : 'still running');

interface TestdevRun {
  vm: KvmVm;
  dev: QemuDevice;
  freed: boolean;
  /** Per test of pci-testdev: test, width, offset, data, count, as the guest read them. */
  headers: bigint[][];
  /** The last GUEST_SYNC: count and offset of the last I/O test read 4 bytes at a time. */
  last: Ucall;
}

/** testdev_guest run to its end against pci-testdev; what it reported is kept for the checks. */
const testdevRun = FIXTURE('testdev', (): TestdevRun => {
  const { vm, vcpu, dev } = testdevVm(testdev_guest);
  const headers: bigint[][] = [];
  for (let n = 0; n < 6; n++) {
    const uc = nextUcall(vcpu);
    TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(n), `expected GUEST_SYNC(${n}), got ucall ${uc.cmd} stage ${uc.args[1]}`);
    headers.push(uc.args.slice(2, 7));
  }
  const last = nextUcall(vcpu);
  TEST_ASSERT(nextUcall(vcpu).cmd === UCALL_DONE, 'the guest finishes');
  return { vm, dev, freed: false, headers, last };
}, async (r) => {
  if (!r.freed) kvm_vm_free(r.vm);
  await r.dev.stop();
});

const fmt = (h: bigint[]) => h.map((v) => `0x${v.toString(16)}`).join(' ');

TEST_NAMES.forEach((testName, n) => {
  const kind = Math.floor(n / 3);
  const expected = [BigInt(n), 1n, BigInt((kind === 0 ? 2048 : 128) + n), n % 3 === 1 ? 0xcen : 0xfan];
  TEST_F(testdevRun, `${testName} selected from guest code over ${n < 3 ? 'MMIO' : 'PIO'}: header test/width/offset/data ${fmt(expected)}, name checked in the guest`, ({ headers }) => {
    TH_LOG(`header ${fmt(headers[n].slice(0, 4))}`);
    EXPECT(expected.every((v, i) => headers[n][i] === v), 'the header as pci-testdev defines it');
  });
});
TEST_NAMES.forEach((testName, n) => {
  // no-eventfd counts every matching write; the eventfd tests hand the writes to an eventfd that
  // the remote's memory core registered, so the device never sees them (kvm-unit-tests allows 0).
  const want = n % 3 === 0 ? BigInt(WRITES) : 0n;
  TEST_F(testdevRun, `${testName}: ${WRITES} writes of data at its offset, count ${want}`, ({ headers }) => void EXPECT_EQ(headers[n][4], want, 'count'));
});
TEST_F(testdevRun, '4-byte reads of 1-byte-wide registers come back whole', ({ last }) => {
  TH_LOG(`count 0x${last.args[2].toString(16)}, offset 0x${last.args[3].toString(16)} of the last I/O test`);
  EXPECT(last.cmd === UCALL_SYNC && last.args[1] === 6n && last.args[2] === 0n && last.args[3] === 0x80n + 5n, 'count 0 at offset 0x85');
});

const barStats = (vm: KvmVm) => [MMIO_BAR, BigInt(PIO_BAR)].map((gpa) => vm_ioregion_stats(vm).find((s) => s.guestPaddr === gpa)!);

TEST_F(testdevRun, 'posted writes stay posted: BAR0 (KVM_IOREGION_POSTED_WRITES) 18 posted / 0 waited, BAR1 0 / 18; failures 0', ({ vm }) => {
  const [mmio, pio] = barStats(vm);
  // Per kind: 3 selects + 3 x 5 data writes; BAR0's are posted, BAR1's are not.
  TH_LOG(`BAR0 ${mmio.postedWrites} / ${mmio.writes}, BAR1 ${pio.postedWrites} / ${pio.writes}; failures ${mmio.failures + pio.failures}`);
  EXPECT(mmio.postedWrites === 18n && mmio.writes === 0n && pio.writes === 18n && pio.postedWrites === 0n && mmio.failures + pio.failures === 0n,
    'the counts');
});
TEST_F(testdevRun, 'BAR0 is an MMIO ioregion with user_data 0, BAR1 a PIO ioregion with user_data 1', ({ vm }) => {
  const [mmio, pio] = barStats(vm);
  TH_LOG(`reads ${mmio.reads} / ${pio.reads}`);
  EXPECT(mmio.pio === false && pio.pio === true && mmio.userData === 0n && pio.userData === 1n && mmio.reads > 0n && pio.reads > 0n, 'the regions');
});
TEST_F(testdevRun, 'freeing the VM ends the device task and its remote QEMU', async (r) => {
  const qpid = r.dev.remote_pid();
  TEST_ASSERT(qpid !== undefined, 'the device task has a qemu-system child');
  kvm_vm_free(r.vm);
  r.freed = true;
  const status = await exitedWithin(r.dev);
  TH_LOG(`${show(status)}, remote pid ${qpid} ${process_gone(qpid) ? 'gone' : 'still running'}`);
  EXPECT(status?.code === 0 && process_gone(qpid), 'exit 0, remote gone');
});

interface Nvme {
  dir: string;
  vm: KvmVm;
  vcpu: KvmVcpu;
  dev: QemuDevice;
  freed: boolean;
}

/** nvme_guest against QEMU's nvme on a 1 MiB image, BAR0 (64-bit) placed at NVME_BAR. */
const nvmeRun = FIXTURE('nvme', (): Nvme => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qemu-remote-nvme-'));
  const image = path.join(dir, 'nvme.img');
  fs.writeFileSync(image, Buffer.alloc(1 << 20));
  const vm = vm_create();
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, nvme_guest);
  vcpu_args_set(vcpu, NVME_BAR, vm_alloc(vm, 0x2000, 0x1000));
  // The config the issue names: {"device": "nvme", "drive": IMAGE, "serial": "..."}, BAR0 (64-bit) placed.
  const dev = spawn_qemu_device({ vm, device: 'nvme', drive: image, props: { serial: 'qemu-remote-test' }, intx_gsi: 10, bars: { 0: { gpa: NVME_BAR, size: NVME_BAR_SIZE } } });
  dev.closeChannelFds();
  return { dir, vm, vcpu, dev, freed: false };
}, async (s) => {
  if (!s.freed) kvm_vm_free(s.vm);
  await s.dev.stop();
  fs.rmSync(s.dir, { recursive: true, force: true });
});

TEST_STEPS(nvmeRun, [
  ['QEMU\'s nvme through ioregionfd: CAP (MQES > 0, CSS has NVM, DSTRD 0), VS 1.x', ({ vcpu }) => {
    const [cap, vs] = nextUcall(vcpu).args.slice(2);
    const mqes = cap & 0xffffn;
    const css = (cap >> 37n) & 0xffn;
    const dstrd = (cap >> 32n) & 0xfn;
    TH_LOG(`CAP 0x${cap.toString(16)} (MQES ${mqes}, CSS 0x${css.toString(16)}, DSTRD ${dstrd}), VS 0x${vs.toString(16)}`);
    return mqes > 0n && (css & 1n) === 1n && dstrd === 0n && vs >> 16n === 1n;
  }],
  ['64-bit register writes reach it: with AQA/ASQ/ACQ set, CC.EN brings CSTS.RDY, CC.EN=0 clears it', async (s) => {
    const [ready, off, asq] = nextUcall(s.vcpu).args.slice(2);
    TH_LOG(`CSTS 0x${ready.toString(16)}, then 0x${off.toString(16)}`);
    TEST_ASSERT(nextUcall(s.vcpu).cmd === UCALL_DONE, 'the guest finishes');
    kvm_vm_free(s.vm);
    s.freed = true;
    const status = await exitedWithin(s.dev);
    TEST_ASSERT(status?.code === 0, `the nvme device task exits 0 (${show(status)})`);
    return (ready & 1n) === 1n && (off & 1n) === 0n && asq !== 0n;
  }],
]);

TEST('closing its channels (every region deassigned) ends the device task and its remote', async () => {
  const { vm, vcpu, dev } = testdevVm(one_read_guest);
  nextUcall(vcpu);
  const qpid = dev.remote_pid();
  TEST_ASSERT(qpid !== undefined, 'the device task has a qemu-system child');
  // Deassign every region: KVM drops its references to the channel, and ours are closed: EOF. (The
  // kernel-model's vCPU threads let go of their copies at their next instruction boundary, so the
  // guest runs on to its end first.)
  for (const r of dev.regions) TEST_ASSERT(__vm_deassign_ioregion(vm, r.guest_paddr, r.memory_size, r.flags ?? 0).ret === 0, 'deassign');
  TEST_ASSERT(nextUcall(vcpu).cmd === UCALL_DONE, 'the guest finishes');
  const status = await exitedWithin(dev);
  kvm_vm_free(vm);
  await dev.stop();
  TH_LOG(`${show(status)}, remote pid ${qpid}`);
  EXPECT(status?.code === 0 && process_gone(qpid), 'exit 0, remote gone');
});

TEST('SIGKILL of the device task ends its remote too', async () => {
  const { vm, vcpu, dev } = testdevVm(one_read_guest);
  nextUcall(vcpu);
  const qpid = dev.remote_pid();
  TEST_ASSERT(qpid !== undefined, 'the device task has a qemu-system child');
  process.kill(dev.pid, 'SIGKILL');
  const status = await exitedWithin(dev);
  const gone = waitFor(() => process_gone(qpid));
  kvm_vm_free(vm);
  await dev.stop();
  TH_LOG(`${show(status)}, remote pid ${qpid} ${gone ? 'gone' : 'still running'}`);
  EXPECT(status?.signal === 'SIGKILL' && gone, 'killed, remote gone');
});

interface Killed {
  vm: KvmVm;
  vcpu: KvmVcpu;
  dev: QemuDevice;
}

/** killed_guest against pci-testdev's BAR0 (not posted), past its first read. */
const killedRun = FIXTURE('killed_mid_access', (): Killed => {
  const [vm, vcpu] = vm_create_with_one_vcpu(killed_guest);
  vcpu_args_set(vcpu, MMIO_BAR);
  const dev = spawn_qemu_device({ vm, device: 'pci-testdev', bars: { 0: { gpa: MMIO_BAR, size: MMIO_SIZE } } });
  dev.closeChannelFds();
  const first = nextUcall(vcpu);
  TEST_ASSERT(first.args[1] === 1n && first.args[2] === 0xfan, `the first read works (data 0x${first.args[2].toString(16)})`);
  return { vm, vcpu, dev };
}, async ({ vm, dev }) => {
  kvm_vm_free(vm);
  await dev.stop();
});

TEST_STEPS(killedRun, [
  ['a remote killed mid-access: the access falls back to KVM_EXIT_MMIO, counted as a failure, no hang', ({ vm, vcpu, dev }) => {
    const qpid = dev.remote_pid();
    TEST_ASSERT(qpid !== undefined, 'the device task has a qemu-system child');
    // The task is idle now: its main thread waits on its channel.
    TEST_ASSERT(waitFor(() => blockedReadFd(dev.pid) !== undefined), 'the device task never blocked on its channel');
    const channelFd = blockedReadFd(dev.pid);
    // Freeze the remote, start the access, and wait until the bridge sits waiting for the remote's
    // answer (blocked in read on its remote socket, not on the channel): the access is in flight.
    process.kill(qpid, 'SIGSTOP');
    __vcpu_run_start(vcpu);
    const inFlight = waitFor(() => {
      const fd = blockedReadFd(dev.pid);
      return fd !== undefined && fd !== channelFd;
    });
    TEST_ASSERT(inFlight, `the device task never blocked on its remote (channel fd ${channelFd})`);
    process.kill(qpid, 'SIGKILL');
    const r = __vcpu_run_wait(vcpu);
    const m = run_mmio(vcpu);
    const s = vm_ioregion_stats(vm)[0];
    TH_LOG(`${exit_reason_str(exit_reason(vcpu))} at 0x${m.physAddr.toString(16)}, failures ${s.failures}, ${errnoName(s.lastErrno)}`);
    return r.ret === 0 && exit_reason(vcpu) === KVM_EXIT_MMIO && m.physAddr === MMIO_BAR + 8n && m.len === 1 && s.failures === 1n;
  }],
  ['the VMM completes the access and the guest goes on; the device task ends with exit 4, remote gone', async ({ vcpu, dev }) => {
    le_store(run_mmio(vcpu).data, 1, 0x5an);
    const second = nextUcall(vcpu);
    const status = await exitedWithin(dev);
    TH_LOG(`0x${second.args[2].toString(16)}, ${show(status)}`);
    return second.args[1] === 2n && second.args[2] === 0x5an && status?.code === 4;
  }],
]);

TEST('a remote killed while its task is idle ends the task at once, so the next access takes the failure path instead of reaching a dead device', async () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(killed_guest);
  vcpu_args_set(vcpu, MMIO_BAR);
  const dev = spawn_qemu_device({ vm, device: 'pci-testdev', bars: { 0: { gpa: MMIO_BAR, size: MMIO_SIZE } } });
  dev.closeChannelFds();
  nextUcall(vcpu);
  const qpid = dev.remote_pid();
  TEST_ASSERT(qpid !== undefined, 'the device task has a qemu-system child');
  // No access in flight: the task sits in a read of its channel when its remote dies.
  process.kill(qpid, 'SIGKILL');
  const status = await exitedWithin(dev);
  vcpu_run(vcpu);
  const m = run_mmio(vcpu);
  const s = vm_ioregion_stats(vm)[0];
  TH_LOG(`${show(status)}; ${exit_reason_str(exit_reason(vcpu))}, ${errnoName(s.lastErrno)}`);
  EXPECT(status?.code === 4 && exit_reason(vcpu) === KVM_EXIT_MMIO && m.physAddr === MMIO_BAR + 8n && s.failures === 1n,
    'the task exits 4 and the next access exits KVM_EXIT_MMIO, counted as a failure');
  le_store(m.data, 1, 0n);
  nextUcall(vcpu);
  kvm_vm_free(vm);
  await dev.stop();
});

TEST('QEMU\'s edu cannot start in a remote (it insists on MSI): the device task exits 2 and the guest\'s read falls back to an ordinary exit', async () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(one_read_guest);
  vcpu_args_set(vcpu, MMIO_BAR);
  const dev = spawn_qemu_device({ vm, device: 'edu', bars: { 0: { gpa: MMIO_BAR, size: 0x100000n } } });
  dev.closeChannelFds();
  vcpu_run(vcpu);
  const reason = exit_reason(vcpu);
  const s = vm_ioregion_stats(vm)[0];
  const status = await exitedWithin(dev);
  TH_LOG(`${show(status)}; ${exit_reason_str(reason)} (${errnoName(s.lastErrno)})`);
  EXPECT(reason === KVM_EXIT_MMIO && run_mmio(vcpu).physAddr === MMIO_BAR && s.failures === 1n && status?.code === 2,
    'exit 2, and KVM_EXIT_MMIO at BAR0 counted as a failure');
  kvm_vm_free(vm);
  await dev.stop();
});

if (require.main === module) {
  TEST_REQUIRE_QEMU();
  TEST_ASSERT(kvm_has_cap(KVM_CAP_IOREGIONFD), 'KVM_CAP_IOREGIONFD');
  void test_harness_run();
}
