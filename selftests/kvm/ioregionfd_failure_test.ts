// ioregionfd_failure_test: a device that answers short, answers garbage, closes, dies or never answers,
// and an fd someone made non-blocking (docs/ioregionfd.md §5.4, §6; must-test items 34-37). By default the
// access falls back to an ordinary exit, as the RFC does, and is counted; with the emulator capability
// KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT it becomes KVM_EXIT_IOREGIONFD_FAILURE. Nothing hangs a vCPU or
// touches another region.

import { ECONNRESET, EINTR, EINVAL, EIO, EPIPE, errnoName } from '../../proto/errno';
import {
  KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, KVM_CAP_IOREGIONFD, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IOREGIONFD_FAILURE,
  KVM_EXIT_MMIO, KVM_IOREGION_PIO, RUN,
} from '../../proto/kvm-uapi';
import { closeQuietly, pipe, setNonBlocking, socketpair } from '../../proto/os';
import { EXPECT, FIXTURE, TEST, TEST_F, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { spawn_device_task } from './lib/device_task';
import { GUEST_DONE, GUEST_SYNC_ARGS, inl, readq } from './lib/guest';
import { vm_ioregion_stats, vm_set_ioregion } from './lib/ioregionfd';
import {
  __vcpu_run_start, __vcpu_run_wait, exit_reason, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, le_store, run_io, run_mmio,
  vcpu_kick, vcpu_run, vm_create_with_one_vcpu, vm_enable_cap,
} from './lib/kvm_util';
import { readCommand, writeAnswer } from './lib/raw_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_SYNC } from './lib/ucall_common';
import { msleep, TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const R = 0xd0000000n;
const GOOD = 0xd0001000n;

/** Read the failing region, then a healthy region on another device. */
export function guest_two_reads(): void {
  const bad = readq(R);
  const good = readq(GOOD);
  GUEST_SYNC_ARGS(1, bad, good);
  GUEST_DONE();
}

export function guest_pio(): void {
  GUEST_SYNC_ARGS(1, BigInt(inl(0x5000)));
  GUEST_DONE();
}

interface Rig {
  vm: KvmVm;
  vcpu: KvmVcpu;
  /** The device end of the failing region's socket. */
  dev: number;
  /** Free the VM, close the fds, stop the healthy device (once; later calls do nothing). */
  close(): Promise<void>;
}

/** A VM with a failing region at R (the test holds its device end) and a healthy testdev region at GOOD. */
function rig(failureExit: boolean, transport: 'seqpacket' | 'pipe' = 'seqpacket'): Rig & { kvmRead: number } {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_two_reads);
  if (failureExit) vm_enable_cap(vm, KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, 1n);
  let dev: number;
  let kvmRead: number;
  const fds: number[] = [];
  if (transport === 'pipe') {
    const [cr, cw] = pipe();
    const [rr, rw] = pipe();
    vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, user_data: 0xfa11n, read_fd: rr, write_fd: cw });
    // The test reads commands from cr and "answers" on rw.
    dev = cr;
    kvmRead = rr;
    fds.push(cw, rw);
    closeQuietly(rw);
  } else {
    const [a, b] = socketpair('seqpacket');
    vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, user_data: 0xfa11n, read_fd: a, write_fd: a });
    dev = b;
    kvmRead = a;
    fds.push(a);
  }
  const good = spawn_device_task({ device: 'testdev', vm, regions: [{ guest_paddr: GOOD, memory_size: 8n }] });
  good.closeChannelFds();
  let closed = false;
  return {
    vm, vcpu, dev, kvmRead,
    async close() {
      if (closed) return;
      closed = true;
      kvm_vm_free(vm);
      [...fds, dev, kvmRead].forEach(closeQuietly);
      await good.stop();
    },
  };
}

const onSocket = FIXTURE('socket', () => rig(false), (r) => r.close());
const onPipes = FIXTURE('pipes', () => rig(false, 'pipe'), (r) => r.close());
const withFailureExit = FIXTURE('failure_exit', () => rig(true), (r) => r.close());

