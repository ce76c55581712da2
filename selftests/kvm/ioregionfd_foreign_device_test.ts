// ioregionfd_foreign_device_test: a device task that is not ours. devices/echo_device.py is written in
// Python against the documented fd contract and the RFC wire layouts only, and serves a VM unchanged:
// the kvm-unit-tests PIO scenario (out 0x11223344 at 0x1234, in at 0x1238 with 1/2/4 bytes gives
// 0x44, 0x3344, 0x11223344), 8-byte MMIO, posted writes, and the v1/v2 layout, over a seqpacket, a
// stream and a pipe channel; and started with its fds named in argv, its log captured by the VMM.
// Skips when python3 is not installed.

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { KVM_CAP_EMU_IOREGIONFD_WIRE, KVM_CAP_IOREGIONFD, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { EXPECT, EXPECT_EQ, FIXTURE, TEST, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC, inb, inl, inw, outl, readl, readq, writel, writeq } from './lib/guest';
import { DeviceTask, spawn_device_task } from './lib/device_task';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { KvmVcpu, KvmVm, kvm_has_cap, kvm_vm_free, vcpu_run, vm_create_with_one_vcpu, vm_enable_cap } from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const PORT = 0x1234;
/** 16 bytes of MMIO for 8-byte accesses, above guest RAM. */
const MMIO = 0xd000_0000n;
/** 16 bytes of MMIO with posted writes. */
const POSTED = 0xd000_1000n;

/**
 * The Python device. Not compiled by tsc: from dist/selftests/kvm it is ../../../selftests/kvm/devices;
 * run from the sources (ts-node) it sits next to this file.
 */
const ECHO_DEVICE = [
  path.join(__dirname, 'devices', 'echo_device.py'),
  path.resolve(__dirname, '..', '..', '..', 'selftests', 'kvm', 'devices', 'echo_device.py'),
].find((p) => fs.existsSync(p)) ?? path.join(__dirname, 'devices', 'echo_device.py');

function python3_available(): boolean {
  const r = spawnSync('python3', ['-c', 'import sys; sys.exit(0 if sys.version_info >= (3, 5) else 1)'], { stdio: 'ignore', timeout: 10000 });
  return r.status === 0;
}

export function guest_code(): void {
  // kvm-unit-tests: one 64-bit echo value behind port 0x1234..0x123b.
  outl(PORT, 0x11223344);
  GUEST_ASSERT_EQ(inb(PORT + 4), 0x44, 'inb');
  GUEST_ASSERT_EQ(inw(PORT + 4), 0x3344, 'inw');
  GUEST_ASSERT_EQ(inl(PORT + 4), 0x11223344, 'inl');
  GUEST_SYNC(1);
  writeq(MMIO, 0x8877665544332211n);
  GUEST_ASSERT_EQ(readq(MMIO + 8n), 0x8877665544332211n, 'readq after writeq');
  writel(MMIO + 4n, 0xdeadbeefn);
  GUEST_ASSERT_EQ(readq(MMIO), 0x88776655deadbeefn, 'a 4-byte write replaces the low half');
  GUEST_SYNC(2);
  // Two posted writes and a read on the same fd: a reply to a posted write (data 0) would be taken
  // as the read's answer, so the read sees the last write only if the device kept quiet.
  writeq(POSTED, 0x0123456789abcdefn);
  writeq(POSTED + 8n, 0xfedcba9876543210n);
  GUEST_ASSERT_EQ(readq(POSTED), 0xfedcba9876543210n, 'read after posted writes');
  GUEST_ASSERT_EQ(readl(POSTED), 0x76543210n, 'readl after posted writes');
  GUEST_DONE();
}

export function guest_code_v1(): void {
  outl(PORT, 0x11223344);
  GUEST_ASSERT_EQ(inb(PORT + 4), 0x44, 'inb');
  GUEST_ASSERT_EQ(inw(PORT + 4), 0x3344, 'inw');
  GUEST_ASSERT_EQ(inl(PORT + 4), 0x11223344, 'inl');
  GUEST_DONE();
}

/** Run to the next ucall; a guest assertion fails the test with the guest's own message. */
function run_to_ucall(vcpu: KvmVcpu): bigint {
  vcpu_run(vcpu);
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc.cmd;
}

/** A VM running `code` with the Python device, and whether the test already freed the VM. */
interface Rig {
  vm: KvmVm;
  vcpu: KvmVcpu;
  dev: DeviceTask;
  freed: boolean;
}

async function stopped_cleanly(s: Rig): Promise<boolean> {
  kvm_vm_free(s.vm);
  s.freed = true;
  const status = await s.dev.stop();
  return status.code === 0 && status.signal === null;
}

/** PIO over seqpacket, MMIO over a stream socket, posted writes over pipes: one task, three channels. */
const threeChannels = FIXTURE('three_channels', (): Rig => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  const dev = spawn_device_task({
    command: ['python3', ECHO_DEVICE], vm, channels: ['seqpacket', 'stream', 'pipe'],
    regions: [
      { guest_paddr: BigInt(PORT), memory_size: 8n, flags: KVM_IOREGION_PIO, user_data: 1n, channel: 0 },
      { guest_paddr: MMIO, memory_size: 16n, user_data: 2n, channel: 1 },
      { guest_paddr: POSTED, memory_size: 16n, flags: KVM_IOREGION_POSTED_WRITES, user_data: 3n, channel: 2 },
    ],
  });
  dev.closeChannelFds();
  return { vm, vcpu, dev, freed: false };
}, release);