/** Run; expect the failing read to fall back to KVM_EXIT_MMIO, complete it with 0x99, check the rest. */
function expectFallback(r: Rig, errno: number): void {
  vcpu_run(r.vcpu);
  const m = run_mmio(r.vcpu);
  const exited = exit_reason(r.vcpu) === KVM_EXIT_MMIO && m.physAddr === R && m.len === 8 && !m.isWrite;
  le_store(m.data, 8, 0x99n);
  vcpu_run(r.vcpu);
  const uc = get_ucall(r.vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  const s = vm_ioregion_stats(r.vm).find((x) => x.guestPaddr === R)!;
  TH_LOG(`stats ${s.failures}/${errnoName(s.lastErrno)}`);
  EXPECT(exited, 'a KVM_EXIT_MMIO for the failed 8-byte read');
  EXPECT(uc.cmd === UCALL_SYNC && uc.args[2] === 0x99n && uc.args[3] === 0n, 'the VMM\'s 0x99, then the healthy region\'s 0');
  EXPECT(s.failures === 1n && s.lastErrno === errno, `one failure counted, with ${errnoName(errno)}`);
}

const fallback = (what: string, errno: number) =>
  `${what}: falls back to KVM_EXIT_MMIO, counted as a failure with ${errnoName(errno)}, the other region still works`;

TEST_F(onSocket, 'a 16-byte response: EIO, the read falls back to KVM_EXIT_MMIO and completes from the VMM', (r) => {
  const short = new Uint8Array(16);
  __vcpu_run_start(r.vcpu);
  readCommand(r.dev);
  writeAnswer(r.dev, short);
  // Reconnect the run: the vCPU has already fallen back.
  const w = __vcpu_run_wait(r.vcpu);
  TEST_ASSERT(w.ret === 0, 'KVM_RUN after a short response');
  const m = run_mmio(r.vcpu);
  le_store(m.data, 8, 0x99n);
  vcpu_run(r.vcpu);
  const uc = get_ucall(r.vcpu);
  const s = vm_ioregion_stats(r.vm).find((x) => x.guestPaddr === R)!;
  TH_LOG(errnoName(s.lastErrno));
  EXPECT(m.physAddr === R && uc.args[2] === 0x99n && uc.args[3] === 0n && s.lastErrno === EIO, 'the exit at R, 0x99 from the VMM, EIO counted');
});

TEST_F(onSocket, 'a 64-byte SEQPACKET response is garbage: EIO and the ordinary exit', (r) => {
  __vcpu_run_start(r.vcpu);
  readCommand(r.dev);
  writeAnswer(r.dev, new Uint8Array(64).fill(0xee));
  TEST_ASSERT(__vcpu_run_wait(r.vcpu).ret === 0, 'KVM_RUN after a garbage response');
  const s = vm_ioregion_stats(r.vm).find((x) => x.guestPaddr === R)!;
  EXPECT(exit_reason(r.vcpu) === KVM_EXIT_MMIO && s.lastErrno === EIO, `KVM_EXIT_MMIO and EIO, got ${errnoName(s.lastErrno)}`);
  le_store(run_mmio(r.vcpu).data, 8, 1n);
  vcpu_run(r.vcpu);
});

// The device end is closed before the access: the command cannot even be sent.
TEST_F(onSocket, fallback('a device whose socket is closed', EPIPE), (r) => {
  closeQuietly(r.dev);
  expectFallback(r, EPIPE);
});

// Pipes: the command goes out, then EOF on the response pipe (the writer is gone).
TEST_F(onPipes, fallback('EOF on the response pipe', EIO), (r) => expectFallback(r, EIO));

TEST('a device task killed mid-transaction: ECONNRESET, ordinary exit', async () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_two_reads);
  const victim = spawn_device_task({ command: [process.execPath, '-e', 'setInterval(() => {}, 1000)'], vm, regions: [{ guest_paddr: R, memory_size: 8n }] });
  victim.closeChannelFds();
  const good = spawn_device_task({ device: 'testdev', vm, regions: [{ guest_paddr: GOOD, memory_size: 8n }] });
  good.closeChannelFds();
  __vcpu_run_start(vcpu);
  await new Promise((res) => setTimeout(res, 200));
  process.kill(victim.pid, 'SIGKILL');
  const w = __vcpu_run_wait(vcpu);
  const s = vm_ioregion_stats(vm).find((x) => x.guestPaddr === R)!;
  kvm_vm_free(vm);
  await victim.stop();
  await good.stop();
  // It dies with our command unread in its queue, so Linux reports ECONNRESET rather than EOF.
  EXPECT(w.ret === 0 && exit_reason(vcpu) === KVM_EXIT_MMIO && s.lastErrno === ECONNRESET, `ret 0, KVM_EXIT_MMIO, ECONNRESET; got ret ${w.ret}, ${errnoName(s.lastErrno)}`);
});