async function release(s: Rig): Promise<void> {
  if (!s.freed) kvm_vm_free(s.vm);
  await s.dev.stop();
}

TEST_STEPS(threeChannels, [
  ['PIO over seqpacket: out 0x11223344 at 0x1234, in at 0x1238 gives 0x44, 0x3344, 0x11223344', ({ vcpu }) => run_to_ucall(vcpu) === UCALL_SYNC],
  ['MMIO over a stream socket: 8-byte writeq/readq and a 4-byte write echo', ({ vcpu }) => run_to_ucall(vcpu) === UCALL_SYNC],
  ['posted writes over pipes: the device sent no response, the next read saw the last write', ({ vcpu }) => run_to_ucall(vcpu) === UCALL_DONE],
  ['every access went to the device, none failed', ({ vm }) => {
    const stats = vm_ioregion_stats(vm);
    const pio = stats.find((s) => s.userData === 1n);
    const mmio = stats.find((s) => s.userData === 2n);
    const posted = stats.find((s) => s.userData === 3n);
    TH_LOG(`reads/writes: pio ${pio?.reads}/${pio?.writes}, mmio ${mmio?.reads}/${mmio?.writes}, posted ${posted?.postedWrites}/${posted?.reads}`);
    return pio?.reads === 3n && pio.writes === 1n && mmio?.reads === 2n && mmio.writes === 2n &&
      posted?.postedWrites === 2n && posted.reads === 2n && stats.every((s) => s.failures === 0n);
  }],
  ['the Python task exits 0 after kvm_vm_free and stop', stopped_cleanly],
]);

/** The same device, told "layout": "v1", on a VM that speaks the v1/v2 layout. */
const v1 = FIXTURE('v1_layout', (): Rig => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code_v1);
  vm_enable_cap(vm, KVM_CAP_EMU_IOREGIONFD_WIRE, 1n);
  const dev = spawn_device_task({
    command: ['python3', ECHO_DEVICE], vm, layout: 'v1',
    regions: [{ guest_paddr: BigInt(PORT), memory_size: 8n, flags: KVM_IOREGION_PIO }],
  });
  dev.closeChannelFds();
  return { vm, vcpu, dev, freed: false };
}, release);

TEST_STEPS(v1, [
  ['with "layout": "v1" the same device speaks the v1/v2 info-word layout', ({ vcpu }) => run_to_ucall(vcpu) === UCALL_DONE],
  ['the v1 task exits 0 too', stopped_cleanly],
]);

// A C or Python author's view: fd numbers in argv instead of parsing the manifest, and the device's
// log captured by the VMM. A shell wrapper logs the fd it was given, then execs the Python device.
TEST('argv fd placeholders and captured stderr: the task is told its cmd_fd in argv and its log reaches the VMM', async () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code_v1);
  const dev = spawn_device_task({
    command: ['/bin/sh', '-c', 'echo "cmd_fd=$1" >&2; exec python3 "$0"', ECHO_DEVICE, '{cmd_fd:0}'], vm, output: 'capture',
    regions: [{ guest_paddr: BigInt(PORT), memory_size: 8n, flags: KVM_IOREGION_PIO }],
  });
  dev.closeChannelFds();
  const s = { vm, vcpu, dev, freed: false };
  try {
    EXPECT(run_to_ucall(vcpu) === UCALL_DONE, 'the guest to finish through the device');
    EXPECT(await stopped_cleanly(s), 'the task to exit 0');
    EXPECT_EQ(dev.output().stderr, `cmd_fd=${dev.manifest.channels[0].cmd_fd}\n`, 'the captured stderr');
  } finally {
    await release(s);
  }
});

if (require.main === module) {
  TEST_REQUIRE(python3_available(), 'python3 (>= 3.5) in PATH, to run devices/echo_device.py');
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  TEST_ASSERT(fs.existsSync(ECHO_DEVICE), `${ECHO_DEVICE} is missing`);
  void test_harness_run();
}