// O_NONBLOCK lives on the open file description, which the region shares with our fd: set it here.
TEST_F(onSocket, fallback('read_fd made O_NONBLOCK with an idle device (EAGAIN, reported as EINVAL like the RFC)', EINVAL), (r) => {
  setNonBlocking(r.kvmRead, true);
  expectFallback(r, EINVAL);
});

TEST_STEPS(onSocket, [
  ['a device that never answers does not hang the VMM: a kick gets KVM_RUN back (EINTR)', (r) => {
    __vcpu_run_start(r.vcpu);
    readCommand(r.dev);
    msleep(100);
    vcpu_kick(r.vcpu);
    const w = __vcpu_run_wait(r.vcpu);
    return w.ret === -1 && w.errno === EINTR && exit_reason(r.vcpu) === KVM_EXIT_INTR;
  }],
  // Destroying the VM with the access still pending must not hang either.
  ['VM destruction with an interrupted access pending completes', async (r) => {
    const t0 = Date.now();
    await r.close();
    TH_LOG(`${Date.now() - t0} ms`);
    return Date.now() - t0 < 5000;
  }],
]);

TEST_STEPS(withFailureExit, [
  [`opt-in KVM_EXIT_IOREGIONFD_FAILURE (0x${KVM_EXIT_IOREGIONFD_FAILURE.toString(16)}) carries addr, len, direction, user_data and errno`, (r) => {
    closeQuietly(r.dev);
    vcpu_run(r.vcpu);
    const run = r.vcpu.kvmRun;
    const fields = {
      addr: run.getBigUint64(RUN.iofail_addr, true), len: run.getUint32(RUN.iofail_len, true), isWrite: run.getUint8(RUN.iofail_is_write),
      isPio: run.getUint8(RUN.iofail_is_pio), userData: run.getBigUint64(RUN.iofail_user_data, true), errno: run.getInt32(RUN.iofail_errno, true),
    };
    TH_LOG(JSON.stringify(fields, (_, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v)));
    return exit_reason(r.vcpu) === KVM_EXIT_IOREGIONFD_FAILURE && fields.addr === R && fields.len === 8 && fields.isWrite === 0 &&
      fields.isPio === 0 && fields.userData === 0xfa11n && fields.errno === EPIPE;
  }],
  ['the VMM completes the failed read through the failure exit\'s data field', (r) => {
    r.vcpu.kvmRun.setBigUint64(RUN.iofail_data, 0x5an, true);
    vcpu_run(r.vcpu);
    const uc = get_ucall(r.vcpu);
    return uc.cmd === UCALL_SYNC && uc.args[2] === 0x5an && uc.args[3] === 0n;
  }],
]);

// PIO: the same exit, is_pio set; without the capability it is an ordinary KVM_EXIT_IO.
for (const optIn of [true, false]) {
  const name = optIn ? 'a PIO failure exit has is_pio = 1 and the port' : 'without the capability a PIO failure is an ordinary KVM_EXIT_IO';
  TEST(name, () => {
    const [vm, vcpu] = vm_create_with_one_vcpu(guest_pio);
    if (optIn) vm_enable_cap(vm, KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT, 1n);
    const [a, b] = socketpair('seqpacket');
    vm_set_ioregion(vm, { guest_paddr: 0x5000n, memory_size: 4n, user_data: 7n, read_fd: a, write_fd: a, flags: KVM_IOREGION_PIO });
    closeQuietly(b);
    vcpu_run(vcpu);
    const reason = exit_reason(vcpu);
    const io = run_io(vcpu);
    const failure = {
      isPio: vcpu.kvmRun.getUint8(RUN.iofail_is_pio), addr: vcpu.kvmRun.getBigUint64(RUN.iofail_addr, true), len: vcpu.kvmRun.getUint32(RUN.iofail_len, true),
    };
    kvm_vm_free(vm);
    closeQuietly(a);
    if (optIn) EXPECT(reason === KVM_EXIT_IOREGIONFD_FAILURE && failure.isPio === 1 && failure.addr === 0x5000n && failure.len === 4, 'the failure exit for port 0x5000, 4 bytes, is_pio');
    else EXPECT(reason === KVM_EXIT_IO && io.port === 0x5000 && io.size === 4 && io.count === 1, 'KVM_EXIT_IO at port 0x5000, size 4, count 1');
  });
}

if (require.main === module) {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
